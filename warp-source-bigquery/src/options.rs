//! The BigQuery source's own keys of the `source` section.

use serde::Deserialize;
use warp_core::config::{ConfigIssue, ConnectorConfig, EnvKey, SourceConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigQueryOptions {
    /// The project that holds the dataset (and runs the query jobs).
    pub project_id: String,
    /// A service-account key file; without it, application-default credentials.
    #[serde(default)]
    pub credentials_path: Option<String>,
    /// API base URL override (emulators); no credentials are sent to it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Accepted as `true` only: BigQuery is always reached over HTTPS.
    #[serde(default)]
    pub ssl_enabled: Option<bool>,
    /// The most bytes one query may bill (`10GB`; BigQuery's `maximumBytesBilled`): a query that
    /// would bill more fails before it runs, with BigQuery's estimate in the error.
    #[serde(default)]
    pub maximum_bytes_billed: Option<warp_core::config::ByteSize>,
    /// Seconds below the watermark the polls read again, for rows whose DML committed
    /// after a poll passed their `change_detection_column` value; 900 by default for a
    /// temporal column (`lookback::DEFAULT_LOOKBACK`), 0 turns it off.
    #[serde(default)]
    pub lookback: Option<warp_core::config::Seconds>,
}

impl ConnectorConfig for BigQueryOptions {
    const KEYS: &'static [EnvKey] = &[
        EnvKey::new("source.project_id", "BigQuery project"),
        EnvKey::new(
            "source.credentials_path",
            "BigQuery service-account key file",
        ),
        EnvKey::new("source.endpoint", "BigQuery API base URL (emulators)"),
        EnvKey::new(
            "source.ssl_enabled",
            "true only: BigQuery is always reached over HTTPS",
        ),
        EnvKey::new(
            "source.maximum_bytes_billed",
            "the most bytes one BigQuery query may bill",
        ),
        EnvKey::new(
            "source.lookback",
            "seconds below the watermark each BigQuery poll reads again (late commits)",
        ),
    ];

    fn unknown_key_hint(key: &str) -> Option<&'static str> {
        key.starts_with("ssl_")
            .then_some("BigQuery is always reached over HTTPS")
    }

    fn check(&self, _source: &SourceConfig) -> Vec<ConfigIssue> {
        if self.ssl_enabled == Some(false) {
            return vec![ConfigIssue::new(
                "source.ssl_enabled",
                "BigQuery is always reached over HTTPS; remove the key",
            )];
        }
        Vec::new()
    }
}
