//! The `Sink` trait and the checkpoint model. A checkpoint can only be written as part
//! of committing a sink transaction: data and position move together or not at all.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{DeletionStrategy, SchemaChangePolicy};
use crate::error::Result;
use crate::event::Change;
pub use crate::lease::{FencingToken, TableKey};
use crate::position::Position;
use crate::schema::{LandingVersion, TableId, TableSchema};
use crate::source::KeyRange;
use crate::value::Row;

/// Where a source table lands, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The replicated schema (config `schemas[].name`): checkpoints are keyed by it.
    pub schema: String,
    pub source: TableId,
    /// PostgreSQL schema and table name.
    pub destination_schema: String,
    pub table: String,
    pub deletion_strategy: DeletionStrategy,
    /// The soft-delete bookkeeping columns' names: flag (`is_deleted`) and time
    /// (`deleted_at`).
    pub soft_delete_column: String,
    pub deleted_at_column: String,
    pub schema_change_policy: SchemaChangePolicy,
    /// The landing version a table created now records: the source's current one
    /// ([`crate::Source::landing_version`]).
    pub landing: LandingVersion,
}

impl Target {
    /// Where `table` of `schema` lands, with its effective settings.
    pub fn new(schema: &crate::config::ResolvedSchema, table: &TableId) -> Self {
        let settings = schema.table(&table.name);
        Self {
            schema: schema.name.clone(),
            source: table.clone(),
            destination_schema: schema.destination_schema.clone(),
            table: table.name.clone(),
            deletion_strategy: settings.deletion_strategy,
            soft_delete_column: settings.soft_delete_column,
            deleted_at_column: settings.deleted_at_column,
            schema_change_policy: settings.schema_change_policy,
            landing: LandingVersion::UNRECORDED,
        }
    }

    /// The same target, creating tables with `landing`.
    #[must_use]
    pub fn landing(mut self, landing: LandingVersion) -> Self {
        self.landing = landing;
        self
    }

    pub fn key(&self) -> TableKey {
        TableKey {
            schema: self.schema.clone(),
            table: self.source.name.clone(),
        }
    }
}

/// A snapshot chunk's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkProgress {
    pub range: KeyRange,
    /// `Some(position of the read)` once the chunk is committed.
    pub done: Option<Position>,
    pub rows: u64,
}

/// Where a table is, durably.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Snapshot {
        start: Position,
        chunks: Vec<ChunkProgress>,
        /// The copy goes over a landing table that held rows: at its end, the rows the
        /// source no longer has are deleted (see [`CheckpointUpdate::BeginSnapshot`]).
        #[serde(default)]
        recopy: bool,
    },
    Streaming {
        position: Position,
        #[serde(default)]
        source_ts: Option<DateTime<Utc>>,
        /// Chunks read at positions later than `position`: changes to their keys at or
        /// before the chunk's position are already in the destination and are skipped.
        /// Empty once the stream passes them.
        #[serde(default)]
        handover: Vec<(KeyRange, Position)>,
        /// A copy in progress inside the stream (a resync, or a first copy with
        /// `stream_during_copy`). `None`: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recopy: Option<CopyInStream>,
    },
}

/// A copy that runs inside a table's stream, as its checkpoints record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyInStream {
    /// Its chunks still to copy, in order (empty: only the sweep may be left).
    pub chunks: Vec<KeyRange>,
    /// It ends by removing the landing rows the source no longer has (a re-copy over
    /// rows already there; a first copy into an empty table has none to remove).
    pub sweep: bool,
}

/// A table's durable checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub phase: Phase,
    pub fencing: FencingToken,
    /// The source shape at the checkpoint's position (streaming only; recorded once a
    /// stream commits). A source that replays its DDL from the log resumes from it, so
    /// the statements between the checkpoint and now apply in log order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<TableSchema>,
}

/// What a commit records. Deltas rather than whole states, so chunks committing in
/// parallel never overwrite each other's progress.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointUpdate {
    /// A new snapshot plan (resets progress). `recopy`: the landing table holds rows
    /// already (a resync, a copy after a lost position) — rows the source deleted without
    /// the stream seeing it (its log lost, a partition dropped) would stay, so the copy
    /// ends by removing the landing rows the source no longer has.
    BeginSnapshot {
        start: Position,
        chunks: Vec<KeyRange>,
        recopy: bool,
        /// The source shape the chunks are read in, when other replicas may copy them
        /// (a source whose chunk reads never ask to reshape the table): they read and
        /// write in exactly this shape ([`CheckpointStore::claim_chunk`]). `None`: the
        /// owner copies every chunk.
        shared: Option<TableSchema>,
    },
    /// Chunk `index` of the current plan is copied.
    ChunkDone {
        index: usize,
        position: Position,
        rows: u64,
    },
    /// Chunk `index` of the current plan is copied by a replica that does not own the
    /// table, under `claim` ([`CheckpointStore::claim_chunk`]): recorded only while the
    /// claim is the chunk's latest and the chunk is not copied yet, so a replica that
    /// lost its claim (or a plan replaced since) cannot record it.
    ChunkCopied {
        index: usize,
        position: Position,
        rows: u64,
        claim: FencingToken,
    },
    /// Streaming progress (also the snapshot → stream handover).
    Streaming {
        position: Position,
        source_ts: Option<DateTime<Utc>>,
        handover: Vec<(KeyRange, Position)>,
        /// The source shape at `position`, when it differs from the one recorded (`None`
        /// keeps the recorded shape; a snapshot plan clears it).
        shape: Option<TableSchema>,
        /// A copy in progress inside the stream ([`Phase::Streaming`]).
        recopy: Option<CopyInStream>,
    },
}

/// What a sink's commit did with the checkpoint it was given.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// Recorded in the same transaction as the data, under the fencing token (PostgreSQL):
    /// data and position moved together.
    WithData,
    /// The data is durable, the checkpoint is not: a destination that cannot share a
    /// transaction with the control store hands it back, and the engine saves it there
    /// right after ([`CheckpointStore::save`]). A crash in between replays the changes
    /// since the previous checkpoint, so such a sink's writes must be idempotent (rows
    /// keyed by their source position, docs/architecture.md).
    Separately(Box<CheckpointUpdate>),
}

/// Loads checkpoints and keeps the table leases whose fencing tokens guard them. A
/// checkpoint is saved with its data by [`SinkTransaction::commit`], or, for a sink that
/// hands it back, by [`CheckpointStore::save`] once the data is durable.
#[async_trait]
pub trait CheckpointStore: crate::lease::LeaseStore {
    async fn load(&self, table: &TableKey) -> Result<Option<Checkpoint>>;

    /// Records `update` if the fencing token still holds (a checkpoint of data a sink
    /// committed on its own: [`Committed::Separately`]).
    async fn save(
        &self,
        table: &TableKey,
        token: FencingToken,
        update: CheckpointUpdate,
    ) -> Result<()>;

    /// Forgets the table's progress (full resync); the next run snapshots it again.
    async fn reset(&self, table: &TableKey, token: FencingToken) -> Result<()>;

    /// Whether chunks of a snapshot are work items any replica may claim (the store keeps
    /// claims, and the sink records [`CheckpointUpdate::ChunkCopied`] with the data).
    fn shares_chunks(&self) -> bool {
        false
    }

    /// Claims the first uncopied chunk of a snapshot in `schema` within `scope` that no
    /// replica holds (unclaimed, or its claim lapsed), for `holder` until `validity`
    /// passes unless renewed ([`Self::renew_claims`]). Each claim has a token newer than
    /// any before.
    async fn claim_chunk(
        &self,
        _schema: &str,
        _scope: ChunkScope<'_>,
        _holder: &str,
        _validity: std::time::Duration,
    ) -> Result<Option<ChunkClaim>> {
        Ok(None)
    }

    /// Extends every claim `holder` has in `schema` by `validity`.
    async fn renew_claims(
        &self,
        _schema: &str,
        _holder: &str,
        _validity: std::time::Duration,
    ) -> Result<()> {
        Ok(())
    }

    /// A copy inside a streaming table's stream, shared between replicas: `chunks` become
    /// the table's work items (replacing any), with no copy window open.
    async fn plan_shared_copy(
        &self,
        table: &TableKey,
        _token: FencingToken,
        _chunks: &[KeyRange],
    ) -> Result<()> {
        Err(unshared(table))
    }

    /// Opens the streaming table's copy window: until it closes, replicas may copy its
    /// chunks (each read after the window opened), and its owner commits nothing.
    /// Returns the window's number.
    async fn open_copy_window(&self, table: &TableKey, _token: FencingToken) -> Result<u64> {
        Err(unshared(table))
    }

    /// Closes the copy window once every chunk commit in flight under it has ended (a
    /// later one cannot record); returns every chunk of the copy recorded so far, with the
    /// position of its read.
    async fn close_copy_window(
        &self,
        table: &TableKey,
        _token: FencingToken,
    ) -> Result<Vec<CopiedChunk>> {
        Err(unshared(table))
    }

    /// Stops new claims in copy window `window` (it stays open for the copies under
    /// way); returns how many claims made in it are still copying.
    async fn drain_copy_window(&self, table: &TableKey, _window: u64) -> Result<usize> {
        Err(unshared(table))
    }

    /// Gives a claimed chunk back. `owner_only`: helpers no longer take it (it needs the
    /// owner: the table's shape must change for it).
    async fn release_chunk(
        &self,
        _table: &TableKey,
        _index: usize,
        _claim: FencingToken,
        _owner_only: bool,
    ) -> Result<()> {
        Ok(())
    }
}

fn unshared(table: &TableKey) -> crate::Error {
    crate::Error::Sink {
        message: format!("{table}: this control store does not share copies between replicas"),
        retry: crate::Retry::Permanent,
        hint: None,
        cause: None,
    }
}

/// A chunk of a shared copy recorded as copied, by whichever replica.
#[derive(Debug, Clone, PartialEq)]
pub struct CopiedChunk {
    pub range: KeyRange,
    /// The position of its read.
    pub position: Position,
    pub rows: u64,
}

/// Which chunks a claim may take.
#[derive(Debug, Clone, Copy)]
pub enum ChunkScope<'a> {
    /// The owner's own table: every uncopied chunk of its plan.
    Table(&'a str),
    /// A helper: chunks of shared plans ([`CheckpointUpdate::BeginSnapshot`]'s `shared`)
    /// of tables other than these (the ones it runs itself), not handed back as the
    /// owner's.
    OthersThan(&'a [String]),
}

/// A chunk of a shared snapshot, claimed by one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkClaim {
    pub table: String,
    pub index: usize,
    pub range: KeyRange,
    pub claim: FencingToken,
    /// The shape the table's owner planned a shared copy in (`None` for a plan the owner
    /// copies alone).
    pub shape: Option<TableSchema>,
}

/// A request to a running replicator, left in the destination by the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub id: i64,
    pub table: Option<String>,
    pub kind: crate::SignalKind,
}

/// A destination.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Connects and checks privileges, writing nothing (`validate --check-connections`);
    /// says how the connection is protected.
    async fn check(&self) -> Result<crate::ConnectionSecurity>;

    /// Creates or migrates the metadata schema (idempotent).
    async fn prepare(&self) -> Result<()>;

    /// Creates the landing table if missing (recording `target.landing`), or brings it to
    /// `schema`'s shape. Returns the landing version the table was created with
    /// ([`LandingVersion::UNRECORDED`] for a table created before versions were recorded).
    async fn ensure_table(&self, target: &Target, schema: &TableSchema) -> Result<LandingVersion>;

    /// The DDL `ensure_table` would run, without running it (`run --dry-run`).
    async fn plan_table(&self, target: &Target, schema: &TableSchema) -> Result<Vec<String>>;

    /// The keys of the rows live (not soft-deleted) at the destination, for delete
    /// detection by key-set comparison.
    async fn live_keys(
        &self,
        target: &Target,
        schema: &TableSchema,
    ) -> Result<Vec<crate::value::Key>>;

    /// Up to `limit` keys of live rows after `after`, in the destination's key order: a
    /// re-copy's sweep walks them a page at a time.
    async fn live_key_page(
        &self,
        target: &Target,
        schema: &TableSchema,
        after: Option<&crate::value::Key>,
        limit: usize,
    ) -> Result<Vec<crate::value::Key>>;

    /// Opens a destination transaction for one table.
    async fn begin(&self, target: &Target, token: FencingToken)
        -> Result<Box<dyn SinkTransaction>>;

    /// Opens a transaction copying one claimed chunk for the table's owner: it holds no
    /// lease, so its only checkpoint is [`CheckpointUpdate::ChunkCopied`], checked against
    /// the claim. Sinks whose store does not share chunks never get here.
    async fn begin_claimed(&self, target: &Target) -> Result<Box<dyn SinkTransaction>> {
        Err(unshared(&target.key()))
    }
}

/// One open destination transaction. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait SinkTransaction: Send {
    /// Bulk-loads snapshot rows (COPY path); rows already present are overwritten
    /// without bumping their version.
    async fn write_snapshot_rows(&mut self, rows: Vec<Row>) -> Result<()>;

    /// Applies changes in order (rows, schema changes, truncates).
    async fn apply(&mut self, changes: Vec<Change>) -> Result<()>;

    /// Commits the data and, where the sink can, records `update` with it if the fencing
    /// token still holds; otherwise hands `update` back for the checkpoint store.
    async fn commit(self: Box<Self>, update: CheckpointUpdate) -> Result<Committed>;
}
