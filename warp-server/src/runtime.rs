//! Runs the configured schemas until SIGTERM/SIGINT, then drains within a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use warp_core::config::LoadedConfig;
use warp_core::{EngineSettings, Pipeline, SignalKind, TablePlan};

use crate::connectors::{build_reader_source, build_sink};
use crate::error::ServerError;
use crate::health::{Health, Reply};
use crate::http;
use crate::status_page::{ProcessSummary, StatusPage};
use warp_core::Destination;

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

/// This replica's identity for leases and binlog reader ids: the pod name (`POD_NAME`,
/// else `HOSTNAME`), else one unique to this process.
fn owner(loaded: &LoadedConfig) -> String {
    loaded
        .identity
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("cartridge-warp-{}", std::process::id()))
}

/// Builds the pipelines of every schema this process runs, over one destination pool.
fn pipelines(
    loaded: &LoadedConfig,
    opts: &RunOptions,
    destination: &Destination,
) -> Result<Vec<Pipeline>, ServerError> {
    let cfg = &loaded.config;
    let replica = owner(loaded);
    let mut settings = EngineSettings::from_config(cfg, replica.clone());
    settings.full_resync = opts.full_resync;
    cfg.schemas_to_run(loaded.schema_selection.as_deref())
        .into_iter()
        .map(|schema| {
            let source = build_reader_source(&cfg.source, &replica, &schema)?;
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
    let destination = build_sink(&loaded.config.destination)?;
    for (pipeline, schema) in pipelines(loaded, &RunOptions::default(), &destination)?
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
    let monitoring = &loaded.config.monitoring;
    let metrics = if monitoring.metrics_enabled {
        Some(crate::metrics_server::recorder()?)
    } else {
        warp_core::metrics::describe();
        None
    };
    let destination = build_sink(&loaded.config.destination)?;
    let pipelines = pipelines(loaded, opts, &destination)?;
    let boards: Vec<warp_core::StatusBoard> = pipelines.iter().map(Pipeline::status).collect();
    let page = Arc::new(StatusPage::new(
        ProcessSummary::of(loaded, &owner(loaded)),
        boards.clone(),
    ));
    let health = Arc::new(Health::new(
        monitoring,
        pipelines
            .iter()
            .map(|p| (p.schema_name().to_owned(), p.status()))
            .collect(),
        Arc::clone(&page),
    ));
    // The endpoints outlive the drain (probes keep answering while tables stop).
    let servers = CancellationToken::new();
    if monitoring.health_check_enabled {
        tokio::spawn(crate::status_page::follow(
            Arc::clone(&page),
            Arc::clone(&destination.control),
            servers.clone(),
        ));
        let h = Arc::clone(&health);
        let route = Arc::new(move |p: &str| h.route(p));
        let addr = http::serve(
            monitoring.health_check_port,
            "the health endpoints",
            route,
            servers.clone(),
        )
        .await?;
        info!(%addr, "health endpoints listening");
    }
    if let Some(handle) = metrics {
        let path = monitoring.prometheus_endpoint.clone();
        let route = Arc::new(move |p: &str| {
            if p == path {
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: handle.render(),
                }
            } else {
                Reply {
                    status: 404,
                    content_type: "text/plain",
                    body: "not found\n".into(),
                }
            }
        });
        let addr = http::serve(monitoring.metrics_port, "metrics", route, servers.clone()).await?;
        info!(%addr, "metrics listening");
    }
    let watched = pipelines
        .iter()
        .filter(|p| p.source().change_strategy() == warp_core::ChangeStrategy::Feed)
        .map(|p| crate::retention::Watched {
            schema: p.schema_name().to_owned(),
            source: p.source(),
            board: p.status(),
        })
        .collect();
    tokio::spawn(crate::retention::watch(
        watched,
        Arc::clone(&destination.checkpoints),
        Arc::clone(&page),
        shutdown.clone(),
    ));
    let sources = pipelines.iter().map(Pipeline::source).collect();
    let controls: Vec<(String, warp_core::PipelineControl)> = pipelines
        .iter()
        .map(|p| (p.schema_name().to_owned(), p.control()))
        .collect();
    tokio::spawn(follow_signals(
        Arc::clone(&destination.control),
        controls,
        shutdown.clone(),
    ));
    tokio::spawn(crate::metrics_server::probe(
        Arc::clone(&health),
        Arc::clone(&destination.sink),
        sources,
        shutdown.clone(),
    ));
    tokio::spawn(crate::progress::report(boards.clone(), shutdown.clone()));
    crate::verify::background::start(loaded, &pipelines, &destination, &owner(loaded), &shutdown)?;
    let mut running = JoinSet::new();
    for pipeline in pipelines {
        running.spawn(pipeline.run(shutdown.clone()));
    }
    let recorder = tokio::spawn(record_status(
        Arc::clone(&destination.control),
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
    if let Err(e) = destination
        .control
        .record_status(&owner(loaded), &tables)
        .await
    {
        warn!(error = %e, "could not record the final table status");
    }
    servers.cancel();
    if drained.is_err() {
        return Err(ServerError::DrainTimeout(opts.drain_timeout));
    }
    info!("drained; exiting");
    failure.map_or(Ok(()), Err)
}

/// How often table status is written to the metadata schema for `status`.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

async fn record_status(
    sink: Arc<dyn warp_core::ControlStore>,
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

/// How often the signals table is read (`cartridge-warp resync`).
const SIGNAL_INTERVAL: Duration = Duration::from_secs(2);

async fn follow_signals(
    sink: Arc<dyn warp_core::ControlStore>,
    controls: Vec<(String, warp_core::PipelineControl)>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SIGNAL_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        for (schema, control) in &controls {
            // Only this replica's tables: the others' signals wait for their owners.
            let signals = match sink.take_signals(schema, &control.tables()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "signals not read (destination unavailable?)");
                    continue;
                }
            };
            for signal in signals {
                match (&signal.kind, signal.table.as_deref()) {
                    (SignalKind::Resync, Some(table)) if control.resync(table) => {
                        info!(schema = %schema, table, "resync requested")
                    }
                    (SignalKind::Resync, table) => {
                        warn!(schema = %schema, table = table.unwrap_or(""), "resync signal for a table this replica no longer runs")
                    }
                    (SignalKind::Unknown(other), _) => {
                        warn!(signal = %other, "unknown signal ignored (left by another version?)")
                    }
                }
            }
        }
    }
}
