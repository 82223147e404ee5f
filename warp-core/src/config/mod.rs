//! Configuration: the document model (docs/configuration.md), loading from file + environment + flags,
//! validation with key paths, and resolution of effective per-table settings.

mod errors;
mod keys;
mod load;
mod model;
mod options;
mod resolve;
mod types;
mod validate;

pub use errors::{ConfigErrors, ConfigIssue};
pub use keys::{env_keys, starter_config, EnvKey, PLAIN_ENV_VARS};
pub use load::{
    load_file, load_file_with, load_str, load_str_with, ConfigOverrides, Environment, LoadedConfig,
    RuntimeIdentity, SourceKeysCheck,
};
pub use model::*;
pub use options::{ConnectorConfig, ConnectorOptions};
pub use resolve::{matches_glob, ResolvedSchema, ResolvedTable, TableFilter};
pub use types::{ByteSize, LogLevel, PositiveInt, Seconds, Secret};
