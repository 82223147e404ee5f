//! Runs the configured schemas until SIGTERM/SIGINT, then drains within a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warp_core::config::LoadedConfig;
use warp_core::{EngineSettings, Pipeline, TablePlan};

use crate::connectors::{build_sink, build_source};
use crate::error::ServerError;

/// How `run` behaves beyond the configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Connect, discover, print the plan, write nothing.
    pub dry_run: bool,
    /// Re-snapshot every table before streaming.
    pub full_resync: bool,
    /// How long shutdown may take to commit batches in hand and close.
    pub drain_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            full_resync: false,
            drain_timeout: Duration::from_secs(25),
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => info!("SIGTERM: draining"),
            r = tokio::signal::ctrl_c() => {
                if r.is_ok() {
                    info!("SIGINT: draining");
                }
            }
        }
        token.cancel();
    });
}

/// The identity used for table claims: the pod name, else host and pid.
fn owner(loaded: &LoadedConfig) -> String {
    loaded
        .identity
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("cartridge-warp-{}", std::process::id()))
}

/// Builds the pipelines of every schema this process runs.
fn pipelines(loaded: &LoadedConfig, opts: &RunOptions) -> Result<Vec<Pipeline>, ServerError> {
    let cfg = &loaded.config;
    let destination = build_sink(&cfg.destination)?;
    let mut settings = EngineSettings::from_config(cfg, owner(loaded));
    settings.full_resync = opts.full_resync;
    cfg.schemas_to_run(loaded.schema_selection.as_deref())
        .into_iter()
        .map(|schema| {
            let source = build_source(&cfg.source, &schema)?;
            Ok(Pipeline::new(
                schema,
                source,
                Arc::clone(&destination.sink),
                Arc::clone(&destination.checkpoints),
                settings.clone(),
            ))
        })
        .collect()
}

/// `run --dry-run`: the plan of every schema, per table.
pub async fn plan(loaded: &LoadedConfig) -> Result<Vec<(String, Vec<TablePlan>)>, ServerError> {
    let mut out = Vec::new();
    let names = loaded
        .config
        .schemas_to_run(loaded.schema_selection.as_deref());
    for (pipeline, schema) in pipelines(loaded, &RunOptions::default())?
        .into_iter()
        .zip(names)
    {
        out.push((schema.name, pipeline.plan().await?));
    }
    Ok(out)
}

/// Runs every schema until `shutdown`, then waits for them to drain (bounded by
/// `drain_timeout`). A permanent start-up failure of one schema stops them all.
pub async fn run(
    loaded: &LoadedConfig,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    warp_core::metrics::describe();
    let mut running = JoinSet::new();
    let destination = build_sink(&loaded.config.destination)?;
    let mut boards = Vec::new();
    for pipeline in pipelines(loaded, opts)? {
        boards.push(pipeline.status());
        running.spawn(pipeline.run(shutdown.clone()));
    }
    let recorder = tokio::spawn(record_status(
        destination.sink,
        owner(loaded),
        boards.clone(),
        shutdown.clone(),
    ));
    info!(schemas = running.len(), owner = %owner(loaded), "replicating");

    let mut failure = None;
    loop {
        let next = tokio::select! {
            next = running.join_next() => next,
            () = shutdown.cancelled() => break,
        };
        match next {
            None => break,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                error!(error = %e, hint = e.hint().as_deref().unwrap_or(""), "schema failed to start");
                failure = Some(ServerError::Core(e));
                shutdown.cancel();
                break;
            }
            Some(Err(join)) => {
                error!(error = %join, "schema task panicked");
                shutdown.cancel();
                break;
            }
        }
    }
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        while let Some(result) = running.join_next().await {
            if let Ok(Err(e)) = result {
                warn!(error = %e, "schema ended with an error while draining");
            }
        }
    })
    .await;
    recorder.abort();
    // The final states (stopped, failed) for `status`.
    let tables: Vec<_> = boards.iter().flat_map(|b| b.snapshot()).collect();
    if let Err(e) = build_sink(&loaded.config.destination)?
        .sink
        .record_status(&owner(loaded), &tables)
        .await
    {
        warn!(error = %e, "could not record the final table status");
    }
    if drained.is_err() {
        return Err(ServerError::DrainTimeout(opts.drain_timeout));
    }
    info!("drained; exiting");
    failure.map_or(Ok(()), Err)
}

/// How often table status is written to the metadata schema for `status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

async fn record_status(
    sink: Arc<dyn warp_core::Sink>,
    owner: String,
    boards: Vec<warp_core::StatusBoard>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        let tables: Vec<_> = boards.iter().flat_map(|b| b.snapshot()).collect();
        if let Err(e) = sink.record_status(&owner, &tables).await {
            tracing::debug!(error = %e, "status not recorded (destination unavailable?)");
        }
    }
}
