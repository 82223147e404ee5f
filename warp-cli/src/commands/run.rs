//! `cartridge-warp run`.

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use warp_core::config::{ConfigOverrides, Environment, Mode};
use warp_server::{RunOptions, ServerError};

use super::{runtime, with_hint};
use crate::ConfigArg;

fn fail(e: ServerError) -> String {
    let hint = e.hint();
    with_hint(e, hint)
}

pub fn run(args: RunArgs, env: &Environment) -> Result<(), String> {
    let overrides = ConfigOverrides {
        mode: args.mode.map(Into::into),
        schema: args.schema,
    };
    let loaded = warp_server::connectors::load_config(&args.config.config, env, &overrides)
        .map_err(|e| e.to_string())?;
    let opts = RunOptions {
        dry_run: args.dry_run,
        full_resync: args.full_resync,
        ..RunOptions::default()
    };
    let rt = runtime()?;
    rt.block_on(async {
        if opts.dry_run {
            return print_plan(&loaded).await;
        }
        let warnings = warp_server::telemetry::init(&loaded.config.logging, env).map_err(fail)?;
        for w in warnings.iter().chain(&loaded.warnings) {
            tracing_warn(w);
        }
        let shutdown = CancellationToken::new();
        warp_server::runtime::cancel_on_signals(shutdown.clone());
        warp_server::run(&loaded, &opts, shutdown)
            .await
            .map_err(fail)
    })
}

fn tracing_warn(message: &str) {
    // Configuration warnings go through the log so they reach the same place as the rest.
    warp_server::telemetry::warn(message);
}

/// What background verification will do, and for a billed source what a pass costs.
fn verification_line(cfg: &warp_core::config::WarpConfig) -> String {
    let v = &cfg.verification;
    if !v.enabled_for(cfg.source.source_type) {
        return "verification: off (verification.enabled)".into();
    }
    let mut line = format!(
        "verification: on, mode {}, up to {} rows/s per replica, {} s between passes",
        v.mode.as_str(),
        v.rows_per_second.get(),
        v.pass_interval.get()
    );
    if cfg.source.source_type == warp_core::config::SourceType::Bigquery {
        line.push_str(
            "; each pass reads every table in full, billed as a full load is (see each \
             table's bytes below), so set pass_interval to what the budget allows",
        );
    }
    line
}

async fn print_plan(loaded: &warp_core::config::LoadedConfig) -> Result<(), String> {
    let plans = warp_server::runtime::plan(loaded).await.map_err(fail)?;
    println!("dry run: nothing will be written");
    println!("{}", verification_line(&loaded.config));
    for (schema, tables) in plans {
        println!("schema {schema}: {} table(s)", tables.len());
        for t in tables {
            let rows = t
                .estimated_rows
                .map_or_else(|| "unknown".into(), |n| format!("~{n}"));
            let mode = if t.snapshot {
                format!(
                    "snapshot in chunks of {} rows, {} in parallel, then stream",
                    t.snapshot_chunk_size, t.parallel_streams
                )
            } else {
                "stream from the current position (full_load_enabled: false)".into()
            };
            println!("  {}: {rows} rows; {mode}", t.table);
            if let Some(problem) = t.problem {
                println!("    cannot replicate: {problem}");
            }
            for note in t.notes {
                println!("    {note}");
            }
            for ddl in t.ddl {
                println!("    {ddl}");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Overrides `mode` from the file and environment.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// The schema to run (single mode), or the only schema to run (multi mode).
    #[arg(long)]
    schema: Option<String>,
    /// Connect, discover and print the plan (tables, estimated rows, DDL); write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-snapshot every table before streaming.
    #[arg(long)]
    full_resync: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    Single,
    Multi,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Single => Mode::Single,
            ModeArg::Multi => Mode::Multi,
        }
    }
}
