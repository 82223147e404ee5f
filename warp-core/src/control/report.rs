//! What the metadata schema says about a deployment, as `status` and `dlq` show it: typed
//! values from the destination to the CLI (and, as JSON, to whoever reads `--json`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::status::TableState;

/// Which phase a table's checkpoint is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointPhase {
    Snapshot,
    Streaming,
}

impl CheckpointPhase {
    /// The name the metadata schema stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Streaming => "streaming",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Snapshot, Self::Streaming]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// One table as `cartridge-warp status` shows it, read from the metadata schema (a
/// replica's own `/status` shows its live [`crate::TableStatus`] instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    pub schema: String,
    pub table: String,
    /// `None` until a replicator has recorded a state.
    pub state: Option<TableState>,
    pub phase: Option<CheckpointPhase>,
    pub rows_copied: Option<i64>,
    /// The checkpoint's position in the source's own form, shown as is.
    pub position: Option<serde_json::Value>,
    pub last_source_ts: Option<DateTime<Utc>>,
    pub lag_seconds: Option<f64>,
    /// The replica holding a live lease on the table.
    pub owner: Option<String>,
    pub status_updated_at: Option<DateTime<Utc>>,
    /// Secrets masked.
    pub last_error: Option<String>,
    pub hint: Option<String>,
    /// Pending dead letters.
    pub dead_letters: i64,
    /// Snapshot chunks finished and planned, as last recorded (`None` before a copy).
    #[serde(default)]
    pub chunks_done: Option<i64>,
    #[serde(default)]
    pub chunks_total: Option<i64>,
    /// The landing table's latest version in the schema registry.
    #[serde(default)]
    pub schema_version: Option<i32>,
    /// Bytes the source's queries for the table processed (what BigQuery bills), as
    /// counted by the replica that ran it since it started; `None` for other sources.
    #[serde(default)]
    pub source_bytes: Option<i64>,
    /// Background verification, as last recorded by the replica running the table.
    #[serde(default)]
    pub verification: Option<crate::VerificationStatus>,
}

/// One replica of a schema as the metadata schema's membership shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub schema: String,
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Its membership has not lapsed.
    pub alive: bool,
    /// The tables it holds a live lease on.
    pub tables: Vec<String>,
}

/// Everything the metadata schema says about its deployments' tables and replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    pub tables: Vec<TableReport>,
    pub replicas: Vec<ReplicaReport>,
}

/// Where a dead letter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Waiting for its cause to be fixed and a replay.
    Pending,
    Replayed,
    /// Discarded by hand, or superseded by a newer change at replay.
    Discarded,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }
}

impl fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadLetterStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Pending, Self::Replayed, Self::Discarded]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected pending, replayed or discarded"))
    }
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub schema: String,
    pub table: String,
    pub error: String,
    pub status: DeadLetterStatus,
    pub attempts: i32,
    pub source_position: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// The change as stored, replayed as is.
    pub payload: serde_json::Value,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub replayed: Vec<i64>,
    /// A newer change already reached the destination; marked `discarded`.
    pub superseded: Vec<i64>,
    /// Still failing: (id, error); the entry stays `pending` with the new error.
    pub failed: Vec<(i64, String)>,
}

/// What a signal asks of the replicator running its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalKind {
    /// Copy the table again from a new snapshot.
    Resync,
    /// Left by another version of cartridge-warp; logged and ignored.
    Unknown(String),
}

impl SignalKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Resync => "resync",
            Self::Unknown(other) => other,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "resync" => Self::Resync,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_text() {
        for s in [
            DeadLetterStatus::Pending,
            DeadLetterStatus::Replayed,
            DeadLetterStatus::Discarded,
        ] {
            assert_eq!(s.as_str().parse::<DeadLetterStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("done".parse::<DeadLetterStatus>().is_err());
        assert_eq!(SignalKind::parse("resync"), SignalKind::Resync);
        assert_eq!(SignalKind::parse("pause").as_str(), "pause");
        assert_eq!(
            serde_json::to_string(&CheckpointPhase::Streaming).unwrap(),
            "\"streaming\""
        );
    }
}
