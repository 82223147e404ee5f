//! Change events and the units a source streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::position::Position;
use crate::schema::SchemaChange;
use crate::value::{Key, Row, Value};

/// What happened to a row; the letter is what lands in `_cartridge_op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Copied by a snapshot.
    Read,
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn code(self) -> char {
        match self {
            Self::Read => 'r',
            Self::Insert => 'c',
            Self::Update => 'u',
            Self::Delete => 'd',
        }
    }

    /// Label for `cartridge_warp_events_total{operation}`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Read => "snapshot",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One row change. `key` is the row's key *before* the change for updates and deletes
/// (so a key-changing update can be split by the engine), after it for inserts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub op: Operation,
    pub key: Key,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// Commit time at the source (lands in `_cartridge_source_ts`).
    pub source_ts: Option<DateTime<Utc>>,
}

impl ChangeEvent {
    pub fn approx_size(&self) -> usize {
        self.before.as_ref().map_or(0, Row::approx_size)
            + self.after.as_ref().map_or(0, Row::approx_size)
            + 64
    }
}

/// One item of a table's change stream, in source order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    Row(ChangeEvent),
    Schema(SchemaChange),
    /// The source truncated the table.
    Truncate,
    /// The source database changed this table's rows itself, for a foreign key, when a
    /// parent row was deleted or its key changed; no row event of its own records it.
    Cascade(Cascade),
}

impl Change {
    pub fn approx_size(&self) -> usize {
        match self {
            Self::Row(e) => e.approx_size(),
            Self::Schema(_) | Self::Truncate | Self::Cascade(_) => 256,
        }
    }
}

/// A foreign-key action on the rows of this table that reference one parent row: the rows
/// whose `columns` hold `matching` (the parent's old values of the columns they reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cascade {
    /// The constraint's name, for logs and errors.
    pub constraint: String,
    /// The referencing columns, by name.
    pub columns: Vec<String>,
    pub matching: Vec<Value>,
    pub action: CascadeAction,
    /// For a table that references itself: the columns its rows are referenced by. A
    /// deleted row's own children are then deleted too, level after level.
    pub recursive_on: Option<Vec<String>>,
    /// The tables between the parent and this one when the action reaches it through
    /// others (a chain), parent side first: `matching` then selects rows of the first,
    /// and this table's rows are those referencing the rows selected in the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<Hop>,
    pub source_ts: Option<DateTime<Utc>>,
}

impl Cascade {
    /// Whether it reaches this table through other tables.
    pub fn is_chained(&self) -> bool {
        !self.via.is_empty()
    }
}

/// A table in the middle of a chain of foreign-key actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// Its source name.
    pub table: String,
    /// Where it lands (destination schema, table), set by the engine.
    #[serde(default)]
    pub landed: Option<(String, String)>,
    /// Its columns that reference the level before it, and their types.
    pub columns: Vec<String>,
    #[serde(default)]
    pub types: Vec<crate::schema::ColumnType>,
    /// Its columns the level after it references.
    pub referenced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CascadeAction {
    /// `ON DELETE CASCADE`: the rows are deleted (soft or hard, per the table).
    Delete,
    /// `ON DELETE SET NULL` / `ON UPDATE SET NULL`: the referencing columns become null.
    SetNull,
    /// `ON UPDATE CASCADE`: the referencing columns take the parent's new values.
    Set(Vec<Value>),
}

/// The end of a source transaction: where the stream resumes after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub position: Position,
    pub source_ts: Option<DateTime<Utc>>,
}

/// What a source stream yields. A large source transaction may arrive as several
/// fragments; only the last carries `commit`, and the engine never commits the
/// destination between fragments of one source transaction. A fragment with no
/// changes and a commit is a heartbeat: it advances the position of an idle table.
///
/// Every change of a transaction shares the transaction's commit position, so the
/// position lives here rather than on each event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamFragment {
    pub changes: Vec<Change>,
    pub commit: Option<Commit>,
}

impl StreamFragment {
    pub fn transaction(changes: Vec<Change>, commit: Commit) -> Self {
        Self {
            changes,
            commit: Some(commit),
        }
    }

    pub fn heartbeat(commit: Commit) -> Self {
        Self {
            changes: Vec::new(),
            commit: Some(commit),
        }
    }
}

/// One change of a shared feed, for the table at `table` in the list the feed was opened
/// with.
#[derive(Debug, Clone, PartialEq)]
pub struct TableChange {
    pub table: usize,
    pub change: Change,
}

/// What a source's shared change feed yields ([`crate::Source::open_feed`]).
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// A source transaction (or, for a large one, a part of it: only the last part carries
    /// `commit`) with the changes of every table of the feed, in log order. A fragment
    /// with no changes and a commit is a heartbeat for every table.
    Fragment {
        changes: Vec<TableChange>,
        commit: Option<Commit>,
    },
    /// One table of the feed can no longer be followed (dropped or renamed at the source,
    /// an unreadable event): it stops with `error`; the feed goes on for the others and
    /// yields nothing more for it.
    TableFailed { table: usize, error: crate::Error },
}
