//! `cartridge-warp status`: per-table state read from the destination's metadata schema,
//! so it works while `run` is active elsewhere.

use warp_core::config::WarpConfig;

use crate::error::ServerError;

/// One JSON object per table (schema, table, state, phase, rows_copied, position,
/// last_source_ts, lag_seconds, owner, last_error, hint, dead_letters, …).
pub async fn read(config: &WarpConfig) -> Result<Vec<serde_json::Value>, ServerError> {
    #[cfg(feature = "postgres")]
    {
        let sink = warp_sink_postgres::PostgresSink::connect_lazy(&config.destination)
            .map_err(warp_core::Error::from)?;
        let rows =
            warp_sink_postgres::status::read(sink.pool(), &config.destination.metadata_schema)
                .await
                .map_err(warp_core::Error::from)?;
        Ok(rows
            .into_iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect())
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = config;
        Err(ServerError::MissingFeature {
            feature: "postgres",
            what: "the postgresql destination that holds the status".into(),
        })
    }
}

/// `cartridge-warp resync`: leaves a resync signal for the replicator running `schema`.
pub async fn request_resync(
    config: &WarpConfig,
    schema: &str,
    table: &str,
) -> Result<i64, ServerError> {
    #[cfg(feature = "postgres")]
    {
        let sink = warp_sink_postgres::PostgresSink::connect_lazy(&config.destination)
            .map_err(warp_core::Error::from)?;
        Ok(warp_sink_postgres::signals::send(
            sink.pool(),
            sink.metadata_schema(),
            schema,
            Some(table),
            "resync",
        )
        .await
        .map_err(warp_core::Error::from)?)
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (config, schema, table);
        Err(ServerError::MissingFeature {
            feature: "postgres",
            what: "the postgresql destination that carries signals".into(),
        })
    }
}
