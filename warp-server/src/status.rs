//! `cartridge-warp status`: per-table state read from the destination's control store, so
//! it works while `run` is active elsewhere.

use warp_core::config::WarpConfig;
use warp_core::{SignalKind, TableReport};

use crate::connectors::{build_reader_source, build_sink};
use crate::error::ServerError;
use crate::retention::RetentionReport;

/// How long `status` waits on a source for its log retention.
const RETENTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every table the control store knows.
pub async fn read(config: &WarpConfig) -> Result<Vec<TableReport>, ServerError> {
    let control = build_sink(&config.destination)?.control;
    Ok(control.read_status().await?.unwrap_or_default().tables)
}

/// A schema's log retention as `status` reports it, or why it is unknown.
pub type SchemaRetention = (String, Result<RetentionReport, String>);

/// Every table the control store knows, and the log retention of each schema reading a
/// change log (asked of the source from the tables' checkpoints).
pub async fn read_with_retention(
    config: &WarpConfig,
) -> Result<(Vec<TableReport>, Vec<SchemaRetention>), ServerError> {
    let destination = build_sink(&config.destination)?;
    let tables = (destination.control.read_status().await?)
        .unwrap_or_default()
        .tables;
    let retention = log_retention(config, &destination, &tables).await;
    Ok((tables, retention))
}

/// `cartridge-warp resync`: leaves a resync signal for the replicator running `schema`.
pub async fn request_resync(
    config: &WarpConfig,
    schema: &str,
    table: &str,
) -> Result<i64, ServerError> {
    let control = build_sink(&config.destination)?.control;
    Ok(control
        .send_signal(schema, Some(table), &SignalKind::Resync)
        .await?)
}

/// Per schema whose source reads a change log: the retention seen from its tables'
/// checkpoints now, or why it is unknown (no checkpoint yet, a source that cannot tell,
/// an unreachable source). Schemas that poll are left out.
async fn log_retention(
    config: &WarpConfig,
    destination: &warp_core::Destination,
    tables: &[TableReport],
) -> Vec<SchemaRetention> {
    let mut out = Vec::new();
    for schema in config.schemas_to_run(None) {
        let source = match build_reader_source(&config.source, "status", &schema) {
            Ok(s) if s.change_strategy() == warp_core::ChangeStrategy::Feed => s,
            Ok(_) => continue,
            Err(e) => {
                out.push((schema.name.clone(), Err(e.to_string())));
                continue;
            }
        };
        let names: Vec<String> = (tables.iter())
            .filter(|t| t.schema == schema.name)
            .map(|t| t.table.clone())
            .collect();
        let asked = crate::retention::report_now(
            &schema.name,
            source.as_ref(),
            destination.checkpoints.as_ref(),
            names,
        );
        let found = match tokio::time::timeout(RETENTION_TIMEOUT, asked).await {
            Ok(Ok(Some(report))) => Ok(report),
            Ok(Ok(None)) => {
                Err("unknown (no checkpoint yet, or the source cannot tell)".to_owned())
            }
            Ok(Err(e)) => Err(warp_core::mask_secrets(&e.to_string()).into_owned()),
            Err(_) => Err(format!(
                "unknown (the source did not answer within {}s)",
                RETENTION_TIMEOUT.as_secs()
            )),
        };
        out.push((schema.name.clone(), found));
    }
    out
}
