//! `cartridge-warp status`: per-table state read from the destination's metadata schema,
//! so it works while `run` is active elsewhere.

use warp_core::config::WarpConfig;
#[cfg(feature = "postgres")]
use warp_core::SignalKind;
use warp_core::TableReport;

use crate::error::ServerError;

/// Every table the destination's metadata schema knows.
pub async fn read(config: &WarpConfig) -> Result<Vec<TableReport>, ServerError> {
    #[cfg(feature = "postgres")]
    {
        let sink = warp_sink_postgres::PostgresSink::connect_lazy(&config.destination)
            .map_err(warp_core::Error::from)?;
        Ok(
            warp_sink_postgres::status::read(sink.pool(), &config.destination.metadata_schema)
                .await
                .map_err(warp_core::Error::from)?,
        )
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
            &SignalKind::Resync,
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
