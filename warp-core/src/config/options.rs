//! The connector's own part of the `source` section. `type` names the connector; the
//! keys every source shares are [`super::SourceConfig`]'s fields, and every other key
//! belongs to that connector, which reads them into its own typed options. So this crate
//! knows no MySQL, MongoDB or BigQuery key, and a key the chosen connector does not know
//! is refused, naming its path.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::errors::{ConfigErrors, ConfigIssue};
use super::keys::EnvKey;
use super::load::{deserialize_issue, Environment};
use super::model::{SourceConfig, SHARED_SOURCE_KEYS};

/// The `source` keys that are not shared ones, untyped until their connector reads them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ConnectorOptions(BTreeMap<String, config::Value>);

impl ConnectorOptions {
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A source connector's typed options: its keys of the `source` section.
pub trait ConnectorConfig: DeserializeOwned {
    /// The connector's keys with a line each, for `env-help` (every one is a scalar a
    /// `CARTRIDGE_WARP_SOURCE__<KEY>` variable can set).
    const KEYS: &'static [EnvKey];

    /// Why a key of another connector is refused here (it is unknown to this one), when
    /// there is more to say than "unknown key".
    fn unknown_key_hint(_key: &str) -> Option<&'static str> {
        None
    }

    /// Checks spanning several keys (pairs, contradictions), after each key parsed.
    fn check(&self, _source: &SourceConfig) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

impl SourceConfig {
    /// The connector's options as `T`, every problem with its `source.<key>` path (and
    /// the variable that set it, where one did).
    pub fn connector<T: ConnectorConfig>(&self, env: &Environment) -> Result<T, Vec<ConfigIssue>> {
        let table: config::Map<String, config::Value> = self
            .options
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let value = config::Value::new(None, config::ValueKind::Table(table));
        let options: T = serde_path_to_error::deserialize(value).map_err(|e| {
            let mut issue = deserialize_issue(&e, env, "source", SHARED_SOURCE_KEYS);
            let key = issue.path.strip_prefix("source.").unwrap_or_default();
            if issue.message.starts_with("unknown key") {
                let hint = T::unknown_key_hint(key).map(|h| format!(" ({h})"));
                issue.message = issue.message.replacen(
                    "unknown key",
                    &format!(
                        "unknown key for a {} source{}",
                        self.source_type.as_str(),
                        hint.unwrap_or_default()
                    ),
                    1,
                );
            }
            vec![issue]
        })?;
        let issues = options.check(self);
        if issues.is_empty() {
            Ok(options)
        } else {
            Err(issues)
        }
    }

    /// The issue when a connector that needs `connection_string` has none.
    pub fn missing_connection_string(&self) -> Option<ConfigIssue> {
        self.connection_string.is_none().then(|| {
            ConfigIssue::new(
                "source.connection_string",
                format!(
                    "required for a {} source (set it in the file or in CARTRIDGE_WARP_SOURCE__CONNECTION_STRING)",
                    self.source_type.as_str()
                ),
            )
        })
    }

    /// [`SourceConfig::connector`] for code that builds a source directly from a loaded
    /// configuration (validation has reported these issues already).
    pub fn connector_or_error<T: ConnectorConfig>(&self) -> crate::Result<T> {
        self.connector(&Environment::new()).map_err(|issues| {
            crate::Error::Config(ConfigErrors {
                origin: "source".into(),
                issues,
            })
        })
    }
}
