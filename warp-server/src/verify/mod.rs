//! Comparing source and destination while replication runs: `cartridge-warp verify`
//! (once, optionally repairing) and the background verification of `run`.
//!
//! Both sides are read through their own decoders (the same ones replication uses) and
//! each row is hashed in its canonical destination encoding (PostgreSQL text input for
//! the landed column types), so equal hashes mean equal rows as stored. A table is walked
//! range by range (see `walk`), so memory holds one range whatever the table's size;
//! differing ranges are narrowed by bisection. Each read takes the source first, then the
//! destination once its checkpoint passed the source's position after that read. A
//! difference counts only once it holds still: it must show in two reads `recheck_delay`
//! apart with neither side of the row changing in between; rows still moving after
//! `rounds` reads are reported as unsettled, never as mismatches.

pub mod background;
mod compare;
mod read;
mod walk;

use std::time::Duration;

use serde::Serialize;
use warp_core::config::LoadedConfig;
use warp_core::{Source, Target};

use crate::connectors::build_reader_source;
use crate::error::ServerError;
pub use compare::{Difference, Mismatch};
pub use walk::{Pace, Unpaced};

/// How `verify` behaves.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub table: Option<String>,
    pub repair: bool,
    /// Source rows per range read (memory holds one range of each side).
    pub range_rows: usize,
    /// Keys per piece of a range before bisection.
    pub range_keys: usize,
    /// Wait between reads of a suspected difference (replication catching up).
    pub recheck_delay: Duration,
    /// Reads at most, the first included.
    pub rounds: u32,
    /// How long a read waits for the destination to reach the source's position.
    pub catch_up: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            table: None,
            repair: false,
            range_rows: 5000,
            range_keys: 1000,
            recheck_delay: Duration::from_secs(5),
            rounds: 4,
            catch_up: Duration::from_secs(30),
        }
    }
}

/// One table's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub schema: String,
    pub table: String,
    pub source_rows: u64,
    pub destination_rows: u64,
    pub ranges_checked: u64,
    /// Rows that differ, confirmed (after `--repair`: those the repair could not fix).
    pub mismatched_rows: u64,
    pub mismatched_ranges: u64,
    /// The first of the mismatched ranges.
    pub mismatches: Vec<Mismatch>,
    /// Whether rows the destination keeps and the source no longer has were looked for
    /// (a source that cannot look keys up leaves them unchecked).
    pub extra_rows_checked: bool,
    /// Rows still changing on either side at the last read.
    pub unsettled_rows: u64,
    pub repaired: Option<warp_core::Repaired>,
    /// Why the table could not be compared.
    pub error: Option<String>,
}

impl TableReport {
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            source_rows: 0,
            destination_rows: 0,
            ranges_checked: 0,
            mismatched_rows: 0,
            mismatched_ranges: 0,
            mismatches: Vec::new(),
            extra_rows_checked: true,
            unsettled_rows: 0,
            repaired: None,
            error: None,
        }
    }

    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.mismatched_rows == 0
    }
}

/// Verifies `schema` (one table with `opts.table`).
pub async fn verify(
    loaded: &LoadedConfig,
    schema: &str,
    opts: &VerifyOptions,
) -> Result<Vec<TableReport>, ServerError> {
    let cfg = &loaded.config;
    let resolved = cfg
        .schemas_to_run(Some(schema))
        .into_iter()
        .find(|s| s.name == schema)
        .ok_or_else(|| {
            ServerError::Usage(format!("schema {schema} is not in the configuration"))
        })?;
    // A reader of its own: never the replicas' binlog ids.
    let source = build_reader_source(&cfg.source, "verify", &resolved)?;
    let dest = crate::connectors::build_sink(&cfg.destination)?;
    let tables: Vec<_> = source
        .discover(&resolved)
        .await?
        .into_iter()
        .filter(|t| resolved.filter.includes(&t.id.name))
        .filter(|t| opts.table.as_ref().is_none_or(|only| *only == t.id.name))
        .collect();
    if let Some(only) = &opts.table {
        if tables.is_empty() {
            return Err(ServerError::Usage(format!(
                "table {only} is not replicated by schema {schema}"
            )));
        }
    }
    let mut reports = Vec::new();
    for t in tables {
        let target = Target::new(&resolved, &t.id);
        let mut report = TableReport::new(schema, &t.id.name);
        let read = resolved.table(&t.id.name).read_settings();
        if let Err(e) = table(source.as_ref(), &dest, &target, read, opts, &mut report).await {
            report.error = Some(warp_core::mask_secrets(&e.to_string()).into_owned());
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn table(
    source: &dyn Source,
    dest: &warp_core::Destination,
    target: &Target,
    read: warp_core::ReadSettings,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), warp_core::Error> {
    let (landed, read) = read::landed_table(dest, target, read).await?;
    let reader = read::Reader::new(source, dest, target, &landed, read)?;
    walk::table(&reader, opts, &Unpaced, report).await?;
    Ok(())
}

/// The reports as Prometheus text, for a node exporter's textfile collector (verify runs
/// as a job, so nothing would be left to scrape).
pub fn metrics_text(reports: &[TableReport]) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for r in reports {
            publish(r, false);
        }
    });
    handle.render()
}

/// Sets a table's `cartridge_warp_verify_*` gauges from `report` in the installed
/// recorder; `background`: a pass of `run`'s verification, which also counts passes.
fn publish(report: &TableReport, background: bool) {
    use metrics::{counter, gauge};
    use warp_core::metrics as m;
    let r = report;
    let labels = [("schema", r.schema.clone()), ("table", r.table.clone())];
    gauge!(m::VERIFY_MISMATCHED_ROWS, &labels).set(r.mismatched_rows as f64);
    gauge!(m::VERIFY_MISMATCHED_RANGES, &labels).set(r.mismatched_ranges as f64);
    gauge!(m::VERIFY_UNSETTLED_ROWS, &labels).set(r.unsettled_rows as f64);
    gauge!(m::VERIFY_SOURCE_ROWS, &labels).set(r.source_rows as f64);
    gauge!(m::VERIFY_DESTINATION_ROWS, &labels).set(r.destination_rows as f64);
    gauge!(m::VERIFY_FAILED, &labels).set(if r.error.is_some() { 1.0 } else { 0.0 });
    if let Some(done) = &r.repaired {
        gauge!(m::VERIFY_REPAIRED_ROWS, &labels).set((done.written + done.deleted) as f64);
    }
    if background && r.error.is_none() {
        counter!(m::VERIFY_PASSES_TOTAL, &labels).increment(1);
        counter!(m::VERIFY_ROWS_TOTAL, &labels).increment(r.source_rows + r.destination_rows);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(m::VERIFY_LAST_RUN_TIMESTAMP_SECONDS, &labels).set(now);
}
