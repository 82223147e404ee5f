//! The `timestamp` polling position shared by every source that polls: rows are read
//! with `change_detection_column >= value`, and rows tied at exactly `value` that were
//! already delivered are skipped by key.

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::StreamFragment;
use crate::position::Position;
use crate::value::{cmp_keys, Key, Value};

/// Where polling is: the highest change-detection value seen, and the keys of the rows
/// already delivered at exactly that value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub value: Option<Value>,
    #[serde(default)]
    pub keys_at: Vec<Key>,
}

impl Watermark {
    pub fn at(value: Option<Value>) -> Self {
        Self {
            value,
            keys_at: Vec::new(),
        }
    }

    pub fn encode(&self) -> Result<Position> {
        Position::encode(&serde_json::json!({ "watermark": self }))
    }

    pub fn decode(p: &Position) -> Result<Self> {
        let w = p
            .as_json()
            .get("watermark")
            .cloned()
            .ok_or_else(|| Error::Position(format!("not a watermark: {p}")))?;
        serde_json::from_value(w).map_err(|e| Error::Position(e.to_string()))
    }

    pub fn order(&self, other: &Self) -> Ordering {
        match (&self.value, &other.value) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => a
                .cmp_key(b)
                .then(self.keys_at.len().cmp(&other.keys_at.len())),
        }
    }

    /// Records a row read at `value` with `key` (rows arrive ordered by value, then key).
    /// Returns `false` for a row tied at the watermark that was already delivered.
    pub fn admit(&mut self, value: &Value, key: &Key) -> bool {
        let same = self
            .value
            .as_ref()
            .is_some_and(|w| w.cmp_key(value) == Ordering::Equal);
        if !same {
            *self = Self {
                value: Some(value.clone()),
                keys_at: vec![key.clone()],
            };
            return true;
        }
        if self
            .keys_at
            .iter()
            .any(|seen| cmp_keys(seen, key) == Ordering::Equal)
        {
            return false;
        }
        self.keys_at.push(key.clone());
        true
    }
}

/// One table's poll: the rows changed since the last poll as one fragment, committed at
/// the new watermark (a heartbeat when nothing changed).
#[async_trait]
pub trait Poll: Send + 'static {
    async fn poll(&mut self) -> Result<StreamFragment>;
}

/// How a polling source reads: every `interval`, at most `rows` rows per query (plus the
/// rows tied at the watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub interval: Duration,
    pub rows: usize,
}

/// The stream of a polling source: a poll now, then one every `interval`, forever (an
/// error is yielded and polling goes on; the engine decides whether to reopen).
pub fn poll_every<P: Poll>(
    poller: P,
    interval: Duration,
) -> BoxStream<'static, Result<StreamFragment>> {
    stream::unfold((poller, true), move |(mut p, first)| async move {
        if !first {
            tokio::time::sleep(interval).await;
        }
        let f = p.poll().await;
        Some((f, (p, false)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_at_the_watermark_are_delivered_once() {
        let mut w = Watermark::at(None);
        assert!(w.admit(&Value::Int(5), &vec![Value::Int(1)]));
        assert!(w.admit(&Value::Int(5), &vec![Value::Int(2)]));
        let saved = Watermark::decode(&w.encode().unwrap()).unwrap();
        let mut again = saved.clone();
        // A later poll reads `>= 5` again: both tied rows are skipped, a new one is not.
        assert!(!again.admit(&Value::Int(5), &vec![Value::Int(1)]));
        assert!(!again.admit(&Value::Int(5), &vec![Value::Int(2)]));
        assert!(again.admit(&Value::Int(5), &vec![Value::Int(3)]));
        assert!(again.admit(&Value::Int(6), &vec![Value::Int(1)]));
        assert_eq!(again.keys_at.len(), 1);
        assert_eq!(again.order(&saved), std::cmp::Ordering::Greater);
    }
}
