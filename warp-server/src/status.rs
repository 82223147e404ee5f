//! `cartridge-warp status`: per-table state read from the destination's control store, so
//! it works while `run` is active elsewhere.

use warp_core::config::WarpConfig;
use warp_core::{SignalKind, TableReport};

use crate::connectors::build_sink;
use crate::error::ServerError;

/// Every table the control store knows.
pub async fn read(config: &WarpConfig) -> Result<Vec<TableReport>, ServerError> {
    let control = build_sink(&config.destination)?.control;
    Ok(control.read_status().await?.unwrap_or_default().tables)
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
