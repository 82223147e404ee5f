//! The operator's status page: `GET /` on the health port serves one self-contained page
//! (no external assets, relative URLs so it works behind an Ingress path prefix) that polls
//! `GET /status`. Both read the metadata schema, so any replica shows every table of its
//! schemas whoever runs it; this replica's own tables show their live values. The metadata
//! schema is read every 2 s by one task, whoever is looking, so answering never waits on
//! the destination and many open pages cost the database nothing more.

mod history;
mod view;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use warp_core::config::LoadedConfig;
use warp_core::{ControlStore, DeploymentStatus, ReplicaReport, StatusBoard};

use history::History;
pub use view::TableView;

/// The page itself, served as is.
pub const HTML: &str = include_str!("page.html");

/// How often the metadata schema is read (as often as replicas record their status).
const READ_EVERY: Duration = Duration::from_secs(2);
/// A read slower than this counts as failed (the page says since when it is stale).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The process and its configuration as the page summarises them; connection strings
/// with their secrets masked.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    pub version: &'static str,
    pub replica: String,
    pub started_at: DateTime<Utc>,
    pub mode: &'static str,
    pub config_file: String,
    pub source: String,
    pub destination: String,
    pub schemas: Vec<SchemaSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaSummary {
    pub name: String,
    pub source_database: String,
    pub destination_schema: String,
}

impl ProcessSummary {
    pub fn of(loaded: &LoadedConfig, replica: &str) -> Self {
        let cfg = &loaded.config;
        let masked = |s: Option<&warp_core::config::Secret>| {
            s.map_or_else(|| "no connection string".to_owned(), ToString::to_string)
        };
        Self {
            version: env!("CARGO_PKG_VERSION"),
            replica: replica.to_owned(),
            started_at: Utc::now(),
            mode: cfg.mode.as_str(),
            config_file: loaded.origin.clone(),
            source: format!(
                "{} ({}), change detection: {}",
                cfg.source.source_type.as_str(),
                masked(cfg.source.connection_string.as_ref()),
                cfg.source.strategy().as_str()
            ),
            destination: format!(
                "postgresql ({}), metadata schema {}",
                masked(cfg.destination.connection_string.as_ref()),
                cfg.destination.metadata_schema
            ),
            schemas: cfg
                .schemas_to_run(loaded.schema_selection.as_deref())
                .into_iter()
                .map(|s| SchemaSummary {
                    name: s.name,
                    source_database: s.source_database,
                    destination_schema: s.destination_schema,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
impl ProcessSummary {
    /// Replica `pod-a` running schema `shop` (for unit tests).
    pub(crate) fn sample() -> Self {
        Self {
            version: "0",
            replica: "pod-a".into(),
            started_at: Utc::now(),
            mode: "single",
            config_file: "c.yaml".into(),
            source: "mysql".into(),
            destination: "postgresql".into(),
            schemas: vec![SchemaSummary {
                name: "shop".into(),
                source_database: "shop".into(),
                destination_schema: "shop".into(),
            }],
        }
    }
}

/// What `GET /status` answers.
#[derive(Debug, Serialize)]
pub struct StatusReply<'a> {
    pub generated_at: DateTime<Utc>,
    /// When the metadata schema was last read; `None` before the first read.
    pub metadata_read_at: Option<DateTime<Utc>>,
    /// Why the last read failed (the tables then show this replica's own only).
    pub metadata_error: Option<String>,
    pub process: &'a ProcessSummary,
    /// This process's schemas' replicas and the tables each holds.
    pub replicas: Vec<ReplicaReport>,
    pub tables: Vec<TableView>,
    /// Per schema whose source reads a change log: the oldest position its tables need
    /// against what the server still holds (empty until the first check, or unknown).
    pub log_retention: Vec<crate::retention::RetentionReport>,
}

#[derive(Default)]
struct Reading {
    recorded: DeploymentStatus,
    read_at: Option<DateTime<Utc>>,
    error: Option<String>,
    history: History,
}

pub struct StatusPage {
    process: ProcessSummary,
    schemas: Vec<String>,
    boards: Vec<StatusBoard>,
    reading: Mutex<Reading>,
    log_retention: Mutex<Vec<crate::retention::RetentionReport>>,
}

impl StatusPage {
    pub fn new(process: ProcessSummary, boards: Vec<StatusBoard>) -> Self {
        Self {
            schemas: process.schemas.iter().map(|s| s.name.clone()).collect(),
            process,
            boards,
            reading: Mutex::new(Reading::default()),
            log_retention: Mutex::new(Vec::new()),
        }
    }

    /// The latest log-retention check of this process's schemas.
    pub fn set_log_retention(&self, reports: Vec<crate::retention::RetentionReport>) {
        *self
            .log_retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reports;
    }

    fn live(&self) -> Vec<warp_core::TableStatus> {
        self.boards.iter().flat_map(StatusBoard::snapshot).collect()
    }

    fn views(&self, reading: &Reading, now: DateTime<Utc>) -> Vec<TableView> {
        view::merge(
            reading.recorded.tables.clone(),
            &self.live(),
            &self.schemas,
            &self.process.replica,
            now,
        )
    }

    /// Takes one read of the metadata schema (or its failure) and samples the history.
    fn take(&self, read: Result<DeploymentStatus, String>, now: DateTime<Utc>) {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        match read {
            Ok(recorded) => {
                reading.recorded = recorded;
                reading.read_at = Some(now);
                reading.error = None;
            }
            Err(e) => reading.error = Some(warp_core::mask_secrets(&e).into_owned()),
        }
        let views = self.views(&reading, now);
        for v in &views {
            reading
                .history
                .record(&v.key(), now, v.lag_seconds, v.rows_copied);
        }
        reading.history.retain(&|k| {
            views
                .iter()
                .any(|v| v.schema == k.schema && v.table == k.table)
        });
    }

    /// The JSON `GET /status` answers.
    pub fn json(&self) -> String {
        let now = Utc::now();
        let reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tables = self.views(&reading, now);
        view::measure(&mut tables, &reading.history, now);
        let reply = StatusReply {
            generated_at: now,
            metadata_read_at: reading.read_at,
            metadata_error: reading.error.clone(),
            process: &self.process,
            replicas: reading
                .recorded
                .replicas
                .iter()
                .filter(|r| self.schemas.contains(&r.schema))
                .cloned()
                .collect(),
            tables,
            log_retention: self
                .log_retention
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        serde_json::to_string(&reply).unwrap_or_default()
    }
}

/// Reads the metadata schema for the page every 2 s until `stop`.
pub async fn follow(
    page: Arc<StatusPage>,
    control: Arc<dyn ControlStore>,
    stop: CancellationToken,
) {
    loop {
        let read = match tokio::time::timeout(READ_TIMEOUT, control.read_status()).await {
            Ok(Ok(status)) => Ok(status.unwrap_or_default()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the metadata schema did not answer within {}s",
                READ_TIMEOUT.as_secs()
            )),
        };
        page.take(read, Utc::now());
        tokio::select! {
            () = tokio::time::sleep(READ_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_keeps_the_last_one_and_says_why_without_secrets() {
        let page = StatusPage::new(ProcessSummary::sample(), vec![StatusBoard::default()]);
        let replica = ReplicaReport {
            schema: "shop".into(),
            owner: "pod-b".into(),
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
            alive: true,
            tables: vec!["orders".into()],
        };
        page.take(
            Ok(DeploymentStatus {
                tables: Vec::new(),
                replicas: vec![
                    replica.clone(),
                    ReplicaReport {
                        schema: "other".into(),
                        ..replica
                    },
                ],
            }),
            Utc::now(),
        );
        page.take(
            Err("connect to postgres://warp:hunter2@db/x refused".into()),
            Utc::now(),
        );
        let reply: serde_json::Value = serde_json::from_str(&page.json()).unwrap();
        let text = reply.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://warp:***@db/x refused"),
            "the error is shown: {text}"
        );
        assert!(reply["metadata_read_at"].is_string(), "{text}");
        assert_eq!(
            reply["replicas"].as_array().map(Vec::len),
            Some(1),
            "only this process's schemas: {text}"
        );
    }
}
