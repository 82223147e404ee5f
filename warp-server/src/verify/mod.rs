//! `cartridge-warp verify`: compares every table of a schema between source and
//! destination while replication runs, reports the key ranges that differ, and with
//! `--repair` re-copies only the rows in them.
//!
//! Both sides are read through their own decoders (the same ones replication uses) and
//! each row is hashed in its canonical destination encoding (PostgreSQL text input for
//! the landed column types), so equal hashes mean equal rows as stored. Range checksums
//! over the sorted key union are narrowed by bisection. Each read takes the source first,
//! then the destination once its checkpoint passed the source's position after that
//! read. A difference counts only once it holds still: it must show in two reads
//! `recheck_delay` apart with neither side of the row changing in between; rows still
//! moving after `rounds` reads are reported as unsettled, never as mismatches.

mod compare;
mod read;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use warp_core::config::LoadedConfig;
use warp_core::{OrdKey, Source, Target};

use crate::connectors::build_reader_source;
use crate::error::ServerError;
use compare::{differences, narrow};
pub use compare::{Difference, Mismatch};

/// How `verify` behaves.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub table: Option<String>,
    pub repair: bool,
    /// Keys per top-level range before bisection.
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
    /// Confirmed differences (after `--repair`: those the repair could not fix).
    pub mismatches: Vec<Mismatch>,
    /// Rows still changing on either side at the last read.
    pub unsettled_rows: u64,
    pub repaired: Option<warp_sink_postgres::verify::Repaired>,
    /// Why the table could not be compared.
    pub error: Option<String>,
}

impl TableReport {
    fn new(schema: &str, table: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            source_rows: 0,
            destination_rows: 0,
            ranges_checked: 0,
            mismatches: Vec::new(),
            unsettled_rows: 0,
            repaired: None,
            error: None,
        }
    }

    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
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
    let sink = warp_sink_postgres::PostgresSink::connect_lazy(&cfg.destination)
        .map_err(warp_core::Error::from)?;
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
        if let Err(e) = table(source.as_ref(), &sink, &target, read, opts, &mut report).await {
            report.error = Some(warp_core::mask_secrets(&e.to_string()).into_owned());
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn table(
    source: &dyn Source,
    sink: &warp_sink_postgres::PostgresSink,
    target: &Target,
    read: warp_core::ReadSettings,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), warp_core::Error> {
    let landed = sink.landed_schema(target).await?;
    let reader = read::Reader::new(source, sink, target, &landed, read)?;
    let (mut src, mut dst) = reader.both(&BTreeSet::new(), opts.catch_up).await?;
    let mut suspects: BTreeSet<OrdKey> = differences(&src, &dst).into_keys().collect();
    let mut confirmed = BTreeSet::new();
    for _ in 1..opts.rounds.max(2) {
        if suspects.is_empty() {
            break;
        }
        tokio::time::sleep(opts.recheck_delay).await;
        // Source rows are kept for every key still in question: a repair needs them.
        let watched: BTreeSet<OrdKey> = suspects.union(&confirmed).cloned().collect();
        let (s2, d2) = reader.both(&watched, opts.catch_up).await?;
        let now: BTreeSet<OrdKey> = differences(&s2, &d2)
            .into_keys()
            .filter(|k| suspects.contains(k) || confirmed.contains(k))
            .collect();
        // Still different, and neither side moved since the last read: a real mismatch.
        let held = |k: &OrdKey| src.same(&s2, k) && dst.same(&d2, k);
        confirmed = now.iter().filter(|k| held(k)).cloned().collect();
        suspects = now.difference(&confirmed).cloned().collect();
        (src, dst) = (s2, d2);
    }
    report.unsettled_rows = suspects.len() as u64;
    if opts.repair && !confirmed.is_empty() {
        let fixes = read::fixes(&src, &dst, &confirmed);
        report.repaired = Some(sink.repair(target, &landed, &fixes).await?);
        // Read again: whatever still differs among the repaired rows stays reported.
        (src, dst) = reader.both(&BTreeSet::new(), opts.catch_up).await?;
        confirmed = differences(&src, &dst)
            .into_keys()
            .filter(|k| confirmed.contains(k))
            .collect();
    }
    report.source_rows = src.live_rows();
    report.destination_rows = dst.live_rows();
    // Only confirmed differences count: the others are made equal before narrowing.
    dst.settle(&src, &confirmed);
    let (top, ranges) = narrow(&src, &dst, opts.range_keys);
    report.ranges_checked = top;
    report.mismatches = ranges;
    Ok(())
}

/// The reports as Prometheus text, for a node exporter's textfile collector (verify runs
/// as a job, so nothing would be left to scrape).
pub fn metrics_text(reports: &[TableReport]) -> String {
    use metrics::gauge;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for r in reports {
            let labels = [("schema", r.schema.clone()), ("table", r.table.clone())];
            let rows: u64 = r
                .mismatches
                .iter()
                .map(|m| m.missing + m.extra + m.different)
                .sum();
            gauge!("cartridge_warp_verify_mismatched_rows", &labels).set(rows as f64);
            gauge!("cartridge_warp_verify_mismatched_ranges", &labels)
                .set(r.mismatches.len() as f64);
            gauge!("cartridge_warp_verify_unsettled_rows", &labels).set(r.unsettled_rows as f64);
            gauge!("cartridge_warp_verify_source_rows", &labels).set(r.source_rows as f64);
            gauge!("cartridge_warp_verify_destination_rows", &labels)
                .set(r.destination_rows as f64);
            gauge!("cartridge_warp_verify_failed", &labels).set(if r.error.is_some() {
                1.0
            } else {
                0.0
            });
            if let Some(done) = &r.repaired {
                gauge!("cartridge_warp_verify_repaired_rows", &labels)
                    .set((done.written + done.deleted) as f64);
            }
            gauge!("cartridge_warp_verify_last_run_timestamp_seconds", &labels).set(now);
        }
    });
    handle.render()
}
