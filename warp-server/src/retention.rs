//! Log retention (docs/operations.md, "Log retention"): every minute, for each schema
//! whose source reads a change log, the oldest position any of its tables still needs
//! (a streaming checkpoint, or the start of a copy in progress) is set against what the
//! server still holds, so a position about to be purged shows — on the status page, in
//! `/status` and in metrics with an alert — before the table has to be copied again.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use warp_core::metrics::{LOG_BACKLOG_BYTES, LOG_HEADROOM_SECONDS, LOG_HELD};
use warp_core::{CheckpointStore, LogRetention, Phase, Position, Source, StatusBoard, TableKey};

use crate::status_page::StatusPage;

/// The first look soon after start (a restart after a long outage is when a position is
/// most likely gone), then every minute: retention moves in hours.
const FIRST_AFTER: Duration = Duration::from_secs(5);
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// One schema's retention as last checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionReport {
    pub schema: String,
    /// The table whose position is the oldest needed.
    pub table: String,
    #[serde(flatten)]
    pub retention: LogRetention,
    /// Seconds until the server may drop the needed position, at least (0 once gone);
    /// `None` when the server's settings do not tell.
    pub headroom_seconds: Option<f64>,
    pub checked_at: DateTime<Utc>,
}

/// A schema to watch: its source and the tables it knows.
pub struct Watched {
    pub schema: String,
    pub source: Arc<dyn Source>,
    pub board: StatusBoard,
}

/// Checks every watched schema until `stop`, publishing to metrics and `page`.
pub async fn watch(
    watched: Vec<Watched>,
    checkpoints: Arc<dyn CheckpointStore>,
    page: Arc<StatusPage>,
    stop: CancellationToken,
) {
    let mut wait = FIRST_AFTER;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let mut reports = Vec::new();
        let mut waiting = false;
        for w in &watched {
            match check(w, checkpoints.as_ref(), Utc::now()).await {
                Ok(Checked::Report(report)) => {
                    publish(&report);
                    reports.push(report);
                }
                Ok(Checked::NoCheckpoint) => waiting = true,
                Ok(Checked::Unknown) => debug!(schema = %w.schema, "log retention unknown"),
                Err(e) => {
                    warn!(schema = %w.schema, error = %e, "could not read the source's log retention")
                }
            }
        }
        // A schema without a checkpoint yet is looked at again soon: the first report is
        // the one an operator restarting after an outage needs.
        wait = if waiting { FIRST_AFTER } else { CHECK_EVERY };
        page.set_log_retention(reports);
    }
}

/// What one look at a schema found.
enum Checked {
    Report(RetentionReport),
    /// No table of the schema has a checkpoint yet.
    NoCheckpoint,
    /// The source cannot tell.
    Unknown,
}

async fn check(
    w: &Watched,
    checkpoints: &dyn CheckpointStore,
    now: DateTime<Utc>,
) -> warp_core::Result<Checked> {
    let tables = w.board.snapshot().into_iter().map(|t| t.table).collect();
    assess(&w.schema, w.source.as_ref(), checkpoints, tables, now).await
}

/// The retention of `schema` now, from its `tables`' checkpoints (`cartridge-warp status`
/// asks this directly: it works while no replica runs).
pub async fn report_now(
    schema: &str,
    source: &dyn Source,
    checkpoints: &dyn CheckpointStore,
    tables: Vec<String>,
) -> warp_core::Result<Option<RetentionReport>> {
    Ok(
        match assess(schema, source, checkpoints, tables, Utc::now()).await? {
            Checked::Report(r) => Some(r),
            Checked::NoCheckpoint | Checked::Unknown => None,
        },
    )
}

async fn assess(
    schema: &str,
    source: &dyn Source,
    checkpoints: &dyn CheckpointStore,
    tables: Vec<String>,
    now: DateTime<Utc>,
) -> warp_core::Result<Checked> {
    let Some((table, needed, source_ts)) =
        oldest_needed(schema, source, checkpoints, tables).await?
    else {
        return Ok(Checked::NoCheckpoint);
    };
    let Some(retention) = source.log_retention(&needed).await? else {
        return Ok(Checked::Unknown);
    };
    Ok(Checked::Report(RetentionReport {
        schema: schema.to_owned(),
        table,
        headroom_seconds: headroom(&retention, source_ts, now),
        retention,
        checked_at: now,
    }))
}

/// The oldest position one of `tables` still needs, with its table and source time.
async fn oldest_needed(
    schema: &str,
    source: &dyn Source,
    checkpoints: &dyn CheckpointStore,
    tables: Vec<String>,
) -> warp_core::Result<Option<(String, Position, Option<DateTime<Utc>>)>> {
    let mut oldest: Option<(String, Position, Option<DateTime<Utc>>)> = None;
    for table in tables {
        let key = TableKey {
            schema: schema.to_owned(),
            table,
        };
        let Some(checkpoint) = checkpoints.load(&key).await? else {
            continue;
        };
        let (position, source_ts) = match checkpoint.phase {
            Phase::Streaming {
                position,
                source_ts,
                ..
            } => (position, source_ts),
            Phase::Snapshot { start, .. } => (start, None),
        };
        let older = match &oldest {
            None => true,
            Some((_, p, _)) => source.compare_positions(&position, p)? == Ordering::Less,
        };
        if older {
            oldest = Some((key.table, position, source_ts));
        }
    }
    Ok(oldest)
}

/// How long the needed position is safe, at least: the oplog's window before it, or the
/// server's expiry less the age of the position's source time (the log file holding it
/// was written at that time or later, and expiry counts from a file's last write).
fn headroom(r: &LogRetention, source_ts: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<f64> {
    if !r.held {
        return Some(0.0);
    }
    r.older_seconds.or_else(|| {
        let age = (now - source_ts?).num_milliseconds() as f64 / 1000.0;
        Some((r.retention_seconds? - age).max(0.0))
    })
}

fn publish(r: &RetentionReport) {
    let schema = r.schema.clone();
    metrics::gauge!(LOG_HELD, "schema" => schema.clone()).set(if r.retention.held {
        1.0
    } else {
        0.0
    });
    if let Some(h) = r.headroom_seconds {
        metrics::gauge!(LOG_HEADROOM_SECONDS, "schema" => schema.clone()).set(h);
    }
    if let Some(b) = r.retention.backlog_bytes {
        metrics::gauge!(LOG_BACKLOG_BYTES, "schema" => schema).set(b as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(held: bool) -> LogRetention {
        LogRetention {
            held,
            needed: "binlog file b.000002 at 4".into(),
            oldest_retained: "binlog file b.000001".into(),
            retention_seconds: Some(86_400.0),
            older_seconds: None,
            backlog_bytes: Some(10),
        }
    }

    #[test]
    fn a_report_is_published_per_schema() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let report = |schema: &str, held| RetentionReport {
            schema: schema.into(),
            table: "orders".into(),
            retention: retention(held),
            headroom_seconds: Some(if held { 5.0 } else { 0.0 }),
            checked_at: Utc::now(),
        };
        metrics::with_local_recorder(&recorder, || {
            publish(&report("shop", true));
            publish(&report("crm", false));
        });
        let text = handle.render();
        for line in [
            r#"cartridge_warp_source_log_held{schema="shop"} 1"#,
            r#"cartridge_warp_source_log_held{schema="crm"} 0"#,
            r#"cartridge_warp_source_log_headroom_seconds{schema="crm"} 0"#,
            r#"cartridge_warp_source_log_backlog_bytes{schema="shop"} 10"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn headroom_is_the_expiry_less_the_age_of_the_needed_position() {
        let now = Utc::now();
        let hour_ago = now - chrono::Duration::hours(1);
        assert_eq!(
            headroom(&retention(true), Some(hour_ago), now),
            Some(82_800.0)
        );
        assert_eq!(headroom(&retention(false), Some(hour_ago), now), Some(0.0));
        assert_eq!(
            headroom(&retention(true), None, now),
            None,
            "a copy's start has no time"
        );
        let oplog = LogRetention {
            older_seconds: Some(600.0),
            retention_seconds: None,
            ..retention(true)
        };
        assert_eq!(headroom(&oplog, None, now), Some(600.0));
        let long_ago = now - chrono::Duration::days(3);
        assert_eq!(headroom(&retention(true), Some(long_ago), now), Some(0.0));
    }
}
