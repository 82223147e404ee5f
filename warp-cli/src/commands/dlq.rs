//! `cartridge-warp dlq list|replay|discard`.

use clap::{Args, Subcommand};
use std::fmt::Write as _;

use warp_core::config::{ConfigOverrides, Environment};
use warp_core::DeadLetter;
use warp_server::dlq::DlqFilter;

use super::env_help::write_stdout;
use super::{runtime, with_hint};
use crate::ConfigArg;

pub fn run(cmd: DlqCommand, env: &Environment) -> Result<(), String> {
    let (args, action) = match cmd {
        DlqCommand::List(a) => (a, "list"),
        DlqCommand::Replay(a) => (a, "replay"),
        DlqCommand::Discard(a) => (a, "discard"),
    };
    let loaded =
        warp_server::connectors::load_config(&args.config.config, env, &ConfigOverrides::default())
            .map_err(|e| e.to_string())?;
    let narrowed = !args.ids.is_empty() || args.table.is_some();
    if action != "list" && !narrowed && !args.all {
        return Err(format!(
            "dlq {action}: name entries with --id or --table, or pass --all"
        ));
    }
    let filter = DlqFilter {
        ids: args.ids.clone(),
        schema: args.schema.clone(),
        table: args.table.clone(),
        status: match args.status.as_str() {
            "all" => None,
            s => Some(s.parse().map_err(|e| format!("--status {e} (or all)"))?),
        },
    };
    let rt = runtime()?;
    let cfg = &loaded.config;
    let fail = |e: warp_server::ServerError| with_hint(&e, e.hint());
    match action {
        "list" => {
            let entries = rt
                .block_on(warp_server::dlq::list(cfg, &filter))
                .map_err(fail)?;
            if args.json {
                return write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?
                ));
            }
            print_list(&entries, &args)
        }
        "discard" => {
            let n = rt
                .block_on(warp_server::dlq::discard(cfg, &filter))
                .map_err(fail)?;
            write_stdout(&format!("{n} dead letter(s) discarded\n"))
        }
        _ => {
            let report = rt
                .block_on(warp_server::dlq::replay(cfg, &filter))
                .map_err(fail)?;
            if args.json {
                return write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                ));
            }
            let mut out = format!(
                "replayed {}, superseded by newer data {}, still failing {}\n",
                report.replayed.len(),
                report.superseded.len(),
                report.failed.len()
            );
            for (id, error) in &report.failed {
                let _ = writeln!(out, "  #{id}: {error}");
            }
            write_stdout(&out)
        }
    }
}

fn print_list(entries: &[DeadLetter], args: &DlqArgs) -> Result<(), String> {
    if entries.is_empty() {
        return write_stdout(&format!("no {} dead letters\n", args.status));
    }
    let mut out = format!(
        "{:>6}  {:<28} {:<10} {:>8}  {:<20}  ERROR\n",
        "ID", "TABLE", "STATUS", "ATTEMPTS", "CREATED"
    );
    for e in entries {
        let _ = writeln!(
            out,
            "{:>6}  {:<28} {:<10} {:>8}  {:<20}  {}",
            e.id,
            format!("{}.{}", e.schema, e.table),
            e.status.as_str(),
            e.attempts,
            e.created_at.format("%Y-%m-%dT%H:%M:%S"),
            e.error
        );
    }
    write_stdout(&out)
}

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters (pending by default).
    List(DlqArgs),
    /// Re-apply pending dead letters after fixing their cause; a letter older than the
    /// destination row is marked superseded instead.
    Replay(DlqArgs),
    /// Mark pending dead letters discarded.
    Discard(DlqArgs),
}

#[derive(Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: Option<String>,
    #[arg(long)]
    table: Option<String>,
    /// Only these entries (repeatable).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// list: pending, replayed, discarded or all.
    #[arg(long, default_value = "pending")]
    status: String,
    /// replay/discard: act on every pending entry (when no --id/--table narrows it).
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}
