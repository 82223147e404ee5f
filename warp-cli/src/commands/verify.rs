//! `cartridge-warp verify`.

use std::path::PathBuf;

use clap::Args;
use std::fmt::Write as _;

use warp_core::config::{ConfigOverrides, Environment};

use super::env_help::write_stdout;
use super::{runtime, with_hint};
use crate::ConfigArg;

pub fn run(args: &VerifyArgs, env: &Environment) -> Result<(), String> {
    use warp_server::verify::{metrics_text, verify, VerifyOptions};

    let loaded =
        warp_server::connectors::load_config(&args.config.config, env, &ConfigOverrides::default())
            .map_err(|e| e.to_string())?;
    if !(args.recheck_delay.is_finite() && args.recheck_delay >= 0.0) {
        return Err("--recheck-delay: expected seconds (a number ≥ 0)".into());
    }
    let opts = VerifyOptions {
        table: args.table.clone(),
        repair: args.repair,
        range_keys: args.range_keys.max(1),
        recheck_delay: std::time::Duration::from_secs_f64(args.recheck_delay),
        ..VerifyOptions::default()
    };
    let reports = runtime()?
        .block_on(verify(&loaded, &args.schema, &opts))
        .map_err(|e| with_hint(&e, e.hint()))?;
    if let Some(path) = &args.metrics_file {
        std::fs::write(path, metrics_text(&reports))
            .map_err(|e| format!("--metrics-file {}: {e}", path.display()))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        write_stdout(&format!("{text}\n"))?;
    } else {
        write_stdout(&text(&reports))?;
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.is_clean())
        .map(|r| format!("{}.{}", r.schema, r.table))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "source and destination differ in {}",
            bad.join(", ")
        ))
    }
}

fn text(reports: &[warp_server::verify::TableReport]) -> String {
    let mut out = format!(
        "{:<28} {:>10} {:>10} {:>7} {:>11}  {}\n",
        "TABLE", "SOURCE", "DEST", "RANGES", "MISMATCHED", "RESULT"
    );
    for r in reports {
        let rows: u64 = r
            .mismatches
            .iter()
            .map(|m| m.missing + m.extra + m.different)
            .sum();
        let result = match (&r.error, rows) {
            (Some(e), _) => format!("not compared: {e}"),
            (None, 0) if r.unsettled_rows > 0 => {
                format!(
                    "equal; {} rows still changing were not judged",
                    r.unsettled_rows
                )
            }
            (None, 0) => "equal".into(),
            (None, n) => format!("{n} rows differ in {} ranges", r.mismatches.len()),
        };
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>7} {:>11}  {}",
            format!("{}.{}", r.schema, r.table),
            r.source_rows,
            r.destination_rows,
            r.ranges_checked,
            rows,
            result
        );
        if let Some(done) = &r.repaired {
            let _ = writeln!(
                out,
                "    repaired: {} written, {} deleted, {} left to the replicator (changed meanwhile)",
                done.written, done.deleted, done.skipped
            );
        }
        for m in &r.mismatches {
            let _ = writeln!(
                out,
                "    keys {} .. {}: {} missing, {} extra, {} different (source {} rows, destination {}): {}",
                m.first_key,
                m.last_key,
                m.missing,
                m.extra,
                m.different,
                m.source_rows,
                m.destination_rows,
                m.keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
        }
    }
    out
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: String,
    /// Only this table.
    #[arg(long)]
    table: Option<String>,
    /// Re-copy the rows of the mismatching ranges from the source (rows the replicator
    /// changes meanwhile are left to it).
    #[arg(long)]
    repair: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Keys per range before bisection narrows a mismatching one.
    #[arg(long, default_value_t = 1000)]
    range_keys: usize,
    /// Seconds between reads of a suspected difference (replication catching up).
    #[arg(long, default_value_t = 5.0)]
    recheck_delay: f64,
    /// Also write the results as Prometheus text (textfile collector) to this file.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
}
