//! The `timestamp` polling position shared by every source that polls: rows are read in
//! (`change_detection_column`, key) order after the last row delivered — keyset paging,
//! so however many rows share one column value (a batch load, a dbt run) each query, the
//! memory it takes and the stored position stay bounded.
//!
//! A snapshot's start and its chunks' positions are taken *before* the newest value
//! (`Watermark::at(top)`, no key) and a chunk copies only rows below it: rows at the
//! newest value or above are left to the polls. A poll yields one fragment per value, so
//! the handover can tell, row by row, what a chunk already holds: a row polled below a
//! chunk's value is in it, a row at or above is not (docs/guarantees.md).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Change, Commit, StreamFragment};
use crate::position::Position;
use crate::value::{cmp_keys, Key, Value};

/// Where polling is: the highest change-detection value delivered, and the key of the
/// last row delivered at exactly that value (none for a position taken before any row
/// at it, such as a snapshot's start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct Watermark {
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Key>,
    /// Keys this process delivered at `value`, for sources that read the rows at the
    /// watermark's value again each poll ([`Watermark::ties_again`]) so a later write
    /// with the same value and a smaller key is not missed. Not stored: after a restart
    /// those rows are delivered once more (upserts of the same images). Held as each
    /// key's JSON, so checking a row is one lookup however many rows tie.
    #[serde(skip)]
    pub seen_at: HashSet<String>,
    /// Whether `seen_at` is kept (set by those sources; keyset-only sources leave it off).
    #[serde(skip)]
    pub reread_ties: bool,
}

/// A stored watermark, as this version writes it or as earlier versions did: every key
/// delivered at the value (`keys_at`). Rows were read in key order, so the greatest of
/// them is where keyset paging goes on.
#[derive(Deserialize)]
struct Stored {
    value: Option<Value>,
    #[serde(default)]
    after: Option<Key>,
    #[serde(default)]
    keys_at: Vec<Key>,
}

impl From<Stored> for Watermark {
    fn from(s: Stored) -> Self {
        let after = s
            .after
            .or_else(|| s.keys_at.into_iter().max_by(|a, b| cmp_keys(a, b)));
        Self {
            value: s.value,
            after,
            seen_at: HashSet::new(),
            reread_ties: false,
        }
    }
}

/// A row's place in polling order, or a position's.
fn cmp_after(a: &Option<Key>, b: &Option<Key>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => cmp_keys(a, b),
    }
}

impl Watermark {
    pub fn at(value: Option<Value>) -> Self {
        Self {
            value,
            after: None,
            seen_at: HashSet::new(),
            reread_ties: false,
        }
    }

    /// The condition for a poll that reads the watermark's value again (`column >= w`,
    /// skipping the ties seen in memory), for sources where a later write can share the
    /// value of an earlier one (MySQL, MongoDB: a timestamp set by the writer). `None`
    /// before any value. Ask for [`Watermark::seen_at`]`.len()` more rows.
    pub fn ties_again(&self, column: &str, bind: impl FnOnce(&Value) -> String) -> Option<String> {
        let w = self.value.as_ref()?;
        Some(format!("{column} >= {}", bind(w)))
    }

    pub fn encode(&self) -> Result<Position> {
        // Kept as it reads back: without the tie keys (not stored, and possibly many),
        // which ordering does not look at.
        let stored = Self {
            value: self.value.clone(),
            after: self.after.clone(),
            seen_at: HashSet::new(),
            reread_ties: false,
        };
        Position::encode(&serde_json::json!({ "watermark": self })).map(|p| p.with_typed(stored))
    }

    /// The order of two watermark positions, each decoded at most once.
    pub fn compare(a: &Position, b: &Position) -> Result<std::cmp::Ordering> {
        Ok(a.typed(Self::decode)?.order(&*b.typed(Self::decode)?))
    }

    pub fn decode(p: &Position) -> Result<Self> {
        let w = p
            .as_json()
            .get("watermark")
            .cloned()
            .ok_or_else(|| Error::Position(format!("not a watermark: {p}")))?;
        serde_json::from_value(w).map_err(|e| Error::Position(e.to_string()))
    }

    /// Positions of one table ordered by value, then by the key delivered last at it (a
    /// position without one — a chunk's — is before every row at its value).
    pub fn order(&self, other: &Self) -> Ordering {
        match (&self.value, &other.value) {
            (None, None) => cmp_after(&self.after, &other.after),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => a
                .cmp_key(b)
                .then_with(|| cmp_after(&self.after, &other.after)),
        }
    }

    /// Records a row read at `value` with `key`. The query already asked for rows after
    /// this position, in the server's own key order (which, for text under a collation,
    /// need not be ours), so at the same value only the boundary row itself is refused;
    /// a row below the value was delivered before (a server whose range filter is coarser
    /// than its values, such as one comparing dates by the second, returns those again).
    pub fn admit(&mut self, value: &Value, key: &Key) -> bool {
        let order = self.value.as_ref().map(|w| value.cmp_key(w));
        let same = |k: &Key| cmp_keys(k, key).is_eq();
        // Ties are only remembered while they are read again. A table's keys come typed
        // alike from its source, so equal keys have equal JSON.
        let id = self
            .reread_ties
            .then(|| serde_json::to_string(key).unwrap_or_default());
        let delivered = match order {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => {
                self.after.as_ref().is_some_and(same)
                    || id.as_ref().is_some_and(|id| self.seen_at.contains(id))
            }
            _ => false,
        };
        if delivered {
            return false;
        }
        if order != Some(Ordering::Equal) {
            self.seen_at.clear();
        }
        if let Some(id) = id {
            self.seen_at.insert(id);
        }
        self.value = Some(value.clone());
        self.after = Some(key.clone());
        true
    }

    /// The query condition for "after this position" over `(column, key…)`, in SQL with
    /// each value bound through `bind` (which returns its placeholder): `column >= w` for
    /// a position without a key, else the row-value comparison `(column, k…) > (w, a…)`
    /// spelt out, as not every SQL dialect has row values. `None` before any value.
    pub fn sql_after(
        &self,
        column: &str,
        key: &[String],
        mut bind: impl FnMut(&Value) -> String,
    ) -> Option<String> {
        let w = self.value.as_ref()?;
        let Some(after) = &self.after else {
            return Some(format!("{column} >= {}", bind(w)));
        };
        let mut names = vec![column];
        names.extend(key.iter().map(String::as_str));
        let mut values = vec![w];
        values.extend(after.iter());
        let sql = row_after(&names, &values, &mut bind);
        Some(format!("({sql})"))
    }
}

/// `(n…) > (v…)` spelt out, placeholders bound in the order they appear in the text.
fn row_after(names: &[&str], values: &[&Value], bind: &mut impl FnMut(&Value) -> String) -> String {
    let n = names[0];
    let gt = bind(values[0]);
    if names.len() == 1 {
        return format!("{n} > {gt}");
    }
    let eq = bind(values[0]);
    let rest = row_after(&names[1..], &values[1..], bind);
    format!("{n} > {gt} OR ({n} = {eq} AND ({rest}))")
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

    /// Records a row read at `value` with `key`; `false` for a row already delivered
    /// (skip it).
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

    /// A change of a row read again below the watermark that was not delivered before (a
    /// late commit found by a source's lookback): it commits with the rows around it,
    /// and the watermark does not move for it.
    pub fn late(&mut self, change: Change) {
        self.open.push(change);
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

/// How a polling source reads: every `interval`, at most `rows` rows per query.
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

    fn key(i: i64) -> Key {
        vec![Value::Int(i)]
    }

    #[test]
    fn a_poll_goes_on_after_the_last_row_delivered() {
        let mut w = Watermark::at(None);
        assert!(w.admit(&Value::Int(5), &key(1)));
        assert!(w.admit(&Value::Int(5), &key(2)));
        let saved = Watermark::decode(&w.encode().unwrap()).unwrap();
        assert_eq!(saved.after, Some(key(2)), "one key, however many ties");
        let mut again = saved.clone();
        // A server that returns the boundary row again: it is not delivered twice.
        assert!(!again.admit(&Value::Int(5), &key(2)));
        assert!(again.admit(&Value::Int(5), &key(3)));
        assert!(again.admit(&Value::Int(6), &key(1)));
        // A row below the watermark was delivered before, whatever the server returned.
        assert!(!again.admit(&Value::Int(4), &key(9)));
        assert_eq!(again.value, Some(Value::Int(6)));
        assert_eq!(again.order(&saved), Ordering::Greater);
    }

    /// A source that reads the watermark's value again: a later write at that value with
    /// a smaller key is delivered, the ties delivered before are not.
    #[test]
    fn ties_read_again_are_delivered_once_and_a_late_smaller_key_is_not_lost() {
        let mut w = Watermark::at(Some(Value::Int(5)));
        w.reread_ties = true;
        assert!(w.admit(&Value::Int(5), &key(3)));
        assert!(w.admit(&Value::Int(5), &key(9)));
        // The next poll reads `>= 5` again: 3 and 9 are known, 1 came later.
        assert!(w.admit(&Value::Int(5), &key(1)));
        assert!(!w.admit(&Value::Int(5), &key(3)));
        assert!(!w.admit(&Value::Int(5), &key(9)));
        assert_eq!(w.seen_at.len(), 3);
        assert!(w.admit(&Value::Int(6), &key(2)));
        let only_2 = HashSet::from([serde_json::to_string(&key(2)).unwrap()]);
        assert_eq!(w.seen_at, only_2, "a new value forgets the old ties");
        let stored = Watermark::decode(&w.encode().unwrap()).unwrap();
        assert!(stored.seen_at.is_empty(), "not stored: {stored:?}");
    }

    #[test]
    fn at_one_value_the_servers_key_order_is_trusted() {
        // Under a case-insensitive collation `B` follows `a`; byte-wise it does not.
        let text = |s: &str| vec![Value::Text(s.into())];
        let mut w = Watermark::at(Some(Value::Int(5)));
        assert!(w.admit(&Value::Int(5), &text("a")));
        assert!(
            w.admit(&Value::Int(5), &text("B")),
            "not taken for delivered"
        );
    }

    #[test]
    fn positions_stored_with_every_tied_key_go_on_after_the_greatest() {
        let stored = Position::encode(&serde_json::json!({ "watermark": {
            "value": Value::Int(5),
            "keys_at": [key(3), key(1), key(2)],
        }}))
        .unwrap();
        let w = Watermark::decode(&stored).unwrap();
        assert_eq!(w.after, Some(key(3)));
        assert!(!w.encode().unwrap().to_string().contains("keys_at"));
        let mut tied = w.clone();
        tied.seen_at.insert("[3]".into());
        let typed = tied.encode().unwrap().typed(Watermark::decode).unwrap();
        assert!(
            typed.seen_at.is_empty(),
            "the typed reading is what decoding gives"
        );
        assert_eq!(typed.after, Some(key(3)));
    }

    #[test]
    fn the_condition_is_the_row_value_comparison_spelt_out() {
        let sql = |w: &Watermark| {
            let mut bound = Vec::new();
            let text = w.sql_after("c", &["k1".into(), "k2".into()], |v| {
                bound.push(v.clone());
                format!("${}", bound.len())
            });
            (text, bound)
        };
        assert_eq!(sql(&Watermark::at(None)).0, None);
        let (start, bound) = sql(&Watermark::at(Some(Value::Int(5))));
        assert_eq!(start.as_deref(), Some("c >= $1"));
        assert_eq!(bound, [Value::Int(5)]);
        let at = Watermark {
            value: Some(Value::Int(5)),
            after: Some(vec![Value::Int(1), Value::Int(2)]),
            seen_at: HashSet::new(),
            reread_ties: false,
        };
        let (after, bound) = sql(&at);
        assert_eq!(
            after.as_deref(),
            Some("(c > $1 OR (c = $2 AND (k1 > $3 OR (k1 = $4 AND (k2 > $5)))))")
        );
        assert_eq!(
            bound,
            [5, 5, 1, 1, 2].map(Value::Int),
            "bound in the order the placeholders appear"
        );
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
        assert_eq!(positions[0].after, Some(key(2)));
        assert_eq!(positions[1].after, Some(key(1)));

        let (_, idle) = PollBatch::new(at.clone()).finish().unwrap();
        assert_eq!(idle.len(), 1);
        assert!(idle[0].changes.is_empty(), "nothing new: a heartbeat");
    }

    #[test]
    fn a_chunk_position_holds_only_rows_below_its_value() {
        use std::cmp::Ordering::*;
        let chunk = Watermark::at(Some(Value::Int(5)));
        let polled = |v: i64, k: i64| Watermark {
            value: Some(Value::Int(v)),
            after: Some(key(k)),
            seen_at: HashSet::new(),
            reread_ties: false,
        };
        assert_eq!(polled(4, 9).order(&chunk), Less, "below: copied");
        assert_eq!(polled(5, 1).order(&chunk), Greater, "at: left to polls");
        assert_eq!(chunk.order(&polled(5, 1)), Less);
        assert_eq!(polled(5, 3).order(&polled(5, 2)), Greater);
        assert_eq!(polled(5, 2).order(&polled(5, 2)), Equal);
    }
}
