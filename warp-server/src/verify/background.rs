//! Background verification in `run`: each replica compares the tables it runs with the
//! source, one pass after another, within a budget of rows per second, leaving a table
//! that copies or lags to a later pass (its stream is never held back). Results go to the status board
//! (so `/status`, the status page and `status` show them) and to `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warp_core::config::{ResolvedSchema, VerificationConfig, VerificationMode};
use warp_core::{
    Destination, PipelineControl, Source, StatusBoard, TableKey, TableSchema, TableState,
    TableStatus, Target, VerificationStatus,
};

use super::read::Reader;
use super::{publish, walk, Pace, TableReport, VerifyOptions};

/// Starts a verifier per schema of `pipelines` when the configuration turns it on for
/// the source (`verification.enabled`, by default on except for BigQuery).
pub fn start(
    loaded: &warp_core::config::LoadedConfig,
    pipelines: &[warp_core::Pipeline],
    destination: &Destination,
    owner: &str,
    shutdown: &CancellationToken,
) -> Result<(), crate::ServerError> {
    let cfg = &loaded.config;
    if !cfg.verification.enabled_for(cfg.source.source_type) {
        return Ok(());
    }
    let schemas = cfg.schemas_to_run(loaded.schema_selection.as_deref());
    for (pipeline, schema) in pipelines.iter().zip(schemas) {
        // A reader of its own: never the replicas' binlog ids or connections.
        let source = crate::connectors::build_reader_source(
            &cfg.source,
            &format!("{owner}-verify"),
            &schema,
        )?;
        let verifier = Verifier {
            schema,
            source,
            dest: destination.clone(),
            board: pipeline.status(),
            control: pipeline.control(),
            settings: cfg.verification.clone(),
        };
        tokio::spawn(verifier.run(shutdown.clone()));
    }
    Ok(())
}

/// How often a waiting table is looked at again.
const WAIT_STEP: Duration = Duration::from_secs(1);
/// How long a walk waits for its table to catch up before it gives up until next pass.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How soon a pass that found no table of this replica's is tried again.
const IDLE_STEP: Duration = Duration::from_secs(5);

/// One schema's background verifier. It has a source reader of its own and shares the
/// destination's pool, and reads through one connection of each at a time.
pub struct Verifier {
    pub schema: ResolvedSchema,
    pub source: Arc<dyn Source>,
    pub dest: Destination,
    pub board: StatusBoard,
    pub control: PipelineControl,
    pub settings: VerificationConfig,
}

impl Verifier {
    /// Passes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(schema = %self.schema.name, mode = self.settings.mode.as_str(), "background verification on");
        let mut published = BTreeSet::new();
        loop {
            let verified = self.pass(&shutdown, &mut published).await;
            // A replica that runs no table yet (leases still being taken) looks again soon.
            let pause = if verified == 0 {
                IDLE_STEP.min(self.settings.pass_interval.as_duration())
            } else {
                self.settings.pass_interval.as_duration()
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            table: None,
            repair: self.settings.mode == VerificationMode::Repair,
            range_rows: self.settings.range_rows.as_usize(),
            recheck_delay: self.settings.recheck_delay.as_duration(),
            ..VerifyOptions::default()
        }
    }

    fn key(&self, table: &str) -> TableKey {
        TableKey {
            schema: self.schema.name.clone(),
            table: table.to_owned(),
        }
    }

    /// One pass over the tables this replica runs now; returns how many it verified.
    /// `published`: tables whose gauges this replica set; those it no longer runs are
    /// cleared (their owner reports them).
    async fn pass(&self, shutdown: &CancellationToken, published: &mut BTreeSet<String>) -> usize {
        let owned: BTreeSet<String> = self.control.tables().into_iter().collect();
        for gone in published.difference(&owned) {
            publish(&TableReport::new(&self.schema.name, gone), false);
        }
        published.retain(|t| owned.contains(t));
        let tables = match self.source.discover(&self.schema).await {
            Ok(t) => t,
            Err(e) => {
                warn!(schema = %self.schema.name, error = %e, "verification: source not listed; next pass retries");
                return 0;
            }
        };
        let opts = self.options();
        let mut verified = 0;
        for table in tables.iter().filter(|t| owned.contains(&t.id.name)) {
            if shutdown.is_cancelled() {
                return verified;
            }
            let key = self.key(&table.id.name);
            let gate = Gate {
                verifier: self,
                key: key.clone(),
                shutdown,
            };
            let started = Instant::now();
            let mut report = TableReport::new(&self.schema.name, &table.id.name);
            match self.table(table, &opts, &gate, &mut report).await {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    report.error = Some(warp_core::mask_secrets(&e.to_string()).into_owned());
                }
            }
            verified += 1;
            published.insert(table.id.name.clone());
            publish(&report, true);
            let billed = self.source.bytes_processed(&table.id.name);
            self.board.amend(&key, |s| {
                let v = s.verification.get_or_insert_with(Default::default);
                record(v, &report, started.elapsed());
                v.source_bytes = billed;
            });
            if report.mismatched_rows > 0 {
                warn!(table = %key, rows = report.mismatched_rows, "verification: source and destination differ");
            }
        }
        verified
    }

    async fn table(
        &self,
        table: &TableSchema,
        opts: &VerifyOptions,
        gate: &Gate<'_>,
        report: &mut TableReport,
    ) -> Result<bool, warp_core::Error> {
        // A table copying, retrying or lagging is skipped for this pass rather than
        // waited for: it must not hold the replica's other tables back. (The landing
        // table exists once the table streams.)
        if !gate.ready_now() {
            return Ok(false);
        }
        let target = Target::new(&self.schema, &table.id);
        let read = self.schema.table(&table.id.name).read_settings();
        let (landed, read) = super::read::landed_table(&self.dest, &target, read).await?;
        let reader = Reader::new(self.source.as_ref(), &self.dest, &target, &landed, read)?;
        walk::table(&reader, opts, gate, report).await
    }
}

/// A pass's result into the table's verification status.
fn record(v: &mut VerificationStatus, report: &TableReport, took: Duration) {
    let now = Utc::now();
    v.state = "idle".into();
    if let Some(e) = &report.error {
        v.state = "failed".into();
        v.last_error = Some(e.clone());
        return;
    }
    v.last_error = None;
    v.passes += 1;
    v.last_pass_at = Some(now);
    v.last_pass_seconds = Some(took.as_secs_f64());
    v.rows_compared = report.source_rows;
    v.ranges = report.ranges_checked;
    v.mismatched_rows = report.mismatched_rows;
    v.mismatched_ranges = report.mismatched_ranges;
    v.unsettled_rows = report.unsettled_rows;
    v.extra_rows_checked = report.extra_rows_checked;
    if let Some(r) = &report.repaired {
        v.repaired_rows += r.written + r.deleted;
    }
    if report.mismatched_rows > 0 {
        v.last_mismatch_at = Some(now);
        v.last_mismatch = Some(summary(report));
    }
}

/// "3 rows differ (1 missing, 1 extra, 1 different) in 2 ranges; keys: 42, 700, 999999".
fn summary(report: &TableReport) -> String {
    let (mut missing, mut extra, mut different) = (0, 0, 0);
    for m in &report.mismatches {
        (missing, extra, different) = (
            missing + m.missing,
            extra + m.extra,
            different + m.different,
        );
    }
    // One key of every range first, so each range shows however many keys one holds.
    let firsts = report.mismatches.iter().filter_map(|m| m.keys.first());
    let rest = report.mismatches.iter().flat_map(|m| m.keys.iter().skip(1));
    let keys: Vec<String> = firsts.chain(rest).take(10).map(key_text).collect();
    let rows = match report.mismatched_rows {
        1 => "1 row differs".to_owned(),
        n => format!("{n} rows differ"),
    };
    let ranges = match report.mismatched_ranges {
        1 => "1 range".to_owned(),
        n => format!("{n} ranges"),
    };
    format!(
        "{rows} ({missing} missing, {extra} extra, {different} different) in {ranges}; keys: {}",
        keys.join(", ")
    )
}

/// A key as a person reads it: `42`, `abc`, `[1, "x"]` (values without their type tags).
fn key_text(key: &serde_json::Value) -> String {
    let plain = |v: &serde_json::Value| match v.get("v").unwrap_or(v) {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match key.as_array() {
        Some(parts) => format!(
            "({})",
            parts.iter().map(plain).collect::<Vec<_>>().join(", ")
        ),
        None => plain(key),
    }
}

/// Paces a table's walk: the budget, and waits while the table copies or lags.
struct Gate<'a> {
    verifier: &'a Verifier,
    key: TableKey,
    shutdown: &'a CancellationToken,
}

impl Gate<'_> {
    /// Whether the table may be read now (it streams, within `max_lag`); marks it
    /// `verifying` or `waiting`. `None`: this replica no longer runs it.
    fn check(&self) -> Option<bool> {
        let status = self.verifier.board.get(&self.key)?;
        let ready = may_read(&status, self.verifier.settings.max_lag.get(), Utc::now());
        self.mark(if ready { "verifying" } else { "waiting" });
        Some(ready)
    }

    fn ready_now(&self) -> bool {
        !self.shutdown.is_cancelled() && self.check() == Some(true)
    }

    fn mark(&self, state: &str) {
        self.verifier.board.amend(&self.key, |s| {
            s.verification.get_or_insert_with(Default::default).state = state.into();
        });
    }
}

/// A table is read while it streams within `max_lag` seconds. A lag not known yet
/// (nothing applied since the start, not even a heartbeat) is a table that may still be
/// catching up: it waits.
fn may_read(status: &TableStatus, max_lag: f64, now: chrono::DateTime<Utc>) -> bool {
    let lag = status.lag_seconds(now).unwrap_or(f64::INFINITY);
    status.state == TableState::Streaming && lag <= max_lag
}

impl Pace for Gate<'_> {
    fn rows_per_second(&self) -> Option<f64> {
        Some(self.verifier.settings.rows_per_second.get() as f64)
    }

    /// Waits while the table lags or retries, at most `WAIT_LIMIT`: then the walk is
    /// given up until the next pass, so one table's trouble never holds the others back.
    async fn ready(&self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            if self.shutdown.is_cancelled() {
                return false;
            }
            match self.check() {
                Some(true) => return true,
                // The table went to another replica (or was dropped): its owner verifies it.
                None => return false,
                Some(false) if tokio::time::Instant::now() >= deadline => return false,
                Some(false) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(WAIT_STEP) => {}
                () = self.shutdown.cancelled() => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming(last_source_ts: Option<chrono::DateTime<Utc>>) -> TableStatus {
        let board = StatusBoard::default();
        let key = TableKey {
            schema: "s".into(),
            table: "t".into(),
        };
        board.update(&key, |s| {
            s.state = TableState::Streaming;
            s.last_source_ts = last_source_ts;
        });
        board.get(&key).unwrap()
    }

    #[test]
    fn a_table_is_read_only_while_it_streams_with_a_known_lag_within_the_limit() {
        let now = Utc::now();
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        assert!(may_read(&streaming(ago(3)), 10.0, now));
        assert!(!may_read(&streaming(ago(30)), 10.0, now), "lagging");
        assert!(
            !may_read(&streaming(None), 10.0, now),
            "lag unknown since start"
        );
        let mut copying = streaming(ago(0));
        copying.state = TableState::Snapshotting;
        assert!(!may_read(&copying, 10.0, now), "copying");
    }
}
