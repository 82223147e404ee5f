//! `cartridge-warp status`.

use clap::Args;
use std::fmt::Write as _;

use warp_core::config::{ConfigOverrides, Environment};

use super::env_help::write_stdout;
use super::{runtime, with_hint};
use crate::ConfigArg;

pub fn run(args: &StatusArgs, env: &Environment) -> Result<(), String> {
    let loaded =
        warp_server::connectors::load_config(&args.config.config, env, &ConfigOverrides::default())
            .map_err(|e| e.to_string())?;
    if args.json {
        let rows = runtime()?
            .block_on(warp_server::status::read(&loaded.config))
            .map_err(|e| with_hint(&e, e.hint()))?;
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        return write_stdout(&format!("{text}\n"));
    }
    let (rows, retention) = runtime()?
        .block_on(warp_server::status::read_with_retention(&loaded.config))
        .map_err(|e| with_hint(&e, e.hint()))?;
    if rows.is_empty() {
        return write_stdout("no tables yet: nothing has run against this destination\n");
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut out = format!(
        "{:<28} {:<13} {:<10} {:>10} {:>8} {:<28} {:>4}  {}\n",
        "TABLE", "STATE", "PHASE", "ROWS", "LAG(s)", "OWNER", "DLQ", "POSITION"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<28} {:<13} {:<10} {:>10} {:>8} {:<28} {:>4}  {}",
            format!("{}.{}", r.schema, r.table),
            dash(r.state.map(|s| s.as_str().to_owned())),
            dash(r.phase.map(|p| p.as_str().to_owned())),
            dash(r.rows_copied.map(|n| n.to_string())),
            dash(r.lag_seconds.map(|l| format!("{l:.1}"))),
            dash(r.owner.clone()),
            r.dead_letters,
            dash(r.position.as_ref().map(ToString::to_string))
        );
        if let Some(b) = r.source_bytes {
            let _ = writeln!(out, "    source bytes processed: {b}");
        }
        if let Some(e) = &r.last_error {
            let _ = writeln!(out, "    last error: {e}");
            if let Some(h) = &r.hint {
                let _ = writeln!(out, "    hint: {h}");
            }
        }
    }
    for (schema, report) in retention {
        let _ = writeln!(out, "log retention ({schema}): {}", retention_line(report));
    }
    write_stdout(&out)
}

/// One schema's log retention as `status` prints it.
fn retention_line(report: Result<warp_server::retention::RetentionReport, String>) -> String {
    let r = match report {
        Ok(r) => r,
        Err(why) => return why,
    };
    let l = &r.retention;
    if !l.held {
        return format!(
            "NOT HELD: {} (table {}) was purged; the server keeps {} on: resync the tables behind it",
            l.needed, r.table, l.oldest_retained
        );
    }
    let span = |s: f64| {
        if s >= 86_400.0 {
            format!("{:.1} d", s / 86_400.0)
        } else {
            format!("{:.1} h", s / 3_600.0)
        }
    };
    let mut line = format!(
        "held: the oldest position needed is {} (table {})",
        l.needed, r.table
    );
    if let Some(h) = r.headroom_seconds {
        let _ = write!(line, ", safe for at least {}", span(h));
    }
    if let Some(b) = l.backlog_bytes {
        let _ = write!(line, ", {b} bytes to read");
    }
    let _ = write!(line, "; the server keeps {} on", l.oldest_retained);
    if let Some(e) = l.retention_seconds {
        let _ = write!(line, " (expiry {})", span(e));
    }
    line
}

/// `cartridge-warp resync`.
pub fn resync(args: &ResyncArgs, env: &Environment) -> Result<(), String> {
    let loaded =
        warp_server::connectors::load_config(&args.config.config, env, &ConfigOverrides::default())
            .map_err(|e| e.to_string())?;
    if !loaded.config.schemas.is_empty()
        && !loaded.config.schemas.iter().any(|s| s.name == args.schema)
    {
        return Err(format!(
            "--schema {}: not a schema of {}",
            args.schema, loaded.origin
        ));
    }
    let id = runtime()?
        .block_on(warp_server::status::request_resync(
            &loaded.config,
            &args.schema,
            &args.table,
        ))
        .map_err(|e| with_hint(&e, e.hint()))?;
    write_stdout(&format!(
        "resync of {}.{} requested (signal {id}); the running replicator picks it up within a few seconds\n",
        args.schema, args.table
    ))
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ResyncArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: String,
    #[arg(long)]
    table: String,
}
