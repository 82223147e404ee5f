//! The `timestamp` polling position shared by every source that polls: rows are read
//! with `change_detection_column >= value`, and rows tied at exactly `value` that were
//! already delivered are skipped by key.
//!
//! A snapshot's start and its chunks' positions are taken *before* the newest value
//! (`Watermark::at(top)`, no tied keys) and a chunk copies only rows below it: rows at the
//! newest value or above are left to the polls. A poll yields one fragment per value, so
//! the handover can tell, row by row, what a chunk already holds: a row polled below a
//! chunk's value is in it, a row at or above is not (docs/guarantees.md).

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Change, Commit, StreamFragment};
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

    /// Positions of one table ordered by value; at one value, by the tied keys delivered
    /// (a position holding keys the other lacks is after it, so a handover never treats
    /// a row as copied unless every key delivered with it was).
    pub fn order(&self, other: &Self) -> Ordering {
        match (&self.value, &other.value) {
            (None, None) => self.order_keys(other),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => a.cmp_key(b).then_with(|| self.order_keys(other)),
        }
    }

    fn order_keys(&self, other: &Self) -> Ordering {
        let holds = |w: &Self, k: &Key| w.keys_at.iter().any(|o| cmp_keys(o, k).is_eq());
        if !self.keys_at.iter().all(|k| holds(other, k)) {
            Ordering::Greater
        } else if other.keys_at.iter().all(|k| holds(self, k)) {
            Ordering::Equal
        } else {
            Ordering::Less
        }
    }

    /// Records a row read at `value` with `key` (rows arrive ordered by value, then key).
    /// Returns `false` for a row already delivered: tied at the watermark and seen, or
    /// below it (a server whose range filter is coarser than its values, such as one
    /// comparing dates by the second, returns those again).
    pub fn admit(&mut self, value: &Value, key: &Key) -> bool {
        let order = self.value.as_ref().map(|w| value.cmp_key(w));
        if order == Some(Ordering::Less) {
            return false;
        }
        if order != Some(Ordering::Equal) {
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

/// One table's poll: the rows changed since the last poll, one fragment per value (see
/// [`PollBatch`]), or a heartbeat when nothing changed.
#[async_trait]
pub trait Poll: Send + 'static {
    async fn poll(&mut self) -> Result<Vec<StreamFragment>>;
}

/// Builds one poll's fragments from rows read in (value, key) order: the rows of each
/// value are one fragment, committed at the watermark after them.
pub struct PollBatch {
    at: Watermark,
    open: Vec<Change>,
    fragments: Vec<StreamFragment>,
    read_at: DateTime<Utc>,
}

impl PollBatch {
    pub fn new(at: Watermark) -> Self {
        Self {
            at,
            open: Vec::new(),
            fragments: Vec::new(),
            read_at: Utc::now(),
        }
    }

    /// Records a row read at `value` with `key`; `false` for a row tied at the watermark
    /// that was already delivered (skip it).
    pub fn admit(&mut self, value: &Value, key: &Key) -> Result<bool> {
        let newer = self
            .at
            .value
            .as_ref()
            .is_none_or(|w| value.cmp_key(w).is_gt());
        if newer && !self.open.is_empty() {
            self.close()?;
        }
        Ok(self.at.admit(value, key))
    }

    /// A change of the row admitted last.
    pub fn push(&mut self, change: Change) {
        self.open.push(change);
    }

    fn close(&mut self) -> Result<()> {
        let commit = self.commit()?;
        self.fragments.push(StreamFragment::transaction(
            std::mem::take(&mut self.open),
            commit,
        ));
        Ok(())
    }

    fn commit(&self) -> Result<Commit> {
        Ok(Commit {
            position: self.at.encode()?,
            source_ts: Some(self.read_at),
        })
    }

    /// The new watermark and the poll's fragments (a heartbeat when nothing changed).
    pub fn finish(mut self) -> Result<(Watermark, Vec<StreamFragment>)> {
        if !self.open.is_empty() {
            self.close()?;
        }
        if self.fragments.is_empty() {
            self.fragments
                .push(StreamFragment::heartbeat(self.commit()?));
        }
        Ok((self.at, self.fragments))
    }
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
        let polled = match p.poll().await {
            Ok(fragments) => fragments.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        Some((stream::iter(polled), (p, false)))
    })
    .flatten()
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
        // A row below the watermark was delivered before, whatever the server returned.
        assert!(!again.admit(&Value::Int(4), &vec![Value::Int(9)]));
        assert_eq!(again.value, Some(Value::Int(6)));
        assert_eq!(again.order(&saved), std::cmp::Ordering::Greater);
    }

    fn key(i: i64) -> Key {
        vec![Value::Int(i)]
    }

    #[test]
    fn a_poll_is_one_fragment_per_value() {
        let mut batch = PollBatch::new(Watermark::at(Some(Value::Int(5))));
        for (v, k) in [(5, 1), (5, 2), (7, 1)] {
            assert!(batch.admit(&Value::Int(v), &key(k)).unwrap());
            batch.push(Change::Row(crate::ChangeEvent {
                op: crate::Operation::Update,
                key: key(k),
                before: None,
                after: None,
                source_ts: None,
            }));
        }
        let (at, fragments) = batch.finish().unwrap();
        assert_eq!(at.value, Some(Value::Int(7)));
        let positions: Vec<Watermark> = fragments
            .iter()
            .map(|f| Watermark::decode(&f.commit.as_ref().unwrap().position).unwrap())
            .collect();
        assert_eq!(
            fragments
                .iter()
                .map(|f| f.changes.len())
                .collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(positions[0].value, Some(Value::Int(5)));
        assert_eq!(positions[0].keys_at, [key(1), key(2)]);
        assert_eq!(positions[1].keys_at, [key(1)]);

        let (_, idle) = PollBatch::new(at.clone()).finish().unwrap();
        assert_eq!(idle.len(), 1);
        assert!(idle[0].changes.is_empty(), "nothing new: a heartbeat");
    }

    #[test]
    fn a_chunk_position_holds_only_rows_below_its_value() {
        use std::cmp::Ordering::*;
        let chunk = Watermark::at(Some(Value::Int(5)));
        let polled = |v: i64, keys: &[i64]| Watermark {
            value: Some(Value::Int(v)),
            keys_at: keys.iter().map(|&k| key(k)).collect(),
        };
        assert_eq!(polled(4, &[9]).order(&chunk), Less, "below: copied");
        assert_eq!(polled(5, &[1]).order(&chunk), Greater, "at: left to polls");
        assert_eq!(chunk.order(&polled(5, &[1])), Less);
        // Tied keys are compared as sets, never by count.
        assert_eq!(polled(5, &[1, 3]).order(&polled(5, &[1, 2])), Greater);
        assert_eq!(polled(5, &[1, 2]).order(&polled(5, &[1, 3])), Greater);
        assert_eq!(polled(5, &[1]).order(&polled(5, &[2, 1])), Less);
        assert_eq!(polled(5, &[2, 1]).order(&polled(5, &[1, 2])), Equal);
    }
}
