//! Connector selection: a `match` on the configured type, each arm behind its cargo
//! feature, so slim binaries carry only the drivers they need.

use std::path::Path;
use std::sync::Arc;

use warp_core::config::{
    load_file_with, ConfigErrors, ConfigIssue, ConfigOverrides, DestinationConfig, DestinationType,
    EnvKey, Environment, LoadedConfig, ResolvedSchema, SourceConfig, SourceType,
};
use warp_core::{Destination, Source};

use crate::error::ServerError;

/// The source for one schema, reading with the configured MySQL reader id (tools that
/// never read the binlog: `validate`).
pub fn build_source(
    source: &SourceConfig,
    schema: &ResolvedSchema,
) -> Result<Arc<dyn Source>, ServerError> {
    build(source, schema, None)
}

/// The source for one schema as `reader` (a replica's pod name, or a tool's name) uses
/// it: MySQL binlog readers get ids no other replica or schema uses (docs/deploy.md, Scaling out).
pub fn build_reader_source(
    source: &SourceConfig,
    reader: &str,
    schema: &ResolvedSchema,
) -> Result<Arc<dyn Source>, ServerError> {
    build(source, schema, Some(reader))
}

fn build(
    source: &SourceConfig,
    schema: &ResolvedSchema,
    reader: Option<&str>,
) -> Result<Arc<dyn Source>, ServerError> {
    match source.source_type {
        #[cfg(feature = "mongodb")]
        SourceType::Mongodb => Ok(warp_source_mongodb::build(
            source,
            source.connector_or_error()?,
            schema,
        )?),
        #[cfg(feature = "mysql")]
        SourceType::Mysql => {
            let mut options: warp_source_mysql::MysqlOptions = source.connector_or_error()?;
            if let Some(reader) = reader {
                options.server_id = Some(warp_source_mysql::replica_server_id(
                    options.server_id,
                    reader,
                    &schema.name,
                ));
            }
            Ok(warp_source_mysql::build(source, options, schema)?)
        }
        #[cfg(feature = "bigquery")]
        SourceType::Bigquery => Ok(warp_source_bigquery::build(
            source.connector_or_error()?,
            schema,
        )?),
        #[allow(unreachable_patterns)]
        other => {
            let _ = (reader, schema);
            Err(missing(
                other.as_str(),
                format!("a {} source (source.type)", other.as_str()),
            ))
        }
    }
}

/// The connector's own keys of the `source` section, checked by the connector the
/// `type` names; every issue names its key path. (A type whose connector is not built
/// in is reported when the source is built.)
pub fn check_source_keys(source: &SourceConfig, env: &Environment) -> Vec<ConfigIssue> {
    #[cfg(any(feature = "mongodb", feature = "mysql", feature = "bigquery"))]
    fn issues<T: warp_core::config::ConnectorConfig>(
        source: &SourceConfig,
        env: &Environment,
    ) -> Vec<ConfigIssue> {
        source.connector::<T>(env).err().unwrap_or_default()
    }
    match source.source_type {
        #[cfg(feature = "mongodb")]
        SourceType::Mongodb => issues::<warp_source_mongodb::MongoOptions>(source, env),
        #[cfg(feature = "mysql")]
        SourceType::Mysql => issues::<warp_source_mysql::MysqlOptions>(source, env),
        #[cfg(feature = "bigquery")]
        SourceType::Bigquery => issues::<warp_source_bigquery::BigQueryOptions>(source, env),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = env;
            Vec::new()
        }
    }
}

/// Loads a configuration file and checks it whole: warp-core's checks, then the
/// connector's own `source` keys.
pub fn load_config(
    path: &Path,
    env: &Environment,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    load_file_with(path, env, overrides, check_source_keys)
}

/// Each built-in source connector's own keys, for `env-help`.
pub fn source_keys() -> Vec<(SourceType, &'static [EnvKey])> {
    vec![
        #[cfg(feature = "mongodb")]
        (
            SourceType::Mongodb,
            <warp_source_mongodb::MongoOptions as warp_core::config::ConnectorConfig>::KEYS,
        ),
        #[cfg(feature = "mysql")]
        (
            SourceType::Mysql,
            <warp_source_mysql::MysqlOptions as warp_core::config::ConnectorConfig>::KEYS,
        ),
        #[cfg(feature = "bigquery")]
        (
            SourceType::Bigquery,
            <warp_source_bigquery::BigQueryOptions as warp_core::config::ConnectorConfig>::KEYS,
        ),
    ]
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
