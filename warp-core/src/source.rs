//! The `Source` trait: what a connector must offer the engine.

use std::cmp::Ordering;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{FeedItem, StreamFragment};
use crate::position::Position;
use crate::read_settings::{FeedTable, ReadSettings, TableReads};
use crate::schema::{SchemaChange, TableId, TableSchema};
use crate::value::{cmp_keys, Key, Row, Value};

/// A primary-key range: `start` inclusive, `end` exclusive, `None` unbounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Option<Key>,
    pub end: Option<Key>,
}

impl KeyRange {
    pub const ALL: Self = Self {
        start: None,
        end: None,
    };

    /// Consecutive ranges split at `bounds` (ascending): `(-∞, b0)`, `[b0, b1)`, …, `[bn, +∞)`.
    pub fn split_at(bounds: Vec<Key>) -> Vec<KeyRange> {
        let mut chunks = Vec::with_capacity(bounds.len() + 1);
        let mut start = None;
        for b in bounds {
            chunks.push(KeyRange {
                start,
                end: Some(b.clone()),
            });
            start = Some(b);
        }
        chunks.push(KeyRange { start, end: None });
        chunks
    }

    pub fn contains(&self, key: &[Value]) -> bool {
        self.start
            .as_deref()
            .is_none_or(|s| cmp_keys(key, s) != Ordering::Less)
            && self
                .end
                .as_deref()
                .is_none_or(|e| cmp_keys(key, e) == Ordering::Less)
    }
}

/// How a table's snapshot is split, and where its stream starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    /// Position taken before (or inside the consistent snapshot of) the copy: the stream
    /// resumes here, so nothing written during the copy is lost.
    pub start: Position,
    /// Chunks in key order; together they cover every key exactly once.
    pub chunks: Vec<KeyRange>,
}

/// One chunk being read.
pub struct ChunkRead {
    /// The position this chunk's rows reflect: every change at or before it is already
    /// in the rows. Sources with an exact snapshot position return it; others return a
    /// position taken just before the read (changes after it replay idempotently).
    pub position: Position,
    /// Pages of at most `stream_batch_size` rows (or the source's own page size).
    pub rows: BoxStream<'static, Result<ChunkPage>>,
}

/// One item of a chunk read.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkPage {
    /// Rows positional against the shape the chunk was read with.
    Rows(Vec<Row>),
    /// Sources that infer their shape from the data (documents) met rows that do not
    /// fit the shape the chunk was read with. This ends the read: the engine discards
    /// what it wrote of the chunk, evolves the table by these changes and reads the
    /// chunk again. A source sends every change the rest of the chunk needs at once.
    Reshape(Vec<SchemaChange>),
}

impl ChunkPage {
    /// The rows, or `None` for a reshape request.
    pub fn into_rows(self) -> Option<Vec<Row>> {
        match self {
            Self::Rows(rows) => Some(rows),
            Self::Reshape(_) => None,
        }
    }
}

/// How a source delivers the changes of the tables it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeStrategy {
    /// One log for the whole database (binlog, change stream), read once per replica by
    /// [`Source::open_feed`] and routed to the tables by the engine.
    Feed,
    /// A poller per table ([`Source::stream`]): sources without a log, or polling chosen
    /// by configuration.
    Poller,
}

impl ChangeStrategy {
    /// How changes detected by `detection` are delivered.
    pub fn of(detection: crate::config::ChangeDetection) -> Self {
        match detection {
            crate::config::ChangeDetection::Timestamp => Self::Poller,
            crate::config::ChangeDetection::Binlog
            | crate::config::ChangeDetection::ChangeStream => Self::Feed,
        }
    }

    pub fn polls(self) -> bool {
        self == Self::Poller
    }
}

/// What the source server still holds of its change log, seen from the oldest position
/// a deployment still needs (docs/operations.md, "Log retention").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRetention {
    /// Whether the server still holds the needed position (a lost one costs a new copy).
    pub held: bool,
    /// The needed position in the server's words, holding no row values (a binlog file
    /// and offset, a cluster time; a resume token holds a document key).
    pub needed: String,
    /// The oldest part of the log the server holds, in its own words (a binlog file, the
    /// time of the oplog's first entry).
    pub oldest_retained: String,
    /// How long the server keeps its log by its settings (`binlog_expire_logs_seconds`);
    /// `None` when it keeps it by size or without limit.
    pub retention_seconds: Option<f64>,
    /// Seconds of log the server holds before the needed position, where the source can
    /// tell them (the oplog's window ahead of it); `None` otherwise.
    pub older_seconds: Option<f64>,
    /// Bytes of log from the needed position to the end: what is still to be read.
    pub backlog_bytes: Option<u64>,
}

/// A connector that reads one source database.
///
/// Each call that reads a table gets that table's [`ReadSettings`] from the engine.
/// Implementations keep trait methods thin and delegate to inherent methods, so the
/// logic is testable without the trait machinery.
#[async_trait]
pub trait Source: Send + Sync {
    /// Connects and checks the prerequisites, for readiness and `validate
    /// --check-connections`; says how the connection is protected.
    async fn check(&self) -> Result<crate::ConnectionSecurity>;

    /// Every table or collection of the source database with its current shape (shaped
    /// by each table's `reads` where the source infers shapes from data).
    async fn discover(&self, reads: &dyn TableReads) -> Result<Vec<TableSchema>>;

    /// Records the start position and splits the table into chunks of about `chunk_rows`.
    async fn plan_snapshot(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk_rows: usize,
    ) -> Result<SnapshotPlan>;

    /// Reads one chunk of a plan made by [`Source::plan_snapshot`].
    async fn read_chunk(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk: &KeyRange,
    ) -> Result<ChunkRead>;

    /// The current end of the change log, for tables that skip the snapshot
    /// (`full_load_enabled: false`).
    async fn current_position(&self, table: &TableSchema, read: &ReadSettings) -> Result<Position>;

    /// Committed changes of `table` strictly after `from`, in commit order, forever (a
    /// source with nothing new sends heartbeats). Errors end the stream; the engine
    /// reopens it from its last committed position.
    async fn stream(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        from: &Position,
    ) -> Result<BoxStream<'static, Result<StreamFragment>>>;

    /// How this source delivers changes; with [`ChangeStrategy::Feed`] the engine reads
    /// [`Source::open_feed`] once for all the tables a replica runs, otherwise it calls
    /// [`Source::stream`] per table.
    fn change_strategy(&self) -> ChangeStrategy {
        ChangeStrategy::Poller
    }

    /// Committed transactions of `tables` strictly after `from`, in commit order, forever
    /// (heartbeats while idle), each change tagged with its table's index in `tables`.
    /// `from` is the earliest of the tables' positions: the engine drops what a table
    /// already has. Errors end the feed; the engine reopens it.
    async fn open_feed(
        &self,
        _tables: &[FeedTable],
        _from: &Position,
    ) -> Result<BoxStream<'static, Result<FeedItem>>> {
        Err(crate::Error::source_permanent(
            "this source has no shared change feed",
            None,
        ))
    }

    /// What the server still holds of the change log, seen from `needed` (the oldest
    /// position a table of the deployment still needs). `None`: the source has no log
    /// it could lose (polling), or cannot tell.
    async fn log_retention(&self, _needed: &Position) -> Result<Option<LogRetention>> {
        Ok(None)
    }

    /// The stream replays the table's DDL from the log in order (a binlog): a restart
    /// resumes from the shape recorded at the checkpoint and meets each statement at its
    /// position, instead of starting from today's catalog (which may already hold a rename
    /// the log before it does not know).
    fn follows_schema_in_log(&self) -> bool {
        false
    }

    /// A chunk read while the table streams hands over like a snapshot's late chunk:
    /// its position is an exact point of the stream's log, at or after every change the
    /// stream read before the chunk was read. A resync then re-copies the table while it
    /// streams instead of stopping its stream for a full copy.
    fn recopies_while_streaming(&self) -> bool {
        false
    }

    /// Chunk reads never ask to reshape the table ([`ChunkPage::Reshape`]): a chunk read
    /// in the shape the copy was planned in holds rows of exactly that shape, so any
    /// replica can copy it without the owner's shape changes (shared snapshots).
    fn copies_in_fixed_shape(&self) -> bool {
        false
    }

    /// The landing version tables created now record: a source that changes how it lands
    /// values bumps it and keeps landing tables of older versions their way
    /// ([`ReadSettings::landing`]).
    fn landing_version(&self) -> crate::LandingVersion {
        crate::LandingVersion::UNRECORDED
    }

    /// Orders two positions written by this source.
    fn compare_positions(&self, a: &Position, b: &Position) -> Result<Ordering>;

    /// Bytes this process's queries for `table` have processed — what a warehouse bills
    /// by — or `None` for a source that does not bill by bytes.
    fn bytes_processed(&self, _table: &str) -> Option<u64> {
        None
    }

    /// A cheap row-count estimate for plans and progress (`None` when unknown).
    async fn estimate_rows(&self, _table: &TableSchema) -> Result<Option<u64>> {
        Ok(None)
    }

    /// The source's estimate of a row's average size in bytes, which sizes snapshot chunks
    /// when `snapshot_chunk_size` is not set (`None` when unknown: the default size).
    async fn estimate_row_bytes(&self, _table: &TableSchema) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Every key the table has now, for delete detection by key-set comparison
    /// (`delete_detection_interval`, polling sources). `None`: not supported.
    async fn live_keys(
        &self,
        _table: &TableSchema,
        _read: &ReadSettings,
    ) -> Result<Option<Vec<Key>>> {
        Ok(None)
    }

    /// Which of `keys` the table holds now, each exactly as given (a key the source's
    /// collation only deems equal is not held): how a comparison finds rows the
    /// destination keeps that the source no longer has, a page of keys at a time.
    /// `None`: not supported.
    async fn existing_keys(
        &self,
        _table: &TableSchema,
        _read: &ReadSettings,
        _keys: &[Key],
    ) -> Result<Option<Vec<Key>>> {
        Ok(None)
    }

    /// Source-specific lines for `run --dry-run` (e.g. the bytes a full load would scan).
    async fn plan_notes(
        &self,
        _table: &TableSchema,
        _read: &ReadSettings,
        _snapshot: bool,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Whether `key` falls in `chunk` under the source's own key order. The default uses
    /// [`KeyRange::contains`]; sources whose key order differs (collations) override it.
    fn chunk_contains(&self, _table: &TableId, chunk: &KeyRange, key: &[Value]) -> bool {
        chunk.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_half_open() {
        let r = KeyRange {
            start: Some(vec![Value::Int(10)]),
            end: Some(vec![Value::Int(20)]),
        };
        assert!(r.contains(&[Value::Int(10)]));
        assert!(r.contains(&[Value::Int(19)]));
        assert!(!r.contains(&[Value::Int(20)]));
        assert!(!r.contains(&[Value::Int(9)]));
        assert!(KeyRange::ALL.contains(&[Value::Text("x".into())]));
    }
}
