//! The control plane: what the runtime and the CLI keep besides the rows — leases and
//! fencing and checkpoints ([`CheckpointStore`]), table status ([`status`] live in this
//! process, [`report`] as recorded for every replica), signals, dead letters — and the
//! destination's side of a verification ([`LandedRows`]).
//!
//! A destination's [`crate::Sink`] writes rows; its control store may live in the same
//! database (PostgreSQL: a batch and its checkpoint commit in one transaction) or apart
//! (docs/architecture.md says how exactly-once effect is kept then).

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;
pub mod report;
pub mod status;

pub use report::{
    CheckpointPhase, DeadLetter, DeadLetterStatus, DeploymentStatus, ReplayReport, ReplicaReport,
    TableReport,
};
pub use status::{StatusBoard, TableState, TableStatus, VerificationStatus};

use crate::schema::{ColumnType, TableSchema};
use crate::sink::{CheckpointStore, Signal, Target};
use crate::value::{Key, Row};
use crate::SignalKind;

/// A destination as the runtime composes it: the data sink, and the control store (the
/// checkpoints the engine commits with its batches, status, signals, dead letters) with
/// the destination's side of verification.
#[derive(Clone)]
pub struct Destination {
    pub sink: std::sync::Arc<dyn crate::sink::Sink>,
    pub checkpoints: std::sync::Arc<dyn CheckpointStore>,
    pub control: std::sync::Arc<dyn ControlStore>,
    pub landed: std::sync::Arc<dyn LandedRows>,
}

/// Which dead letters: ids, or a schema/table, optionally by status.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub ids: Vec<i64>,
    pub schema: Option<String>,
    pub table: Option<String>,
    /// `None` for every status.
    pub status: Option<DeadLetterStatus>,
}

/// Where a dead letter's table lands now (`schema`, `table` → target), for replays.
pub type Targets<'a> = &'a (dyn Fn(&str, &str) -> Option<Target> + Send + Sync);

/// Status, signals and dead letters, besides the checkpoints and leases.
#[async_trait]
pub trait ControlStore: CheckpointStore {
    /// Records the live status of this process's tables where `status` can read it from
    /// another process.
    async fn record_status(&self, owner: &str, tables: &[TableStatus]) -> Result<()>;

    /// Every table and replica the store records, whoever runs them (`None` before the
    /// store exists).
    async fn read_status(&self) -> Result<Option<DeploymentStatus>>;

    /// Takes the pending signals for `tables` of `schema`, and those naming no table
    /// (each is returned once).
    async fn take_signals(&self, schema: &str, tables: &[String]) -> Result<Vec<Signal>>;

    /// Leaves a signal for the replica running `table` of `schema`; returns its id.
    async fn send_signal(
        &self,
        schema: &str,
        table: Option<&str>,
        kind: &SignalKind,
    ) -> Result<i64>;

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;

    /// Marks the pending letters of `filter` discarded; returns how many.
    async fn discard_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64>;

    /// Applies the pending letters of `filter` again, each into its table's target.
    async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        targets: Targets<'_>,
    ) -> Result<ReplayReport>;
}

/// A landed row with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct LandedRow {
    pub row: Row,
    pub version: i64,
    pub deleted: bool,
    pub op: String,
}

/// One key to put right: the source's row (`None`: gone at the source) and the version
/// the destination row had when it was compared (`None`: absent there).
#[derive(Debug, Clone)]
pub struct Fix {
    pub key: Key,
    pub source: Option<Row>,
    pub seen_version: Option<i64>,
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repaired {
    pub written: u64,
    pub deleted: u64,
    /// Rows the replicator changed after the comparison: left to it, re-checked later.
    pub skipped: u64,
}

/// The destination's side of a comparison of source and destination (verification).
#[async_trait]
pub trait LandedRows: Send + Sync {
    /// The landing table's shape as the destination holds it.
    async fn landed_schema(&self, target: &Target) -> Result<TableSchema>;

    /// The landing version the landing table was created with (as `Sink::ensure_table`
    /// returns it).
    async fn landing_version(&self, target: &Target) -> Result<crate::LandingVersion>;

    /// The rows (live or soft-deleted) whose keys are among `keys`.
    async fn rows_with_keys(
        &self,
        target: &Target,
        schema: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<LandedRow>>;

    /// Up to `limit` keys of live rows after `after` in the destination's key order, with
    /// their versions.
    async fn live_key_page(
        &self,
        target: &Target,
        schema: &TableSchema,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, i64)>>;

    /// Writes `fixes`, never overwriting a row whose version moved since it was compared.
    async fn repair(
        &self,
        target: &Target,
        schema: &TableSchema,
        fixes: &[Fix],
    ) -> Result<Repaired>;

    /// A row in the destination's own encoding for `types`: equal texts mean equal rows
    /// as the destination stores them, whichever side decoded the values.
    fn canonical(&self, row: &Row, types: &[ColumnType]) -> std::result::Result<String, String>;
}
