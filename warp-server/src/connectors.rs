//! Connector selection: a `match` on the configured type, each arm behind its cargo
//! feature, so slim binaries carry only the drivers they need.

use std::sync::Arc;

use warp_core::config::{
    DestinationConfig, DestinationType, ResolvedSchema, SourceConfig, SourceType,
};
use warp_core::{Destination, Source};

use crate::error::ServerError;

/// The source for one schema.
pub fn build_source(
    source: &SourceConfig,
    schema: &ResolvedSchema,
) -> Result<Arc<dyn Source>, ServerError> {
    match source.source_type {
        #[cfg(feature = "mongodb")]
        SourceType::Mongodb => Ok(warp_source_mongodb::build(source, schema)?),
        #[cfg(feature = "mysql")]
        SourceType::Mysql => Ok(warp_source_mysql::build(source, schema)?),
        #[cfg(feature = "bigquery")]
        SourceType::Bigquery => Ok(warp_source_bigquery::build(source, schema)?),
        #[allow(unreachable_patterns)]
        other => Err(missing(
            other.as_str(),
            format!("a {} source (source.type)", other.as_str()),
        )),
    }
}

/// `source` as replica `replica` uses it for `schema`: MySQL binlog readers get ids no
/// other replica or schema uses (SPEC §9).
pub fn replica_source(source: &SourceConfig, replica: &str, schema: &str) -> SourceConfig {
    #[cfg(feature = "mysql")]
    if source.source_type == SourceType::Mysql {
        let mut own = source.clone();
        own.server_id = Some(warp_source_mysql::replica_server_id(
            source.server_id,
            replica,
            schema,
        ));
        return own;
    }
    #[cfg(not(feature = "mysql"))]
    let _ = (replica, schema);
    source.clone()
}

/// The destination sink and its checkpoint store.
pub fn build_sink(destination: &DestinationConfig) -> Result<Destination, ServerError> {
    match destination.destination_type {
        #[cfg(feature = "postgres")]
        DestinationType::Postgresql => Ok(warp_sink_postgres::build(destination)?),
        #[allow(unreachable_patterns)]
        _ => Err(missing(
            "postgres",
            "a postgresql destination (destination.type)".into(),
        )),
    }
}

/// The cargo features this binary was built with, for `--version` and logs.
pub fn enabled_features() -> Vec<&'static str> {
    [
        ("mongodb", cfg!(feature = "mongodb")),
        ("mysql", cfg!(feature = "mysql")),
        ("bigquery", cfg!(feature = "bigquery")),
        ("postgres", cfg!(feature = "postgres")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

#[allow(dead_code)] // unused when every feature is on
fn missing(feature: &'static str, what: String) -> ServerError {
    ServerError::MissingFeature { feature, what }
}
