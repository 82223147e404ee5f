//! `cartridge-warp validate`.

use clap::Args;
use std::time::Duration;

use warp_core::config::{ConfigOverrides, Environment, LoadedConfig};

use super::{runtime, with_hint};
use crate::ConfigArg;

pub fn run(args: &ValidateArgs, env: &Environment) -> Result<(), String> {
    let loaded =
        warp_server::connectors::load_config(&args.config.config, env, &ConfigOverrides::default())
            .map_err(|e| e.to_string())?;
    print_summary(&loaded);
    for warning in &loaded.warnings {
        println!("warning: {warning}");
    }
    if args.check_connections {
        runtime()?.block_on(check_connections(&loaded))?;
    }
    Ok(())
}

fn print_summary(loaded: &LoadedConfig) {
    let cfg = &loaded.config;
    println!("configuration OK: {}", loaded.origin);
    println!("  mode: {}", cfg.mode.as_str());
    println!(
        "  source: {} ({}), change detection: {}",
        cfg.source.source_type.as_str(),
        cfg.source
            .connection_string
            .as_ref()
            .map_or_else(|| "no connection string".into(), ToString::to_string),
        cfg.source.strategy().as_str()
    );
    println!(
        "  destination: postgresql ({}), metadata schema {}",
        cfg.destination
            .connection_string
            .as_ref()
            .map_or_else(|| "-".into(), ToString::to_string),
        cfg.destination.metadata_schema
    );
    for schema in cfg.schemas_to_run(loaded.schema_selection.as_deref()) {
        let configured: Vec<&str> = schema.configured_tables().collect();
        println!(
            "  schema {} → postgresql schema {} (source database {}); tables configured: {}",
            schema.name,
            schema.destination_schema,
            schema.source_database,
            if configured.is_empty() {
                "none (all tables replicate with defaults)".to_owned()
            } else {
                configured.join(", ")
            }
        );
    }
}

/// What the source says about the replicated tables that the replicator cannot do for
/// them (e.g. foreign-key actions from a parent in another database), one line each.
async fn table_notes(
    source: &dyn warp_core::Source,
    schema: &warp_core::config::ResolvedSchema,
) -> Vec<String> {
    let tables = match source.discover(schema).await {
        Ok(t) => t,
        Err(e) => return vec![format!("tables not listed: {e}")],
    };
    let mut notes = Vec::new();
    for t in tables.iter().filter(|t| schema.filter.includes(&t.id.name)) {
        let read = schema.table(&t.id.name).read_settings();
        match source.plan_notes(t, &read, false).await {
            Ok(lines) => notes.extend(lines.into_iter().map(|l| format!("{}: {l}", t.id.name))),
            Err(e) => notes.push(format!("{}: {e}", t.id.name)),
        }
    }
    notes
}

async fn check_connections(loaded: &LoadedConfig) -> Result<(), String> {
    let cfg = &loaded.config;
    let timeout = cfg
        .performance
        .connection_timeout
        .as_duration()
        .max(Duration::from_secs(1));
    let sink = warp_server::connectors::build_sink(&cfg.destination)
        .map_err(|e| with_hint(&e, e.hint()))?
        .sink;
    let mut failures = Vec::new();
    match tokio::time::timeout(timeout, sink.check()).await {
        Ok(Ok(security)) => println!("destination: reachable, {security}"),
        // The error already says `destination: …`.
        Ok(Err(e)) => failures.push(with_hint(&e, e.hint())),
        Err(_) => failures.push(format!("destination: no answer within {timeout:?}")),
    }
    for schema in cfg.schemas_to_run(loaded.schema_selection.as_deref()) {
        let source = match warp_server::connectors::build_source(&cfg.source, &schema) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!(
                    "source ({}): {}",
                    schema.name,
                    with_hint(&e, e.hint())
                ));
                continue;
            }
        };
        match tokio::time::timeout(timeout, source.check()).await {
            Ok(Ok(security)) => {
                println!(
                    "source ({}): reachable, prerequisites met, {security}",
                    schema.name
                );
                for note in table_notes(source.as_ref(), &schema).await {
                    println!("source ({}): {note}", schema.name);
                }
            }
            Ok(Err(e)) => {
                let text = with_hint(&e, e.hint());
                let text = text.strip_prefix("source: ").unwrap_or(&text);
                failures.push(format!("source ({}): {text}", schema.name));
            }
            Err(_) => failures.push(format!(
                "source ({}): no answer within {timeout:?}",
                schema.name
            )),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        // One line per connection that failed (main prints each after `error:`).
        Err(failures.join("\n"))
    }
}

#[derive(Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also connect to the source and destination and check their prerequisites.
    #[arg(long)]
    check_connections: bool,
}
