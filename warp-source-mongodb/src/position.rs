//! Change-stream positions: a resume token, kept as canonical Extended JSON so it goes
//! back to the server byte for byte.

use std::cmp::Ordering;

use bson::Bson;
use mongodb::change_stream::event::ResumeToken;
use serde::{Deserialize, Serialize};
use warp_core::{Error, Position, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub token: serde_json::Value,
    /// The token is the collection's invalidate event (dropped, renamed): the stream
    /// reopens with `startAfter`, which is the only way past an invalidate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_invalidate: bool,
}

impl StreamPosition {
    pub fn new(token: &ResumeToken) -> Result<Self> {
        let bson =
            bson::to_bson(token).map_err(|e| Error::Position(format!("resume token: {e}")))?;
        Ok(Self {
            token: bson.into_canonical_extjson(),
            after_invalidate: false,
        })
    }

    pub fn resume_token(&self) -> Result<ResumeToken> {
        let bson = Bson::try_from(self.token.clone())
            .map_err(|e| Error::Position(format!("resume token {}: {e}", self.token)))?;
        bson::from_bson(bson).map_err(|e| Error::Position(format!("resume token: {e}")))
    }

    pub fn encode(&self) -> Result<Position> {
        Position::encode(&serde_json::json!({ "resume": self })).map(|p| p.with_typed(self.clone()))
    }

    pub fn decode(p: &Position) -> Result<Self> {
        let v = p
            .as_json()
            .get("resume")
            .cloned()
            .ok_or_else(|| Error::Position(format!("not a change-stream position: {p}")))?;
        serde_json::from_value(v).map_err(|e| Error::Position(e.to_string()))
    }

    fn data(&self) -> Result<&str> {
        self.token
            .get("_data")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Error::Position(format!("resume token without _data: {}", self.token)))
    }

    /// Token order. MongoDB's tokens are hex-encoded KeyStrings that sort bytewise in
    /// cluster-time order; servers with counter-style tokens (`prefix:N`) sort naturally.
    pub fn order(&self, other: &Self) -> Result<Ordering> {
        let (a, b) = (self.data()?, other.data()?);
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit());
        Ok(if hex(a) && hex(b) {
            a.to_ascii_uppercase().cmp(&b.to_ascii_uppercase())
        } else {
            natural(a, b)
        })
    }
}

/// Compares digit runs by value and everything else as text.
fn natural(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(&rb) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ra.len().cmp(&rb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(data: &str) -> StreamPosition {
        StreamPosition {
            token: serde_json::json!({ "_data": data }),
            after_invalidate: false,
        }
    }

    #[test]
    fn keystring_tokens_sort_bytewise_and_counters_naturally() {
        let a = pos("8265A1B2C3000000012B022C0100296E5A1004");
        let b = pos("8265A1B2C3000000022B022C0100296E5A1004");
        assert_eq!(a.order(&b).unwrap(), Ordering::Less);
        assert_eq!(pos("nx:9").order(&pos("nx:10")).unwrap(), Ordering::Less);
        assert_eq!(pos("nx:10").order(&pos("nx:10")).unwrap(), Ordering::Equal);
        let bad = StreamPosition {
            token: serde_json::json!({}),
            after_invalidate: false,
        };
        assert!(bad.order(&a).is_err());
    }

    #[test]
    fn positions_round_trip_through_json_and_back_to_a_token() {
        let p = pos("8265A1B2C3000000012B");
        let back = StreamPosition::decode(&p.encode().unwrap()).unwrap();
        assert_eq!(back, p);
        let token = back.resume_token().unwrap();
        assert_eq!(StreamPosition::new(&token).unwrap(), p);
    }
}
