//! The configuration document (docs/configuration.md). Field names follow the seed ConfigMap.
//! Every struct rejects unknown keys; defaults are named constants.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::options::ConnectorOptions;
use super::types::{ByteSize, LogLevel, PositiveInt, Seconds, Secret};

/// An enum written as one of a fixed set of strings; unknown values get an error
/// listing the choices (the `config` crate's own enum errors do not). Connectors use it
/// for their own option values.
#[macro_export]
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(d)?;
                match text.as_str() {
                    $($text $(| $alias)* => Ok(Self::$variant),)*
                    _ => Err(::serde::de::Error::unknown_variant(&text, Self::NAMES)),
                }
            }
        }
    };
}

pub const DEFAULT_WRITE_BATCH_SIZE: u64 = 5000;
pub const DEFAULT_WRITE_BATCH_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_WRITE_BATCH_MAX_WAIT_SECS: f64 = 0.05;
pub const DEFAULT_POLLING_INTERVAL_SECS: u64 = 5;
pub const DEFAULT_CONNECTION_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_DELAY_SECS: u64 = 5;
pub const DEFAULT_RETRY_MAX_DELAY_SECS: u64 = 300;
pub const DEFAULT_FAILED_TABLE_COOLDOWN_SECS: u64 = 60;
pub const DEFAULT_SNAPSHOT_CHUNK_SIZE: u64 = 50_000;
pub const DEFAULT_MAX_PARALLEL_STREAMS: u64 = 4;
pub const DEFAULT_METADATA_SCHEMA: &str = "cartridge_warp_metadata";
pub const DEFAULT_POOL_SIZE: u64 = 10;
pub const DEFAULT_TRANSACTION_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_METRICS_PORT: u16 = 8080;
pub const DEFAULT_HEALTH_PORT: u16 = 8081;
pub const DEFAULT_MAX_LOG_FILE_SIZE: u64 = 100_000_000;
pub const DEFAULT_MAX_LOG_FILES: u64 = 10;

/// The whole document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarpConfig {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub single_schema_name: Option<String>,
    #[serde(default)]
    pub performance: PerformanceConfig,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    #[serde(default)]
    pub schemas: Vec<SchemaConfig>,
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub verification: VerificationConfig,
}

string_enum! {
    #[derive(Default)]
    pub enum Mode {
        /// One schema per process (production: one Deployment per schema).
        #[default]
        Single = "single",
        /// Every configured schema in one process (development).
        Multi = "multi",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceConfig {
    /// Rows per source fetch (snapshot pages, polling queries); unset, each source's own
    /// size (docs/configuration.md).
    #[serde(default)]
    pub stream_batch_size: Option<PositiveInt>,
    #[serde(default)]
    pub write_batch_size: Option<PositiveInt>,
    /// Upper bound on the bytes one destination batch holds in memory.
    #[serde(default = "default_write_batch_max_bytes")]
    pub write_batch_max_bytes: ByteSize,
    /// How long a partly filled batch may wait for more changes before it commits.
    #[serde(default = "default_write_batch_max_wait")]
    pub write_batch_max_wait: Seconds,
    #[serde(default = "default_polling_interval")]
    pub polling_interval: Seconds,
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout: Seconds,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Seconds,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Base of the exponential backoff (with jitter).
    #[serde(default = "default_retry_delay")]
    pub retry_delay: Seconds,
    /// Cap of the exponential backoff.
    #[serde(default = "default_retry_max_delay")]
    pub retry_max_delay: Seconds,
    /// How long a table stays `failed` after exhausting its retries before it restarts.
    #[serde(default = "default_failed_table_cooldown")]
    pub failed_table_cooldown: Seconds,
    /// How long a replica's table lease outlives its last renewal (docs/deploy.md, Scaling out): a dead
    /// replica's tables are taken over within this time.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Seconds,
    /// How often the source is listed for tables created since (or dropped); `0` turns
    /// it off (tables are then discovered only at start).
    #[serde(default = "default_table_discovery_interval")]
    pub table_discovery_interval: Seconds,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        Self {
            stream_batch_size: None,
            write_batch_size: None,
            write_batch_max_bytes: default_write_batch_max_bytes(),
            write_batch_max_wait: default_write_batch_max_wait(),
            polling_interval: default_polling_interval(),
            connection_timeout: default_connection_timeout(),
            read_timeout: default_read_timeout(),
            max_retries: DEFAULT_MAX_RETRIES,
            retry_delay: default_retry_delay(),
            retry_max_delay: default_retry_max_delay(),
            failed_table_cooldown: default_failed_table_cooldown(),
            lease_ttl: default_lease_ttl(),
            table_discovery_interval: default_table_discovery_interval(),
        }
    }
}

string_enum! {
    pub enum SourceType {
        Mongodb = "mongodb",
        Mysql = "mysql",
        Bigquery = "bigquery",
    }
}

impl SourceType {
    /// The strategy used when the config names none.
    pub fn default_strategy(self) -> ChangeDetection {
        match self {
            Self::Mongodb => ChangeDetection::ChangeStream,
            Self::Mysql => ChangeDetection::Binlog,
            Self::Bigquery => ChangeDetection::Timestamp,
        }
    }

    pub fn supports(self, strategy: ChangeDetection) -> bool {
        matches!(
            (self, strategy),
            (_, ChangeDetection::Timestamp)
                | (Self::Mongodb, ChangeDetection::ChangeStream)
                | (Self::Mysql, ChangeDetection::Binlog)
        )
    }

    pub fn is_document_store(self) -> bool {
        self == Self::Mongodb
    }
}

string_enum! {
    pub enum ChangeDetection {
        ChangeStream = "change_stream",
        Binlog = "binlog",
        Timestamp = "timestamp",
    }
}

/// The `source` section: `type` picks the connector; the keys every source shares are
/// fields here, every other key is the connector's own ([`ConnectorOptions`]), read and
/// checked by that connector (an unknown key there is refused there).
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    #[serde(rename = "type")]
    pub source_type: SourceType,
    #[serde(default)]
    pub connection_string: Option<Secret>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub change_detection_strategy: Option<ChangeDetection>,
    #[serde(default)]
    pub change_detection_column: Option<String>,
    /// Only `UTC` is accepted (validate says why): date-times land as the source holds them.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The connector's keys.
    #[serde(flatten)]
    pub options: ConnectorOptions,
}

/// The keys of [`SourceConfig`] itself (every other `source` key is a connector's).
pub const SHARED_SOURCE_KEYS: &[&str] = &[
    "type",
    "connection_string",
    "database",
    "change_detection_strategy",
    "change_detection_column",
    "timezone",
];

impl SourceConfig {
    pub fn strategy(&self) -> ChangeDetection {
        self.change_detection_strategy
            .unwrap_or_else(|| self.source_type.default_strategy())
    }
}

string_enum! {
    pub enum DestinationType {
        Postgresql = "postgresql" | "postgres",
    }
}

string_enum! {
    #[derive(Default)]
    pub enum DeletionStrategy {
        /// `is_deleted = true`, `deleted_at = now()`; the row stays.
        #[default]
        Soft = "soft",
        Hard = "hard",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    #[serde(rename = "type")]
    pub destination_type: DestinationType,
    #[serde(default)]
    pub connection_string: Option<Secret>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default = "default_metadata_schema")]
    pub metadata_schema: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: PositiveInt,
    #[serde(default)]
    pub max_overflow: u32,
    #[serde(default)]
    pub batch_size: Option<PositiveInt>,
    #[serde(default = "default_transaction_timeout")]
    pub transaction_timeout: Seconds,
    #[serde(default = "default_connection_timeout")]
    pub connection_timeout: Seconds,
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Seconds,
    #[serde(default)]
    pub deletion_strategy: DeletionStrategy,
    /// Names of the soft-delete bookkeeping columns, for every table (schemas and tables
    /// may set their own): a source column of the same name must not collide with them.
    #[serde(default = "default_soft_delete_column")]
    pub soft_delete_column: String,
    #[serde(default = "default_deleted_at_column")]
    pub deleted_at_column: String,
}

fn default_soft_delete_column() -> String {
    "is_deleted".to_owned()
}

fn default_deleted_at_column() -> String {
    "deleted_at".to_owned()
}

string_enum! {
    pub enum SchemaChangePolicy {
        WidenToText = "widen_to_text",
        DeadLetter = "dead_letter",
        PauseTable = "pause_table",
    }
}

/// `primary_key: id` or `primary_key: [tenant_id, id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumns(pub Vec<String>);

impl<'de> Deserialize<'de> for KeyColumns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyColumns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a column name or a list of column names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyColumns, E> {
                Ok(KeyColumns(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyColumns, A::Error> {
                let mut cols = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    cols.push(c);
                }
                if cols.is_empty() {
                    return Err(de::Error::custom("expected at least one column name"));
                }
                Ok(KeyColumns(cols))
            }
        }
        d.deserialize_any(V)
    }
}

/// Declares the per-table keys once, for table entries and as schema-level defaults.
macro_rules! with_table_settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            #[serde(default)]
            pub batch_size: Option<PositiveInt>,
            #[serde(default)]
            pub polling_interval: Option<Seconds>,
            #[serde(default)]
            pub full_load_enabled: Option<bool>,
            #[serde(default)]
            pub parallel_streams: Option<PositiveInt>,
            #[serde(default)]
            pub deletion_strategy: Option<DeletionStrategy>,
            /// The soft-delete flag column's name (`is_deleted`), when a source column has it.
            #[serde(default)]
            pub soft_delete_column: Option<String>,
            /// The soft-delete time column's name (`deleted_at`).
            #[serde(default)]
            pub deleted_at_column: Option<String>,
            #[serde(default)]
            pub primary_key: Option<KeyColumns>,
            #[serde(default)]
            pub change_detection_column: Option<String>,
            #[serde(default)]
            pub exclude_columns: Option<Vec<String>>,
            #[serde(default)]
            pub schema_change_policy: Option<SchemaChangePolicy>,
            #[serde(default)]
            pub delete_detection_interval: Option<Seconds>,
            #[serde(default)]
            pub flatten_depth: Option<u32>,
            #[serde(default)]
            pub document_column: Option<bool>,
            /// Rows per snapshot chunk (the unit of parallel copy and of resume).
            #[serde(default)]
            pub snapshot_chunk_size: Option<PositiveInt>,
            /// Stream the table from the start of its first copy, copying its chunks
            /// between batches (sources whose chunk positions are log positions).
            #[serde(default)]
            pub stream_during_copy: Option<bool>,
        }

        impl $name {
            /// The per-table keys of this entry.
            pub fn settings(&self) -> TableSettings {
                TableSettings {
                    batch_size: self.batch_size,
                    polling_interval: self.polling_interval,
                    full_load_enabled: self.full_load_enabled,
                    parallel_streams: self.parallel_streams,
                    deletion_strategy: self.deletion_strategy,
                    soft_delete_column: self.soft_delete_column.clone(),
                    deleted_at_column: self.deleted_at_column.clone(),
                    primary_key: self.primary_key.clone(),
                    change_detection_column: self.change_detection_column.clone(),
                    exclude_columns: self.exclude_columns.clone(),
                    schema_change_policy: self.schema_change_policy,
                    delete_detection_interval: self.delete_detection_interval,
                    flatten_depth: self.flatten_depth,
                    document_column: self.document_column,
                    snapshot_chunk_size: self.snapshot_chunk_size,
                    stream_during_copy: self.stream_during_copy,
                }
            }
        }
    };
}

with_table_settings! {
    /// The per-table keys, all optional: unset means "inherit".
    pub struct TableSettings {}
}

with_table_settings! {
    /// One `tables` entry in list form (`- name: orders`).
    pub struct TableListEntry {
        pub name: String,
    }
}

with_table_settings! {
    /// One replicated schema. Per-table keys given here are defaults for its tables.
    pub struct SchemaConfig {
        pub name: String,
        #[serde(default)]
        pub source_database: Option<String>,
        #[serde(default)]
        pub table_whitelist: Option<Vec<String>>,
        #[serde(default)]
        pub table_blacklist: Option<Vec<String>>,
        #[serde(default)]
        pub max_parallel_streams: Option<PositiveInt>,
        #[serde(default)]
        pub tables: Tables,
    }
}

/// `tables:` as a mapping keyed by table name (seed form) or a list with `name`.
#[derive(Debug, Clone, Default)]
pub struct Tables(pub Vec<(String, TableSettings)>);

impl Tables {
    pub fn get(&self, name: &str) -> Option<&TableSettings> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tables;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of table name to settings, or a list of tables with `name`")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tables, E> {
                Ok(Tables::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tables, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let settings = map
                        .next_value::<Option<TableSettings>>()?
                        .unwrap_or_default();
                    out.push((name, settings));
                }
                Ok(Tables(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tables, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<TableListEntry>()? {
                    let settings = entry.settings();
                    out.push((entry.name, settings));
                }
                Ok(Tables(out))
            }
        }
        d.deserialize_any(V)
    }
}

string_enum! {
    #[derive(Default)]
    pub enum VerificationMode {
        /// Differences are reported (metrics, status), never written.
        #[default]
        Report = "report",
        /// Differences are also rewritten from the source, never undoing a newer change.
        Repair = "repair",
    }
}

/// Background verification: each replica compares the tables it runs with the source,
/// one pass after another, within a budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfig {
    /// Unset: on for sources with a change log (MySQL, MongoDB), off for BigQuery, which
    /// bills every read.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub mode: VerificationMode,
    /// Rows compared per second per replica at most (source and destination reads).
    #[serde(default = "default_verify_rows_per_second")]
    pub rows_per_second: PositiveInt,
    /// A table lagging more than this is left to a later pass (never its stream held back).
    #[serde(default = "default_verify_max_lag")]
    pub max_lag: Seconds,
    /// Pause between the end of one pass over a replica's tables and the next.
    #[serde(default = "default_verify_pass_interval")]
    pub pass_interval: Seconds,
    /// How long a suspected difference is given to settle before it is read again.
    #[serde(default = "default_verify_recheck_delay")]
    pub recheck_delay: Seconds,
    /// Source rows per range read; memory holds about one range of each side.
    #[serde(default = "default_verify_range_rows")]
    pub range_rows: PositiveInt,
}

pub const DEFAULT_VERIFY_ROWS_PER_SECOND: u64 = 5_000;

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            mode: VerificationMode::default(),
            rows_per_second: default_verify_rows_per_second(),
            max_lag: default_verify_max_lag(),
            pass_interval: default_verify_pass_interval(),
            recheck_delay: default_verify_recheck_delay(),
            range_rows: default_verify_range_rows(),
        }
    }
}

impl VerificationConfig {
    /// Whether a replica reading `source` verifies in the background.
    pub fn enabled_for(&self, source: SourceType) -> bool {
        self.enabled.unwrap_or(source != SourceType::Bigquery)
    }
}

fn default_verify_rows_per_second() -> PositiveInt {
    PositiveInt::new(DEFAULT_VERIFY_ROWS_PER_SECOND).unwrap_or(PositiveInt::MIN)
}
fn default_verify_max_lag() -> Seconds {
    // A table catching up on a backlog lags by the backlog's age: verification then
    // waits rather than compete with the catch-up for the cores (docs/benchmarks.md,
    // Background verification).
    Seconds::from_secs(10)
}
fn default_verify_pass_interval() -> Seconds {
    Seconds::from_secs(60)
}
fn default_verify_recheck_delay() -> Seconds {
    Seconds::from_secs(5)
}
fn default_verify_range_rows() -> PositiveInt {
    PositiveInt::new(5_000).unwrap_or(PositiveInt::MIN)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    #[serde(default = "yes")]
    pub metrics_enabled: bool,
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
    #[serde(default = "yes")]
    pub health_check_enabled: bool,
    #[serde(default = "default_health_port")]
    pub health_check_port: u16,
    #[serde(default = "default_prometheus_endpoint")]
    pub prometheus_endpoint: String,
    #[serde(default = "default_health_endpoint")]
    pub health_endpoint: String,
    #[serde(default = "default_readiness_endpoint")]
    pub readiness_endpoint: String,
    #[serde(default = "default_startup_endpoint")]
    pub startup_endpoint: String,
    #[serde(default)]
    pub readiness_max_lag_seconds: Option<Seconds>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_port: DEFAULT_METRICS_PORT,
            health_check_enabled: true,
            health_check_port: DEFAULT_HEALTH_PORT,
            prometheus_endpoint: default_prometheus_endpoint(),
            health_endpoint: default_health_endpoint(),
            readiness_endpoint: default_readiness_endpoint(),
            startup_endpoint: default_startup_endpoint(),
            readiness_max_lag_seconds: None,
        }
    }
}

string_enum! {
    #[derive(Default)]
    pub enum LogFormat {
        /// JSON lines.
        #[default]
        Structured = "structured" | "json",
        Text = "text",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub correlation_id_enabled: bool,
    #[serde(default = "yes")]
    pub sensitive_data_masking: bool,
    /// Read only to be refused with the reason (validate): row values are never logged.
    #[serde(default)]
    pub masked_columns: Option<Vec<String>>,
    #[serde(default)]
    pub log_file: Option<String>,
    #[serde(default = "default_max_file_size")]
    pub max_file_size: ByteSize,
    #[serde(default = "default_max_files")]
    pub max_files: PositiveInt,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::default(),
            format: LogFormat::default(),
            correlation_id_enabled: false,
            sensitive_data_masking: true,
            masked_columns: None,
            log_file: None,
            max_file_size: default_max_file_size(),
            max_files: default_max_files(),
        }
    }
}

const fn positive(v: u64) -> PositiveInt {
    match PositiveInt::new(v) {
        Some(p) => p,
        None => panic!("default must be positive"),
    }
}

fn yes() -> bool {
    true
}
fn default_write_batch_max_bytes() -> ByteSize {
    ByteSize(DEFAULT_WRITE_BATCH_MAX_BYTES)
}
fn default_write_batch_max_wait() -> Seconds {
    Seconds::from_secs_f64(DEFAULT_WRITE_BATCH_MAX_WAIT_SECS)
}
fn default_polling_interval() -> Seconds {
    Seconds::from_secs(DEFAULT_POLLING_INTERVAL_SECS)
}
fn default_connection_timeout() -> Seconds {
    Seconds::from_secs(DEFAULT_CONNECTION_TIMEOUT_SECS)
}
fn default_read_timeout() -> Seconds {
    Seconds::from_secs(DEFAULT_READ_TIMEOUT_SECS)
}
fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}
fn default_retry_delay() -> Seconds {
    Seconds::from_secs(DEFAULT_RETRY_DELAY_SECS)
}
fn default_retry_max_delay() -> Seconds {
    Seconds::from_secs(DEFAULT_RETRY_MAX_DELAY_SECS)
}
fn default_failed_table_cooldown() -> Seconds {
    Seconds::from_secs(DEFAULT_FAILED_TABLE_COOLDOWN_SECS)
}
fn default_lease_ttl() -> Seconds {
    Seconds::from_secs(30)
}
fn default_table_discovery_interval() -> Seconds {
    Seconds::from_secs(60)
}
fn default_metadata_schema() -> String {
    DEFAULT_METADATA_SCHEMA.to_owned()
}
fn default_pool_size() -> PositiveInt {
    positive(DEFAULT_POOL_SIZE)
}
fn default_transaction_timeout() -> Seconds {
    Seconds::from_secs(DEFAULT_TRANSACTION_TIMEOUT_SECS)
}
fn default_command_timeout() -> Seconds {
    Seconds::from_secs(DEFAULT_COMMAND_TIMEOUT_SECS)
}
fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_PORT
}
fn default_health_port() -> u16 {
    DEFAULT_HEALTH_PORT
}
fn default_prometheus_endpoint() -> String {
    "/metrics".into()
}
fn default_health_endpoint() -> String {
    "/health".into()
}
fn default_readiness_endpoint() -> String {
    "/ready".into()
}
fn default_startup_endpoint() -> String {
    "/startup".into()
}
fn default_max_file_size() -> ByteSize {
    ByteSize(DEFAULT_MAX_LOG_FILE_SIZE)
}
fn default_max_files() -> PositiveInt {
    positive(DEFAULT_MAX_LOG_FILES)
}
