//! The MongoDB source's own keys of the `source` section (the seed ConfigMap's).

use serde::Deserialize;
use warp_core::config::{ConfigIssue, ConnectorConfig, EnvKey, PositiveInt, Seconds, SourceConfig};

warp_core::string_enum! {
    pub enum ReadPreference {
        Primary = "primary",
        PrimaryPreferred = "primaryPreferred",
        Secondary = "secondary",
        SecondaryPreferred = "secondaryPreferred",
        Nearest = "nearest",
    }
}

warp_core::string_enum! {
    /// How binary subtype 3 (legacy UUID) values are read: each legacy driver wrote the 16
    /// bytes in its own order. Subtype 4 is always the standard order.
    #[derive(Default)]
    pub enum UuidRepresentation {
        #[default]
        Standard = "standard",
        JavaLegacy = "java_legacy",
        CsharpLegacy = "csharp_legacy",
        PythonLegacy = "python_legacy",
    }
}

impl UuidRepresentation {
    /// The same representation as the BSON library names it.
    pub fn bson(self) -> bson::UuidRepresentation {
        match self {
            Self::Standard => bson::UuidRepresentation::Standard,
            Self::JavaLegacy => bson::UuidRepresentation::JavaLegacy,
            Self::CsharpLegacy => bson::UuidRepresentation::CSharpLegacy,
            Self::PythonLegacy => bson::UuidRepresentation::PythonLegacy,
        }
    }
}

/// Set on top of the connection string's own options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoOptions {
    /// Replica set name; `""`: a direct connection to one server.
    #[serde(default)]
    pub replica_set: Option<String>,
    /// The database the credentials are defined in.
    #[serde(default)]
    pub auth_source: Option<String>,
    /// Switches the connection string's TLS on or off, keeping its TLS options.
    #[serde(default)]
    pub ssl_enabled: Option<bool>,
    #[serde(default)]
    pub read_preference: Option<ReadPreference>,
    #[serde(default)]
    pub connection_pool_size: Option<PositiveInt>,
    /// Pooled connections idle this long are closed.
    #[serde(default)]
    pub connection_pool_max_idle_time: Option<Seconds>,
    /// Byte order of legacy (subtype 3) UUIDs; `standard` lands them as bytes.
    #[serde(default)]
    pub uuid_representation: UuidRepresentation,
}

impl ConnectorConfig for MongoOptions {
    const KEYS: &'static [EnvKey] = &[
        EnvKey::new("source.replica_set", "MongoDB replica set name"),
        EnvKey::new("source.auth_source", "MongoDB authentication database"),
        EnvKey::new(
            "source.ssl_enabled",
            "true: TLS required and the server verified; false: plain text",
        ),
        EnvKey::new(
            "source.read_preference",
            "primary | primaryPreferred | secondary | secondaryPreferred | nearest",
        ),
        EnvKey::new("source.connection_pool_size", "pooled source connections"),
        EnvKey::new(
            "source.connection_pool_max_idle_time",
            "seconds an idle pooled connection is kept",
        ),
        EnvKey::new(
            "source.uuid_representation",
            "standard | java_legacy | csharp_legacy | python_legacy: byte order of subtype-3 UUIDs",
        ),
    ];

    fn unknown_key_hint(key: &str) -> Option<&'static str> {
        matches!(key, "ssl_mode" | "ssl_ca" | "ssl_cert" | "ssl_key").then_some(
            "MongoDB takes tls=true, tlsCAFile=… and tlsCertificateKeyFile=… in source.connection_string",
        )
    }

    fn check(&self, source: &SourceConfig) -> Vec<ConfigIssue> {
        source.missing_connection_string().into_iter().collect()
    }
}
