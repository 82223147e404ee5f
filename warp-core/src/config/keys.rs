//! The environment overrides (for `env-help`) and the starter document (for `init`).

#[cfg(test)]
use super::load::PLAIN_VAR_KEYS;
use super::load::{ENV_PREFIX, FILE_SUFFIX, SECRET_KEYS};

/// One key that a `CARTRIDGE_WARP_*` variable can set.
#[derive(Debug, Clone, Copy)]
pub struct EnvKey {
    pub path: &'static str,
    pub description: &'static str,
}

impl EnvKey {
    /// `source.connection_string` → `CARTRIDGE_WARP_SOURCE__CONNECTION_STRING`.
    pub const fn new(path: &'static str, description: &'static str) -> Self {
        Self { path, description }
    }

    pub fn variable(&self) -> String {
        variable_of(self.path)
    }

    /// The `…_FILE` variable that reads this key from a file, for secret keys.
    pub fn file_variable(&self) -> Option<String> {
        SECRET_KEYS
            .contains(&self.path)
            .then(|| format!("{}{FILE_SUFFIX}", self.variable()))
    }
}

/// The variable that sets the key at `path`.
pub(crate) fn variable_of(path: &str) -> String {
    format!("{ENV_PREFIX}_{}", path.replace('.', "__").to_uppercase())
}

const fn k(path: &'static str, description: &'static str) -> EnvKey {
    EnvKey { path, description }
}

/// Every scalar key outside `schemas[]` (list entries are set in the file), except the
/// connectors' own `source` keys: each connector lists those ([`super::ConnectorConfig::KEYS`]).
const KEYS: &[EnvKey] = &[
    k("mode", "single | multi"),
    k("single_schema_name", "schema run in single mode"),
    k(
        "performance.stream_batch_size",
        "rows read per source fetch",
    ),
    k(
        "performance.write_batch_size",
        "rows per destination batch (tables may override)",
    ),
    k(
        "performance.write_batch_max_bytes",
        "bytes one batch may hold (e.g. 64MB)",
    ),
    k(
        "performance.write_batch_max_wait",
        "seconds a partial batch waits before committing",
    ),
    k(
        "performance.polling_interval",
        "seconds between polls (timestamp strategy)",
    ),
    k("performance.connection_timeout", "seconds"),
    k("performance.read_timeout", "seconds"),
    k(
        "performance.max_retries",
        "retries of one batch before the table is marked failed",
    ),
    k(
        "performance.retry_delay",
        "base seconds of exponential backoff with jitter",
    ),
    k("performance.retry_max_delay", "cap of the backoff, seconds"),
    k(
        "performance.failed_table_cooldown",
        "seconds before a failed table restarts",
    ),
    k(
        "performance.lease_ttl",
        "seconds before a dead replica's tables are taken over",
    ),
    k(
        "performance.table_discovery_interval",
        "seconds between listings of the source for new tables (0: only at start)",
    ),
    k("source.type", "mongodb | mysql | bigquery"),
    k(
        "source.connection_string",
        "source URL (secret; masked in all output)",
    ),
    k(
        "source.database",
        "MongoDB database / MySQL schema / BigQuery dataset",
    ),
    k(
        "source.change_detection_strategy",
        "change_stream | binlog | timestamp",
    ),
    k(
        "source.change_detection_column",
        "column polled by the timestamp strategy",
    ),
    k(
        "source.timezone",
        "UTC (the only zone: date-times land as the source holds them)",
    ),
    k("destination.type", "postgresql"),
    k(
        "destination.connection_string",
        "PostgreSQL URL (secret; masked in all output)",
    ),
    k("destination.schema", "PostgreSQL schema in single mode"),
    k(
        "destination.metadata_schema",
        "bookkeeping schema (default cartridge_warp_metadata)",
    ),
    k("destination.pool_size", "connections"),
    k(
        "destination.max_overflow",
        "extra connections above pool_size",
    ),
    k(
        "destination.batch_size",
        "fallback for performance.write_batch_size",
    ),
    k("destination.transaction_timeout", "seconds"),
    k("destination.connection_timeout", "seconds"),
    k("destination.command_timeout", "seconds"),
    k("destination.deletion_strategy", "soft | hard"),
    k(
        "destination.soft_delete_column",
        "name of the soft-delete flag column (default is_deleted)",
    ),
    k(
        "destination.deleted_at_column",
        "name of the soft-delete time column (default deleted_at)",
    ),
    k("monitoring.metrics_enabled", "serve /metrics"),
    k("monitoring.metrics_port", "metrics port (8080)"),
    k("monitoring.health_check_enabled", "serve the probes"),
    k("monitoring.health_check_port", "probe port (8081)"),
    k(
        "monitoring.prometheus_endpoint",
        "path of the metrics endpoint",
    ),
    k("monitoring.health_endpoint", "liveness path"),
    k("monitoring.readiness_endpoint", "readiness path"),
    k("monitoring.startup_endpoint", "startup path"),
    k(
        "monitoring.readiness_max_lag_seconds",
        "readiness fails above this lag",
    ),
    k(
        "verification.enabled",
        "background verification (default: on for mysql and mongodb, off for bigquery)",
    ),
    k("verification.mode", "report | repair"),
    k(
        "verification.rows_per_second",
        "rows compared per second per replica (5000)",
    ),
    k(
        "verification.max_lag",
        "seconds of lag above which a table's verification waits (10)",
    ),
    k("verification.pass_interval", "seconds between passes (60)"),
    k(
        "verification.recheck_delay",
        "seconds a suspected difference is given to settle (5)",
    ),
    k(
        "verification.range_rows",
        "source rows per range read (5000)",
    ),
    k("logging.level", "trace | debug | info | warn | error"),
    k("logging.format", "structured (JSON lines) | text"),
    k(
        "logging.correlation_id_enabled",
        "a correlation id per batch",
    ),
    k(
        "logging.sensitive_data_masking",
        "mask credentials in every log line",
    ),
    k("logging.log_file", "also write logs to this rotating file"),
    k("logging.max_file_size", "rotate at this size (e.g. 100MB)"),
    k("logging.max_files", "rotated files kept"),
];

pub fn env_keys() -> &'static [EnvKey] {
    KEYS
}

/// The seed Deployment's plain variables: (variable, what it sets).
pub const PLAIN_ENV_VARS: &[(&str, &str)] = &[
    ("PROMETHEUS_METRICS_ENABLED", "monitoring.metrics_enabled"),
    ("PROMETHEUS_METRICS_PORT", "monitoring.metrics_port"),
    ("LOG_LEVEL", "logging.level"),
    ("RUST_LOG", "log filter directives; win over logging.level"),
    (
        "POD_NAME",
        "this replica's identity (leases, server ids, logs)",
    ),
    ("POD_NAMESPACE", "namespace, for logs and status"),
];

/// A commented starter configuration (`cartridge-warp init`).
pub fn starter_config() -> &'static str {
    include_str!("starter.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plain_variable_is_documented() {
        for (var, key) in PLAIN_VAR_KEYS {
            assert!(
                PLAIN_ENV_VARS.contains(&(var, key)),
                "{var} missing from PLAIN_ENV_VARS"
            );
        }
    }

    #[test]
    fn variables_are_derived_from_paths() {
        let key = env_keys()
            .iter()
            .find(|k| k.path == "source.connection_string")
            .unwrap();
        assert_eq!(key.variable(), "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING");
    }
}
