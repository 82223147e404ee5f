//! `cartridge-warp status`.

use std::fmt::Write as _;

use warp_core::config::{load_file, ConfigOverrides, Environment};

use super::env_help::write_stdout;
use super::{runtime, with_hint};
use crate::{ResyncArgs, StatusArgs};

pub fn run(args: &StatusArgs, env: &Environment) -> Result<(), String> {
    let loaded = load_file(&args.config.config, env, &ConfigOverrides::default())
        .map_err(|e| e.to_string())?;
    let rows = runtime()?
        .block_on(warp_server::status::read(&loaded.config))
        .map_err(|e| with_hint(&e, e.hint()))?;
    if args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        return write_stdout(&format!("{text}\n"));
    }
    if rows.is_empty() {
        return write_stdout("no tables yet: nothing has run against this destination\n");
    }
    let s = |r: &serde_json::Value, k: &str| match &r[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(v) => v.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "{:<28} {:<13} {:<10} {:>10} {:>8} {:<28} {:>4}  {}\n",
        "TABLE", "STATE", "PHASE", "ROWS", "LAG(s)", "OWNER", "DLQ", "POSITION"
    );
    for r in &rows {
        let lag = r["lag_seconds"]
            .as_f64()
            .map_or_else(|| "-".into(), |l| format!("{l:.1}"));
        let _ = writeln!(
            out,
            "{:<28} {:<13} {:<10} {:>10} {:>8} {:<28} {:>4}  {}",
            format!("{}.{}", s(r, "schema"), s(r, "table")),
            s(r, "state"),
            s(r, "phase"),
            s(r, "rows_copied"),
            lag,
            s(r, "owner"),
            s(r, "dead_letters"),
            s(r, "position")
        );
        if let serde_json::Value::String(e) = &r["last_error"] {
            let _ = writeln!(out, "    last error: {e}");
            if let serde_json::Value::String(h) = &r["hint"] {
                let _ = writeln!(out, "    hint: {h}");
            }
        }
    }
    write_stdout(&out)
}

/// `cartridge-warp resync`.
pub fn resync(args: &ResyncArgs, env: &Environment) -> Result<(), String> {
    let loaded = load_file(&args.config.config, env, &ConfigOverrides::default())
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
