//! MySQL 8's compressed transactions in front of the MariaDB peer, which cannot write
//! them: a dump proxy rewrites each row transaction of the binlog into one
//! TRANSACTION_PAYLOAD_EVENT (type 40) as MySQL 8.0.20+ writes it with
//! `binlog_transaction_compression=ON` — inner events without position (`log_pos` 0) or
//! checksum, starting with a `BEGIN` query, zstd-compressed, the payload ending where the
//! real transaction ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mysql_common::binlog::consts::TransactionPayloadCompressionType;
use mysql_common::binlog::events::{QueryEvent, TransactionPayloadEvent};
use mysql_common::proto::MySerialize;

use super::dump_proxy::{
    self, event_type, header, Rewrite, HEARTBEAT, MARIADB_ANNOTATE_ROWS, MARIADB_GTID, QUERY_EVENT,
    ROTATE, XID_EVENT,
};

const TRANSACTION_PAYLOAD: u8 = 40;

/// An event as it sits inside a payload: no checksum, no position.
fn inner(event: &[u8]) -> Vec<u8> {
    let body = &event[..event.len() - 4];
    let mut out = header(
        event_type(event),
        dump_proxy::timestamp(event),
        dump_proxy::server_id(event),
        body.len(),
        0,
    );
    out.extend(&body[dump_proxy::HEADER..]);
    out
}

/// The transaction `events` (MariaDB's, each with its CRC32) as MySQL 8 writes it
/// compressed: `BEGIN`, the table maps, rows and XID inside one payload event that ends
/// where the XID ended. `corrupt` spoils the compressed bytes.
fn compressed(events: &[Vec<u8>], corrupt: bool) -> Vec<u8> {
    let last = events.last().unwrap();
    let (timestamp, server_id) = (dump_proxy::timestamp(last), dump_proxy::server_id(last));
    let mut begin_body = Vec::new();
    QueryEvent::new(Vec::new(), Vec::new())
        .with_query(b"BEGIN".to_vec())
        .serialize(&mut begin_body);
    let mut plain = header(
        QUERY_EVENT,
        timestamp,
        server_id,
        dump_proxy::HEADER + begin_body.len(),
        0,
    );
    plain.extend(begin_body);
    for e in events
        .iter()
        .filter(|e| event_type(e) != MARIADB_ANNOTATE_ROWS)
    {
        plain.extend(inner(e));
    }
    let mut packed = zstd::encode_all(&plain[..], 3).unwrap();
    if corrupt {
        packed.iter_mut().skip(4).for_each(|b| *b ^= 0x5a);
    }
    let mut body = Vec::new();
    TransactionPayloadEvent::new(
        packed.len() as u64,
        TransactionPayloadCompressionType::ZSTD,
        plain.len() as u64,
        packed,
    )
    .serialize(&mut body);
    dump_proxy::event_like(last, TRANSACTION_PAYLOAD, &body)
}

/// Rewrites the dump's row transactions as they pass.
#[derive(Default)]
struct Rewriter {
    held: Option<Vec<Vec<u8>>>,
    corrupt: bool,
    /// Payload events sent so far (by every connection of the proxy).
    sent: Arc<AtomicUsize>,
}

impl Rewrite for Rewriter {
    fn event(&mut self, event: Vec<u8>) -> Vec<Vec<u8>> {
        let ty = event_type(&event);
        if ty == MARIADB_GTID {
            let mut out = self.held.take().unwrap_or_default();
            out.push(event);
            self.held = Some(Vec::new());
            return out;
        }
        let Some(held) = self.held.as_mut() else {
            return vec![event];
        };
        match ty {
            XID_EVENT => {
                held.push(event);
                let events = self.held.take().unwrap_or_default();
                self.sent.fetch_add(1, Ordering::SeqCst);
                vec![compressed(&events, self.corrupt)]
            }
            // DDL (a query right after the GTID), heartbeats, rotation: as they are.
            QUERY_EVENT | HEARTBEAT | ROTATE => {
                let mut out = self.held.take().unwrap_or_default();
                out.push(event);
                out
            }
            _ => {
                held.push(event);
                Vec::new()
            }
        }
    }
}

/// A proxy to `upstream` rewriting binlog dumps, with the count of payload events it
/// has sent; `corrupt` spoils the payloads.
pub async fn proxy(upstream: String, corrupt: bool) -> (u16, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sent);
    let port = dump_proxy::start(upstream, move || Rewriter {
        corrupt,
        sent: Arc::clone(&counted),
        ..Rewriter::default()
    })
    .await;
    (port, sent)
}
