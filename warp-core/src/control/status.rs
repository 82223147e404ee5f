//! Per-table lifecycle, shared with the runtime (probes, `/status`, metrics).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::TABLE_STATE;
use crate::sink::TableKey;

/// Where a table is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    Pending,
    Snapshotting,
    Streaming,
    /// A transient error; reconnecting with backoff.
    Retrying,
    /// Permanent error, or retries exhausted (then restarted after a cool-down).
    Failed,
    /// Shut down cleanly.
    Stopped,
}

impl TableState {
    pub const ALL: [TableState; 6] = [
        Self::Pending,
        Self::Snapshotting,
        Self::Streaming,
        Self::Retrying,
        Self::Failed,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Snapshotting => "snapshotting",
            Self::Streaming => "streaming",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    /// The state `as_str` names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether readiness counts this table as healthy.
    pub fn is_healthy(self) -> bool {
        matches!(self, Self::Snapshotting | Self::Streaming)
    }
}

/// What `status` shows for one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableStatus {
    pub schema: String,
    pub table: String,
    pub state: TableState,
    pub rows_copied: u64,
    pub chunks_done: usize,
    pub chunks_total: usize,
    pub events_applied: u64,
    /// Changes read from the source and held in the current batch, not yet committed.
    pub pending_changes: u64,
    pub commits: u64,
    pub position: Option<String>,
    pub last_source_ts: Option<DateTime<Utc>>,
    pub last_commit_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub hint: Option<String>,
    /// Consecutive failed attempts since the last successful commit.
    pub attempts: u32,
    /// [`crate::Source::bytes_processed`] for the table, as of its last commit.
    pub source_bytes: Option<u64>,
    /// Background verification of the table, when on.
    #[serde(default)]
    pub verification: Option<VerificationStatus>,
}

/// Where a table's background verification stands: what the status page, `/status` and
/// `status` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerificationStatus {
    /// `verifying`, `waiting` (the table copies or lags), `idle` (between passes) or
    /// `failed` (the last pass could not finish; see `last_error`).
    pub state: String,
    /// Complete passes since the replica started.
    pub passes: u64,
    /// When the last complete pass ended, and what it found.
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_pass_seconds: Option<f64>,
    pub rows_compared: u64,
    pub ranges: u64,
    pub mismatched_rows: u64,
    pub mismatched_ranges: u64,
    /// Rows still changing on either side when the pass read them (not mismatches).
    pub unsettled_rows: u64,
    /// Whether rows kept only at the destination were looked for.
    pub extra_rows_checked: bool,
    /// Rows rewritten from the source since the replica started (`mode: repair`).
    pub repaired_rows: u64,
    /// The last pass that found differences: when, and a summary with some keys.
    pub last_mismatch_at: Option<DateTime<Utc>>,
    pub last_mismatch: Option<String>,
    /// Why the last pass could not finish (secrets masked).
    pub last_error: Option<String>,
    /// Bytes verification's queries processed since the replica started, for a source
    /// that bills by bytes (BigQuery).
    #[serde(default)]
    pub source_bytes: Option<u64>,
}

impl TableStatus {
    fn new(key: &TableKey) -> Self {
        Self {
            schema: key.schema.clone(),
            table: key.table.clone(),
            state: TableState::Pending,
            rows_copied: 0,
            chunks_done: 0,
            chunks_total: 0,
            events_applied: 0,
            pending_changes: 0,
            commits: 0,
            position: None,
            last_source_ts: None,
            last_commit_at: None,
            last_error: None,
            hint: None,
            attempts: 0,
            source_bytes: None,
            verification: None,
        }
    }

    /// Seconds between now and the source time of the last applied change or heartbeat.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        self.last_source_ts
            .map(|ts| ((now - ts).num_milliseconds() as f64 / 1000.0).max(0.0))
    }
}

/// Shared, cheap to clone. Never held across an await.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    tables: Arc<Mutex<BTreeMap<TableKey, TableStatus>>>,
    /// Start-up finished: destination prepared (metadata migrated), tables discovered.
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl StatusBoard {
    pub fn mark_started(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn update(&self, key: &TableKey, f: impl FnOnce(&mut TableStatus)) {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let new = !map.contains_key(key);
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| TableStatus::new(key));
        let before = entry.state;
        f(entry);
        // Gauges change only with the state (and are published once for a new table).
        if new || entry.state != before {
            publish_state(key, entry.state);
        }
    }

    /// Changes a table this replica runs; `false` (nothing changed) for one it does not.
    pub fn amend(&self, key: &TableKey, f: impl FnOnce(&mut TableStatus)) -> bool {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        map.get_mut(key).map(f).is_some()
    }

    pub fn set_state(&self, key: &TableKey, state: TableState) {
        self.update(key, |s| s.state = state);
    }

    /// Forgets a table this replica no longer runs (its lease went to another).
    pub fn remove(&self, key: &TableKey) {
        let mut map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if map.remove(key).is_some() {
            // Whoever runs it now publishes its state; this replica must not count it.
            for s in TableState::ALL {
                metrics::gauge!(TABLE_STATE, "schema" => key.schema.clone(), "table" => key.table.clone(), "state" => s.as_str()).set(0.0);
            }
            metrics::gauge!(crate::metrics::REPLICATION_LAG_SECONDS, "schema" => key.schema.clone(), "table" => key.table.clone()).set(0.0);
        }
    }

    pub fn get(&self, key: &TableKey) -> Option<TableStatus> {
        let map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned()
    }

    pub fn snapshot(&self) -> Vec<TableStatus> {
        let map = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }
}

fn publish_state(key: &TableKey, state: TableState) {
    for s in TableState::ALL {
        metrics::gauge!(TABLE_STATE, "schema" => key.schema.clone(), "table" => key.table.clone(), "state" => s.as_str())
            .set(if s == state { 1.0 } else { 0.0 });
    }
}
