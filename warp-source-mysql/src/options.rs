//! The MySQL source's own keys of the `source` section.

use serde::Deserialize;
use warp_core::config::{ConfigIssue, ConnectorConfig, EnvKey, PositiveInt, Seconds, SourceConfig};

warp_core::string_enum! {
    /// MySQL's `--ssl-mode` values (either case).
    pub enum MysqlSslMode {
        /// Plain text only.
        Disabled = "disabled" | "DISABLED",
        /// TLS when the server offers it, unverified; plain text otherwise (MySQL's default).
        Preferred = "preferred" | "PREFERRED",
        /// TLS or no connection; the certificate is not checked.
        Required = "required" | "REQUIRED",
        /// TLS, the certificate must chain to `ssl_ca` (or a public root).
        VerifyCa = "verify_ca" | "VERIFY_CA",
        /// As `verify_ca`, and the certificate must name the host connected to.
        VerifyIdentity = "verify_identity" | "VERIFY_IDENTITY",
    }
}

impl MysqlSslMode {
    /// Whether a connection in this mode must be encrypted.
    pub fn requires_tls(self) -> bool {
        !matches!(self, Self::Disabled | Self::Preferred)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlOptions {
    /// Binlog reader id; replicas derive distinct ids from it and the pod name.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// `true`: TLS and the server verified (CA and host name); `false`: plain text.
    #[serde(default)]
    pub ssl_enabled: Option<bool>,
    /// TLS in the terms of the `mysql` client's `--ssl-mode`.
    #[serde(default)]
    pub ssl_mode: Option<MysqlSslMode>,
    /// PEM file of the CA(s) that sign the server's certificate.
    #[serde(default)]
    pub ssl_ca: Option<String>,
    /// PEM client certificate (with `ssl_key`), for servers that require one.
    #[serde(default)]
    pub ssl_cert: Option<String>,
    /// PEM private key of `ssl_cert`.
    #[serde(default)]
    pub ssl_key: Option<String>,
    /// Most pooled connections (snapshots, polls, checks; binlog readers connect apart).
    #[serde(default)]
    pub connection_pool_size: Option<PositiveInt>,
    /// Pooled connections idle this long are closed.
    #[serde(default)]
    pub connection_pool_max_idle_time: Option<Seconds>,
}

impl MysqlOptions {
    /// The TLS mode in force: `ssl_mode`, else what `ssl_enabled` means (`true`: encrypted
    /// and the server verified, CA and host name; `false`: plain text), else `preferred`,
    /// the `mysql` client's own default. Conflicts are refused by [`ConnectorConfig::check`].
    pub fn ssl_mode(&self) -> MysqlSslMode {
        match (self.ssl_mode, self.ssl_enabled) {
            (Some(mode), _) => mode,
            (None, Some(true)) => MysqlSslMode::VerifyIdentity,
            (None, Some(false)) => MysqlSslMode::Disabled,
            (None, None) => MysqlSslMode::Preferred,
        }
    }
}

impl ConnectorConfig for MysqlOptions {
    const KEYS: &'static [EnvKey] = &[
        EnvKey::new(
            "source.server_id",
            "MySQL binlog reader id (replicas derive distinct ids)",
        ),
        EnvKey::new(
            "source.ssl_enabled",
            "true: TLS required and the server verified; false: plain text",
        ),
        EnvKey::new(
            "source.ssl_mode",
            "MySQL: disabled | preferred | required | verify_ca | verify_identity",
        ),
        EnvKey::new("source.ssl_ca", "MySQL: CA certificate file (PEM)"),
        EnvKey::new("source.ssl_cert", "MySQL: client certificate file (PEM)"),
        EnvKey::new("source.ssl_key", "MySQL: client key file (PEM)"),
        EnvKey::new("source.connection_pool_size", "pooled source connections"),
        EnvKey::new(
            "source.connection_pool_max_idle_time",
            "seconds an idle pooled connection is kept",
        ),
    ];

    fn check(&self, source: &SourceConfig) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = source.missing_connection_string().into_iter().collect();
        self.check_tls(&mut issues);
        issues
    }
}

impl MysqlOptions {
    /// TLS keys that would silently not apply are refused: a user who wrote them believes
    /// the connection is protected.
    fn check_tls(&self, issues: &mut Vec<ConfigIssue>) {
        if let (Some(mode), Some(enabled)) = (self.ssl_mode, self.ssl_enabled) {
            let agrees = if enabled {
                matches!(mode, MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity)
            } else {
                mode == MysqlSslMode::Disabled
            };
            if !agrees {
                issues.push(ConfigIssue::new(
                    "source.ssl_mode",
                    format!(
                        "`{}` contradicts ssl_enabled: {enabled} (true means verify_identity or verify_ca, \
                         false means disabled); keep one of the two",
                        mode.as_str()
                    ),
                ));
            }
        }
        if self.ssl_cert.is_some() != self.ssl_key.is_some() {
            let missing = if self.ssl_cert.is_some() {
                "ssl_key"
            } else {
                "ssl_cert"
            };
            issues.push(ConfigIssue::new(
                format!("source.{missing}"),
                "ssl_cert and ssl_key go together (the client certificate and its key)",
            ));
        }
        if self.ssl_mode() == MysqlSslMode::Disabled {
            let files = [
                ("ssl_ca", self.ssl_ca.is_some()),
                ("ssl_cert", self.ssl_cert.is_some()),
                ("ssl_key", self.ssl_key.is_some()),
            ];
            for (key, _) in files.iter().filter(|(_, set)| *set) {
                issues.push(ConfigIssue::new(
                    format!("source.{key}"),
                    "has no effect while TLS is disabled (ssl_enabled: false or ssl_mode: disabled)",
                ));
            }
        }
    }
}
