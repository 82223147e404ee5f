//! A destination batch: row changes coalesced per key, split at schema changes so
//! DDL and rows keep their order.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::event::{Change, ChangeEvent, Operation};
use crate::value::{cmp_keys, Key};

/// A key ordered by [`cmp_keys`], so keys can index a `BTreeMap`.
#[derive(Debug, Clone)]
pub struct OrdKey(pub Key);

impl PartialEq for OrdKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for OrdKey {}
impl PartialOrd for OrdKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_keys(&self.0, &other.0)
    }
}

#[derive(Debug)]
enum Segment {
    Rows(BTreeMap<OrdKey, ChangeEvent>),
    Barrier(Change),
}

/// Changes waiting for the next destination write.
#[derive(Debug)]
pub struct Batch {
    key_columns: Vec<usize>,
    segments: Vec<Segment>,
    /// Changes pushed (before coalescing): what batch-size limits count.
    changes: usize,
    bytes: usize,
}

impl Batch {
    pub fn new(key_columns: Vec<usize>) -> Self {
        Self {
            key_columns,
            segments: Vec::new(),
            changes: 0,
            bytes: 0,
        }
    }

    pub fn set_key_columns(&mut self, key_columns: Vec<usize>) {
        self.key_columns = key_columns;
    }

    pub fn len(&self) -> usize {
        self.changes
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, change: Change) {
        self.changes += 1;
        self.bytes += change.approx_size();
        match change {
            Change::Row(event) => {
                for e in split_key_change(event, &self.key_columns) {
                    self.push_row(e);
                }
            }
            other => self.segments.push(Segment::Barrier(other)),
        }
    }

    fn push_row(&mut self, event: ChangeEvent) {
        if !matches!(self.segments.last(), Some(Segment::Rows(_))) {
            self.segments.push(Segment::Rows(BTreeMap::new()));
        }
        let Some(Segment::Rows(rows)) = self.segments.last_mut() else {
            unreachable!("a rows segment was just ensured");
        };
        let key = OrdKey(event.key.clone());
        match rows.remove(&key) {
            Some(prev) => {
                rows.insert(key, merge(prev, event));
            }
            None => {
                rows.insert(key, event);
            }
        }
    }

    /// Takes the coalesced changes out, in order, leaving the batch empty.
    pub fn take(&mut self) -> Vec<Change> {
        self.changes = 0;
        self.bytes = 0;
        let mut out = Vec::new();
        for seg in self.segments.drain(..) {
            match seg {
                Segment::Rows(rows) => out.extend(rows.into_values().map(Change::Row)),
                Segment::Barrier(c) => out.push(c),
            }
        }
        out
    }
}

/// An update that changes the key becomes a delete of the old key and an insert of the
/// new one, so per-key coalescing (and snapshot handover) stay correct.
pub fn split_key_change(event: ChangeEvent, key_columns: &[usize]) -> Vec<ChangeEvent> {
    if event.op != Operation::Update {
        return vec![event];
    }
    let Some(after) = &event.after else {
        return vec![event];
    };
    let new_key = after.key(key_columns);
    if cmp_keys(&new_key, &event.key) == Ordering::Equal {
        return vec![event];
    }
    let delete = ChangeEvent {
        op: Operation::Delete,
        key: event.key,
        before: event.before,
        after: None,
        source_ts: event.source_ts,
    };
    let insert = ChangeEvent {
        op: Operation::Insert,
        key: new_key,
        before: None,
        after: event.after,
        source_ts: event.source_ts,
    };
    vec![delete, insert]
}

/// Two changes to one key in one batch. The later one decides the outcome; a delete
/// keeps the last known image (so a soft delete can still write a tombstone).
fn merge(prev: ChangeEvent, next: ChangeEvent) -> ChangeEvent {
    let before = next.before.or(match next.op {
        Operation::Delete => prev.after.or(prev.before),
        _ => prev.before,
    });
    ChangeEvent { before, ..next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, ColumnType, SchemaChange};
    use crate::value::{Row, Value};

    fn row(id: i64, v: &str) -> Row {
        Row::new(vec![Value::Int(id), Value::Text(v.into())])
    }

    fn ev(op: Operation, id: i64, before: Option<Row>, after: Option<Row>) -> Change {
        Change::Row(ChangeEvent {
            op,
            key: vec![Value::Int(id)],
            before,
            after,
            source_ts: None,
        })
    }

    fn rows(changes: &[Change]) -> Vec<(Operation, Key, Option<Row>, Option<Row>)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Row(e) => Some((e.op, e.key.clone(), e.before.clone(), e.after.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn last_change_per_key_wins() {
        let mut b = Batch::new(vec![0]);
        b.push(ev(Operation::Insert, 1, None, Some(row(1, "a"))));
        b.push(ev(
            Operation::Update,
            1,
            Some(row(1, "a")),
            Some(row(1, "b")),
        ));
        b.push(ev(Operation::Insert, 2, None, Some(row(2, "x"))));
        b.push(ev(
            Operation::Update,
            1,
            Some(row(1, "b")),
            Some(row(1, "c")),
        ));
        assert_eq!(b.len(), 4);
        let out = rows(&b.take());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, Operation::Update);
        assert_eq!(out[0].3, Some(row(1, "c")));
        assert_eq!(out[1].3, Some(row(2, "x")));
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn delete_after_insert_keeps_last_image() {
        let mut b = Batch::new(vec![0]);
        b.push(ev(Operation::Insert, 1, None, Some(row(1, "a"))));
        b.push(ev(Operation::Delete, 1, None, None));
        let out = rows(&b.take());
        assert_eq!(
            out,
            vec![(
                Operation::Delete,
                vec![Value::Int(1)],
                Some(row(1, "a")),
                None
            )]
        );
    }

    #[test]
    fn reinsert_after_delete_revives() {
        let mut b = Batch::new(vec![0]);
        b.push(ev(Operation::Delete, 1, Some(row(1, "a")), None));
        b.push(ev(Operation::Insert, 1, None, Some(row(1, "z"))));
        let out = rows(&b.take());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Operation::Insert);
        assert_eq!(out[0].3, Some(row(1, "z")));
    }

    #[test]
    fn key_changing_update_is_split() {
        let mut b = Batch::new(vec![0]);
        b.push(ev(
            Operation::Update,
            1,
            Some(row(1, "a")),
            Some(row(5, "a")),
        ));
        let out = rows(&b.take());
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].0, &out[0].1),
            (Operation::Delete, &vec![Value::Int(1)])
        );
        assert_eq!(
            (out[1].0, &out[1].1),
            (Operation::Insert, &vec![Value::Int(5)])
        );
    }

    #[test]
    fn schema_changes_are_barriers() {
        let mut b = Batch::new(vec![0]);
        b.push(ev(Operation::Insert, 1, None, Some(row(1, "a"))));
        let add = Change::Schema(SchemaChange::AddColumn(Column::new("c", ColumnType::Int64)));
        b.push(add.clone());
        b.push(ev(Operation::Update, 1, None, Some(row(1, "b"))));
        let out = b.take();
        assert_eq!(
            out.len(),
            3,
            "a change after DDL must not merge into one before it"
        );
        assert_eq!(out[1], add);
    }
}
