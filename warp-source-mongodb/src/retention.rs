//! What the replica set's oplog still holds, seen from the oldest resume token a
//! deployment needs (docs/operations.md, "Log retention"). The oplog is capped by size
//! (and, since 4.4, optionally by `oplogMinRetentionHours`), so its window is the time
//! between its first entry and the token's cluster time.

use bson::{doc, Document, Timestamp};
use mongodb::Client;
use warp_core::LogRetention;

use crate::error::{Context, Result};
use crate::position::StreamPosition;

/// The oplog's first entry, or `None` where there is none to read (a standalone server)
/// or the user may not read `local`: retention is then unknown. Other errors are errors.
pub async fn oplog_start(client: &Client) -> Result<Option<Timestamp>> {
    let first = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "ts": 1 })
        .await;
    match first {
        Ok(d) => Ok(d.and_then(|d| d.get_timestamp("ts").ok())),
        // A user without read access to `local` (code 13, Unauthorized); a standalone
        // server has no oplog and answers nothing.
        Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 13) => {
            Ok(None)
        }
        Err(e) => Err(e).context("read the oplog's first entry"),
    }
}

/// The cluster time a resume token was taken at: MongoDB's tokens are hex KeyStrings
/// that begin with the event's cluster time (type byte 130, then seconds and increment,
/// big-endian). `None` for other tokens.
pub fn cluster_time(token: &StreamPosition) -> Option<Timestamp> {
    let data = token.token.get("_data")?.as_str()?;
    if data.len() < 18 || !data[..2].eq_ignore_ascii_case("82") {
        return None;
    }
    let bytes = u64::from_str_radix(&data[2..18], 16).ok()?;
    Some(Timestamp {
        time: u32::try_from(bytes >> 32).ok()?,
        increment: u32::try_from(bytes & 0xFFFF_FFFF).ok()?,
    })
}

/// The retention seen from a token taken at `needed`, for an oplog starting at `start`.
pub fn assess(needed: Timestamp, start: Timestamp) -> LogRetention {
    let key = |t: Timestamp| (t.time, t.increment);
    let when = |t: Timestamp| {
        chrono::DateTime::from_timestamp(i64::from(t.time), 0)
            .map_or_else(|| t.time.to_string(), |at| at.to_rfc3339())
    };
    LogRetention {
        held: key(needed) >= key(start),
        needed: format!("cluster time {} ({})", when(needed), needed.increment),
        oldest_retained: format!("oplog from {}", when(start)),
        retention_seconds: None,
        older_seconds: Some(f64::from(needed.time) - f64::from(start.time)),
        backlog_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_cluster_time_is_read_from_its_key_string() {
        // A real server's token: 82, then 0x65A1B2C3 seconds, increment 1.
        let token = StreamPosition {
            token: serde_json::json!({ "_data": "8265A1B2C3000000012B022C0100296E5A1004" }),
            after_invalidate: false,
        };
        let t = cluster_time(&token).unwrap();
        assert_eq!((t.time, t.increment), (0x65A1_B2C3, 1));
        let counter = StreamPosition {
            token: serde_json::json!({ "_data": "emulator:42" }),
            after_invalidate: false,
        };
        assert_eq!(cluster_time(&counter), None);
    }

    #[test]
    fn a_token_older_than_the_oplog_is_lost() {
        let at = |time| Timestamp { time, increment: 1 };
        let r = assess(at(1_000), at(400));
        assert!(r.held);
        assert_eq!(r.older_seconds, Some(600.0));
        assert!(!assess(at(399), at(400)).held);
    }
}
