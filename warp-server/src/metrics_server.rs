//! The Prometheus recorder (installed once per process) and the readiness prober.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use warp_core::metrics::{
    BATCH_DURATION_SECONDS, BATCH_ROWS, BUILD_INFO, REPLICATION_LAG_SECONDS, SOURCE_CONNECTED,
};
use warp_core::{Sink, Source, TableState};

use crate::error::ServerError;
use crate::health::Health;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns its handle.
pub fn recorder() -> Result<PrometheusHandle, ServerError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(BATCH_DURATION_SECONDS.to_owned()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BATCH_ROWS.to_owned()),
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0],
            )
        })
        .map_err(|e| ServerError::Metrics(e.to_string()))?
        .install_recorder()
        .map_err(|e| ServerError::Metrics(e.to_string()))?;
    warp_core::metrics::describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// How often the destination and sources are checked for readiness.
const PROBE_INTERVAL: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks the destination and every source until `shutdown`, for `/ready` and the
/// `source_connected` gauge (the lease keeper publishes `leases_held`).
pub async fn probe(
    health: Arc<Health>,
    sink: Arc<dyn Sink>,
    sources: Vec<Arc<dyn Source>>,
    shutdown: CancellationToken,
) {
    loop {
        let dest = tokio::time::timeout(PROBE_TIMEOUT, sink.check()).await;
        health
            .destination_ok
            .store(matches!(dest, Ok(Ok(_))), Ordering::SeqCst);
        for (schema, source) in health.schemas.iter().zip(&sources) {
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, source.check()).await,
                Ok(Ok(_))
            );
            schema.source_ok.store(ok, Ordering::SeqCst);
            metrics::gauge!(SOURCE_CONNECTED, "schema" => schema.name.clone()).set(if ok {
                1.0
            } else {
                0.0
            });
            // Lag from the live status, so a stuck table's lag keeps growing between commits.
            let now = chrono::Utc::now();
            for t in schema.board.snapshot() {
                if let (
                    TableState::Streaming | TableState::Retrying | TableState::Failed,
                    Some(lag),
                ) = (t.state, t.lag_seconds(now))
                {
                    metrics::gauge!(REPLICATION_LAG_SECONDS, "schema" => t.schema.clone(), "table" => t.table.clone()).set(lag);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
