//! Effective settings: table → schema → `performance`/`destination`/`source` → default,
//! and which tables of a schema replicate.

use std::time::Duration;

use super::model::*;
use super::types::{PositiveInt, Seconds};

/// Decides which source tables replicate: whitelist (names or globs) wins, else the
/// blacklist excludes, else everything.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
}

impl TableFilter {
    pub fn new(whitelist: Option<Vec<String>>, blacklist: Option<Vec<String>>) -> Self {
        Self {
            whitelist,
            blacklist,
        }
    }

    pub fn includes(&self, table: &str) -> bool {
        match (&self.whitelist, &self.blacklist) {
            (Some(w), _) => w.iter().any(|p| matches_glob(p, table)),
            (None, Some(b)) => !b.iter().any(|p| matches_glob(p, table)),
            (None, None) => true,
        }
    }
}

/// Glob match (`*` any run, `?` one character, `[…]` a class), by the `glob` crate; a
/// pattern that is not a valid glob (refused at validation) matches only itself.
pub fn matches_glob(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).map_or(pattern == name, |p| p.matches(name))
}

/// One schema as it will run.
#[derive(Debug, Clone)]
pub struct ResolvedSchema {
    pub name: String,
    /// MySQL schema / MongoDB database / BigQuery dataset to read.
    pub source_database: String,
    /// PostgreSQL schema the tables land in.
    pub destination_schema: String,
    pub filter: TableFilter,
    /// How many tables of this schema may snapshot at once.
    pub max_parallel_streams: usize,
    /// Rows per source fetch (`performance.stream_batch_size`); `None`: the source's own.
    fetch_rows: Option<usize>,
    /// The longest one source read may wait (`performance.read_timeout`).
    pub read_timeout: Duration,
    defaults: TableSettings,
    tables: Tables,
    global: GlobalDefaults,
}

#[derive(Debug, Clone)]
struct GlobalDefaults {
    write_batch_size: u64,
    /// Chunks a table copies at once when its `parallel_streams` is not set.
    parallel_streams: usize,
    polling_interval: Duration,
    deletion_strategy: DeletionStrategy,
    soft_delete_column: String,
    deleted_at_column: String,
    change_detection_column: Option<String>,
    document_store: bool,
}

/// Effective settings of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTable {
    pub name: String,
    /// Rows per source fetch (`performance.stream_batch_size`); `None`: the source's own.
    pub fetch_rows: Option<usize>,
    pub batch_size: usize,
    pub polling_interval: Duration,
    pub full_load_enabled: bool,
    pub parallel_streams: usize,
    pub deletion_strategy: DeletionStrategy,
    /// The soft-delete bookkeeping columns' names (flag, time).
    pub soft_delete_column: String,
    pub deleted_at_column: String,
    pub primary_key: Option<Vec<String>>,
    pub change_detection_column: Option<String>,
    pub exclude_columns: Vec<String>,
    pub schema_change_policy: SchemaChangePolicy,
    pub delete_detection_interval: Option<Duration>,
    pub flatten_depth: u32,
    pub document_column: bool,
    /// Rows per snapshot chunk as configured; `None`: sized by the table's row width
    /// (see [`ResolvedTable::chunk_rows`]).
    pub snapshot_chunk_size: Option<usize>,
    /// The first copy runs inside the stream (see [`crate::Source::recopies_while_streaming`]).
    pub stream_during_copy: bool,
}

impl ResolvedSchema {
    /// Effective settings for `table`, whether or not it has a `tables` entry.
    pub fn table(&self, table: &str) -> ResolvedTable {
        let t = self.tables.get(table).cloned().unwrap_or_default();
        let s = &self.defaults;
        let g = &self.global;
        macro_rules! pick {
            ($f:ident) => {
                t.$f.clone().or_else(|| s.$f.clone())
            };
        }
        ResolvedTable {
            name: table.to_owned(),
            fetch_rows: self.fetch_rows,
            batch_size: pick!(batch_size).map_or(g.write_batch_size, PositiveInt::get) as usize,
            polling_interval: pick!(polling_interval)
                .map_or(g.polling_interval, Seconds::as_duration),
            full_load_enabled: pick!(full_load_enabled).unwrap_or(true),
            parallel_streams: pick!(parallel_streams)
                .map_or(g.parallel_streams, PositiveInt::as_usize),
            deletion_strategy: pick!(deletion_strategy).unwrap_or(g.deletion_strategy),
            soft_delete_column: pick!(soft_delete_column)
                .unwrap_or_else(|| g.soft_delete_column.clone()),
            deleted_at_column: pick!(deleted_at_column)
                .unwrap_or_else(|| g.deleted_at_column.clone()),
            primary_key: pick!(primary_key).map(|k| k.0),
            change_detection_column: pick!(change_detection_column)
                .or_else(|| g.change_detection_column.clone()),
            exclude_columns: pick!(exclude_columns).unwrap_or_default(),
            // Keeping the wider destination type never loses data, so widening to text
            // is the default for every source (docs/postgres.md, Schema evolution, names it for documents).
            schema_change_policy: pick!(schema_change_policy)
                .unwrap_or(SchemaChangePolicy::WidenToText),
            delete_detection_interval: pick!(delete_detection_interval).map(Seconds::as_duration),
            flatten_depth: if g.document_store {
                pick!(flatten_depth).unwrap_or(0)
            } else {
                0
            },
            document_column: g.document_store && pick!(document_column).unwrap_or(false),
            snapshot_chunk_size: pick!(snapshot_chunk_size).map(PositiveInt::as_usize),
            stream_during_copy: pick!(stream_during_copy).unwrap_or(false),
        }
    }

    /// Names with a `tables` entry (they configure; the filter decides what replicates).
    pub fn configured_tables(&self) -> impl Iterator<Item = &str> {
        self.tables.0.iter().map(|(n, _)| n.as_str())
    }
}

/// Bytes of source rows one snapshot chunk holds when `snapshot_chunk_size` is not set.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 64 << 20;
/// The fewest rows a chunk sized by row width holds.
pub const MIN_SNAPSHOT_CHUNK_ROWS: u64 = 1_000;

impl ResolvedTable {
    /// Rows per snapshot chunk: the configured `snapshot_chunk_size`, else
    /// [`DEFAULT_SNAPSHOT_CHUNK_SIZE`] rows, fewer for wide rows so a chunk holds about
    /// [`SNAPSHOT_CHUNK_BYTES`] (`avg_row_bytes`: the source's estimate, when it has one).
    /// A chunk is one destination transaction and the unit re-copied after a crash: 50,000
    /// rows of 20 KB would be 1 GB each.
    pub fn chunk_rows(&self, avg_row_bytes: Option<u64>) -> usize {
        if let Some(rows) = self.snapshot_chunk_size {
            return rows;
        }
        let by_width = avg_row_bytes
            .filter(|&b| b > 0)
            .map_or(DEFAULT_SNAPSHOT_CHUNK_SIZE, |b| {
                (SNAPSHOT_CHUNK_BYTES / b).max(MIN_SNAPSHOT_CHUNK_ROWS)
            });
        usize::try_from(by_width.min(DEFAULT_SNAPSHOT_CHUNK_SIZE)).unwrap_or(usize::MAX)
    }

    /// The settings that concern reading the table at the source.
    pub fn read_settings(&self) -> crate::ReadSettings {
        crate::ReadSettings {
            fetch_rows: self.fetch_rows,
            change_column: self.change_detection_column.clone(),
            polling_interval: self.polling_interval,
            flatten_depth: self.flatten_depth,
            document_column: self.document_column,
            delete_detection: self.delete_detection_interval.is_some(),
            // Known once the landing table is ensured (the engine sets it).
            landing: crate::LandingVersion::UNRECORDED,
        }
    }
}

impl crate::TableReads for ResolvedSchema {
    fn read_settings(&self, table: &str) -> crate::ReadSettings {
        self.table(table).read_settings()
    }
}

impl WarpConfig {
    /// The schemas this process runs, after mode and `--schema` selection. A validated
    /// config always yields at least one.
    pub fn schemas_to_run(&self, selection: Option<&str>) -> Vec<ResolvedSchema> {
        let wanted: Option<&str> = match self.mode {
            Mode::Single => self
                .single_schema_name
                .as_deref()
                .or_else(|| self.schemas.first().map(|s| s.name.as_str())),
            Mode::Multi => selection,
        };
        let mut out: Vec<ResolvedSchema> = self
            .schemas
            .iter()
            .filter(|s| wanted.is_none_or(|w| w == s.name))
            .map(|s| self.resolve_schema(s))
            .collect();
        if out.is_empty() {
            // Single mode naming a schema with no `schemas` entry: all defaults.
            if let Some(name) = wanted {
                out.push(self.resolve_schema(&SchemaConfig {
                    name: name.to_owned(),
                    ..SchemaConfig::default()
                }));
            }
        }
        out
    }

    fn resolve_schema(&self, s: &SchemaConfig) -> ResolvedSchema {
        let destination_schema = match self.mode {
            Mode::Single => self
                .destination
                .schema
                .clone()
                .unwrap_or_else(|| s.name.clone()),
            Mode::Multi => s.name.clone(),
        };
        let write_batch_size = self
            .performance
            .write_batch_size
            .or(self.destination.batch_size)
            .map_or(DEFAULT_WRITE_BATCH_SIZE, PositiveInt::get);
        let max_parallel_streams = s
            .max_parallel_streams
            .map_or(DEFAULT_MAX_PARALLEL_STREAMS as usize, PositiveInt::as_usize);
        let parallel_streams = match self.source.source_type {
            // Each chunk is a query billed for the columns it scans, whatever its key
            // range: parallel chunks would multiply the bytes billed.
            SourceType::Bigquery => 1,
            _ => default_parallel_streams(
                std::thread::available_parallelism().map_or(1, usize::from),
                self.destination.pool_size.as_usize(),
                max_parallel_streams,
            ),
        };
        ResolvedSchema {
            name: s.name.clone(),
            source_database: s
                .source_database
                .clone()
                .or_else(|| self.source.database.clone())
                .unwrap_or_else(|| s.name.clone()),
            destination_schema,
            filter: TableFilter::new(s.table_whitelist.clone(), s.table_blacklist.clone()),
            max_parallel_streams,
            fetch_rows: self
                .performance
                .stream_batch_size
                .map(PositiveInt::as_usize),
            read_timeout: self.performance.read_timeout.as_duration(),
            defaults: s.settings(),
            tables: s.tables.clone(),
            global: GlobalDefaults {
                write_batch_size,
                parallel_streams,
                polling_interval: self.performance.polling_interval.as_duration(),
                deletion_strategy: self.destination.deletion_strategy,
                soft_delete_column: self.destination.soft_delete_column.clone(),
                deleted_at_column: self.destination.deleted_at_column.clone(),
                change_detection_column: self.source.change_detection_column.clone(),
                document_store: self.source.source_type.is_document_store(),
            },
        }
    }
}

/// Chunks a table copies at once by default: one per core the process may use (a
/// container's CPU limit included), at most 4, and no more than the destination pool
/// gives each of the `tables_at_once` tables that may copy together without waiting.
fn default_parallel_streams(cores: usize, pool: usize, tables_at_once: usize) -> usize {
    cores.min(4).min(pool / tables_at_once.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_chunks_default_to_the_cores_and_the_pool() {
        // (cores, destination pool, tables copying at once) → chunks per table.
        for ((cores, pool, tables), want) in [
            ((2, 10, 4), 2), // this machine, default pool and max_parallel_streams
            ((1, 10, 4), 1),
            ((16, 10, 4), 2), // the pool is the bound
            ((16, 40, 4), 4), // never more than 4
            ((8, 3, 4), 1),   // a tiny pool still copies
        ] {
            assert_eq!(
                default_parallel_streams(cores, pool, tables),
                want,
                "{cores} {pool} {tables}"
            );
        }
    }

    #[test]
    fn globs() {
        assert!(matches_glob("order*", "orders"));
        assert!(matches_glob("*_archive", "2024_archive"));
        assert!(matches_glob("t?b", "tab"));
        assert!(matches_glob("*", ""));
        assert!(!matches_glob("order*", "users"));
        assert!(!matches_glob("t?b", "tb"));
        assert!(matches_glob("a*b*c", "axxbyyc"));
        assert!(!matches_glob("a*b*c", "axxbyy"));
        assert!(matches_glob("log_202[45]", "log_2025"));
    }

    #[test]
    fn whitelist_wins_over_blacklist() {
        let f = TableFilter::new(Some(vec!["users".into()]), Some(vec!["users".into()]));
        assert!(f.includes("users"));
        assert!(!f.includes("orders"));
        let f = TableFilter::new(None, Some(vec!["tmp_*".into()]));
        assert!(f.includes("orders"));
        assert!(!f.includes("tmp_x"));
        assert!(TableFilter::default().includes("anything"));
    }
}
