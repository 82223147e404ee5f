//! `Source` for MySQL/MariaDB: consistent chunked snapshots (each chunk read inside a
//! consistent snapshot whose exact binlog position it reports) and binlog streaming.

mod binary_json;
mod binlog;
mod ca_probe;
mod charset;
mod connect;
mod ddl;
mod ddl_scope;
mod decode;
mod discover;
mod error;
mod foreign_keys;
mod gtid_set;
mod options;
mod poll;
mod position;
mod retention;
mod rotate;
mod snapshot;
mod table_map;
mod types;
mod unhandled;
mod xa;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use mysql_async::prelude::Queryable;
use warp_core::config::{ResolvedSchema, SourceConfig};
use warp_core::{
    ChangeStrategy, ChunkPage, ChunkRead, Error, FeedItem, FeedTable, KeyRange, Position,
    ReadSettings, SnapshotPlan, Source, StreamFragment, TableReads, TableSchema,
};

pub use error::MysqlError;
pub use options::{MysqlOptions, MysqlSslMode};
pub use position::BinlogPosition;

/// How a stream's start position is taken, for the tests that race XA commits with it.
pub mod start_position {
    pub use crate::snapshot::{between_xa_checks, current};
}

use discover::MysqlTable;
use error::Context;

/// Server variables a binlog reader depends on.
const BINLOG_VARIABLES: &[&str] = &[
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_row_metadata",
    "binlog_row_value_options",
    "log_bin_compress",
];

/// What must change for the binlog to carry every row whole and readable. Variables a
/// server does not have (MariaDB's compression on MySQL, MySQL's on MariaDB) pass.
fn binlog_settings_wrong(settings: &HashMap<String, String>) -> Vec<String> {
    let value = |name: &str| settings.get(name).map(String::as_str);
    let is = |name: &str, want: &[&str]| {
        value(name).is_some_and(|v| want.iter().any(|w| v.eq_ignore_ascii_case(w)))
    };
    let mut wrong = Vec::new();
    for (name, want) in [
        ("log_bin", &["ON", "1"][..]),
        ("binlog_format", &["ROW"]),
        ("binlog_row_image", &["FULL"]),
        ("binlog_row_metadata", &["FULL"]),
    ] {
        if !is(name, want) {
            wrong.push(format!(
                "{name}={} (is {})",
                want[0],
                value(name).unwrap_or("not set")
            ));
        }
    }
    for (name, off) in [
        ("binlog_row_value_options", &[""][..]),
        ("log_bin_compress", &["OFF", "0"]),
    ] {
        if value(name).is_some() && !is(name, off) {
            wrong.push(format!(
                "{name}={} (is {})",
                if off[0].is_empty() { "''" } else { off[0] },
                value(name).unwrap_or_default()
            ));
        }
    }
    wrong
}

/// Default first binlog reader id; each stream takes the next one (ids must differ
/// between concurrent readers of one server).
const DEFAULT_SERVER_ID: u32 = 4_200_000;
/// Rows per page read from a snapshot chunk (fewer for wide rows, `ReadSettings::page_rows`).
const PAGE_ROWS: usize = 5_000;

/// The first binlog reader id for `schema` on replica `replica`: `server_id` (default
/// 4,200,000) plus a block of [`IDS_PER_REPLICA`] ids picked by a stable hash of both
/// names. The server drops a reader when another registers the same id, so replicas of
/// one schema, and schemas of one replica, must never share one.
pub fn replica_server_id(configured: Option<u32>, replica: &str, schema: &str) -> u32 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = format!("{replica}/{schema}")
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    let block = hash % REPLICA_BLOCKS;
    configured
        .unwrap_or(DEFAULT_SERVER_ID)
        .wrapping_add(block * IDS_PER_REPLICA)
        .max(1)
}

/// Reader ids reserved per replica and schema: the shared feed's, then one per direct
/// per-table stream (`verify` and tools).
pub const IDS_PER_REPLICA: u32 = 256;
const REPLICA_BLOCKS: u32 = 65_536;

/// Test hook: snapshot positions are pinned by the MySQL path (a brief table read lock)
/// even on MariaDB, whose own snapshot position would otherwise be used.
#[doc(hidden)]
pub fn force_table_lock_snapshots(on: bool) {
    snapshot::force_table_lock(on);
}

/// Creates the source for one schema.
pub fn build(
    source: &SourceConfig,
    options: MysqlOptions,
    schema: &ResolvedSchema,
) -> warp_core::Result<Arc<dyn Source>> {
    Ok(Arc::new(MysqlSource::with_options(
        source, options, schema,
    )?))
}

pub struct MysqlSource {
    /// The pool, and options for binlog readers: each holds its connection for as long
    /// as it streams, so they connect outside the pool (which stays free for snapshots,
    /// polls and checks).
    connect: connect::Connector,
    /// Set once the server's binlog settings were found usable: every table checks them
    /// before it snapshots or streams, not only `validate`.
    prerequisites_met: tokio::sync::OnceCell<()>,
    /// The binlog feed, or `timestamp` polling.
    strategy: ChangeStrategy,
    database: String,
    schema_name: String,
    /// The shared feed's binlog reader id; direct per-table streams ([`Source::stream`],
    /// used by tools and tests) take the next ids of the replica's block.
    server_id: u32,
    next_stream_id: AtomicU32,
    /// Discovered shapes, updated by the feed as DDL passes.
    tables: Arc<Mutex<HashMap<String, MysqlTable>>>,
}

impl MysqlSource {
    /// The source with the options of the `source` section.
    pub fn new(source: &SourceConfig, schema: &ResolvedSchema) -> warp_core::Result<Self> {
        Self::with_options(source, source.connector_or_error()?, schema)
    }

    pub fn with_options(
        source: &SourceConfig,
        options: MysqlOptions,
        schema: &ResolvedSchema,
    ) -> warp_core::Result<Self> {
        let url = source
            .connection_string
            .as_ref()
            .ok_or_else(|| Error::source_permanent("source.connection_string is required", None))?;
        Ok(Self {
            connect: connect::Connector::new(&options, url.expose())?,
            prerequisites_met: tokio::sync::OnceCell::new(),
            strategy: ChangeStrategy::of(source.strategy()),
            database: schema.source_database.clone(),
            schema_name: schema.name.clone(),
            server_id: options.server_id.unwrap_or(DEFAULT_SERVER_ID),
            next_stream_id: AtomicU32::new(1),
            tables: Arc::default(),
        })
    }

    fn cached(&self, table: &TableSchema) -> warp_core::Result<MysqlTable> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let found = tables.get(&table.id.name).ok_or_else(|| {
            Error::source_transient(format!(
                "{} is not among the source's tables (not discovered yet, or dropped at the source): it is copied once it exists",
                table.id
            ))
        })?;
        // The engine's view decides column order (it may carry columns dropped since, or
        // a shape recorded before a rename the catalog already holds).
        let mut aligned = found.clone();
        aligned.schema = table.clone();
        aligned.columns = table
            .columns
            .iter()
            .map(|c| {
                found
                    .columns
                    .iter()
                    .find(|m| m.name == c.name)
                    .cloned()
                    .unwrap_or(types::MysqlColumn {
                        name: c.name.clone(),
                        kind: types::Kind::Unseen,
                        column_type: c.column_type.clone(),
                    })
            })
            .collect();
        Ok(aligned)
    }

    fn zero_dates(&self) -> binlog::ZeroDates {
        let schema = self.schema_name.clone();
        Arc::new(move |table, n| {
            metrics::counter!(warp_core::metrics::ZERO_DATES_TOTAL, "schema" => schema.clone(), "table" => table.to_owned()).increment(n);
        })
    }

    /// A binlog feed of `tables` from `from`, reading as `server_id`.
    async fn binlog_feed(
        &self,
        tables: &[TableSchema],
        from: &Position,
        server_id: u32,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
        let tables = tables
            .iter()
            .map(|t| self.cached(t))
            .collect::<warp_core::Result<Vec<_>>>()?;
        let parents = self.unserved_parents(&tables);
        let from = BinlogPosition::decode(from)?;
        self.ensure_prerequisites().await?;
        let setup = binlog::FeedSetup {
            pool: self.connect.pool().await?,
            opts: self.connect.opts().await?,
            server_id,
            database: self.database.clone(),
            learnt: Arc::clone(&self.tables),
            zero_dates: self.zero_dates(),
        };
        Ok(binlog::feed(setup, tables, parents, from).await?)
    }

    /// The tables that `tables` reference with ON DELETE/UPDATE actions and that are not
    /// among them: a feed reads their row events for the children's cascades.
    fn unserved_parents(&self, tables: &[MysqlTable]) -> Vec<MysqlTable> {
        let known = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let mut parents: Vec<MysqlTable> = Vec::new();
        for key in tables.iter().flat_map(|t| &t.foreign_keys) {
            let Some(parent) = known
                .get(&key.parent)
                .filter(|_| key.parent_database == self.database)
            else {
                continue;
            };
            let listed = |name: &str| {
                tables
                    .iter()
                    .chain(&parents)
                    .any(|t| t.schema.id.name == name)
            };
            if key.acts() && !listed(&key.parent) {
                parents.push(parent.clone());
            }
        }
        parents
    }

    /// The position a snapshot or stream starts from: a watermark or the binlog's.
    /// Opens a consistent snapshot on `conn` and returns its position. `stream_start`:
    /// the position may become where a stream starts (it then carries the GTID); chunk
    /// positions are only compared with it.
    async fn start_position(
        &self,
        t: &MysqlTable,
        read: &ReadSettings,
        conn: &mut mysql_async::Conn,
        stream_start: bool,
    ) -> warp_core::Result<Position> {
        if self.strategy.polls() {
            let column = read.change_column(&t.schema.id)?;
            let w = poll::current(&self.connect.pool().await?, &self.database, t, column).await?;
            snapshot::open_snapshot(conn).await?;
            w.encode()
        } else {
            let of = snapshot::SnapshotOf {
                opts: &self.connect.opts().await?,
                database: &self.database,
                table: &t.schema.id.name,
            };
            let position = if stream_start {
                // On the snapshot's own connection: a transaction prepared before the
                // position and decided after it would commit into neither the copy nor
                // the stream.
                snapshot::between_xa_checks(conn, async |c| {
                    snapshot::begin_snapshot(c, of, stream_start).await
                })
                .await?
            } else {
                snapshot::begin_snapshot(conn, of, stream_start).await?
            };
            position.encode()
        }
    }

    /// The prerequisites, checked once per process while they hold.
    async fn ensure_prerequisites(&self) -> error::Result<()> {
        self.prerequisites_met
            .get_or_try_init(|| self.check_prerequisites())
            .await
            .map(|_| ())
    }

    /// Connects and checks the binlog prerequisites.
    async fn check_prerequisites(&self) -> error::Result<()> {
        let mut conn = self.connect.conn().await?;
        if self.strategy.polls() {
            conn.query_drop("SELECT 1")
                .await
                .context("check connection")?;
            return Ok(());
        }
        // Only the variables this server has come back (MySQL and MariaDB differ).
        let settings: Vec<(String, String)> = conn
            .query(format!(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
                BINLOG_VARIABLES
                    .iter()
                    .map(|v| format!("'{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .context("read binlog settings")?;
        let wrong = binlog_settings_wrong(&settings.into_iter().collect());
        if !wrong.is_empty() {
            return Err(MysqlError::Unsupported {
                message: format!(
                    "the source's binlog is not usable for CDC: set {}",
                    wrong.join(", ")
                ),
                hint: Some(format!(
                    "set {} in the server configuration and restart it",
                    wrong
                        .iter()
                        .map(|w| w.split(" (").next().unwrap_or(w))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        snapshot::current(&mut conn).await.map_err(|e| match e {
            MysqlError::Server { code: 1227, .. } => MysqlError::Unsupported {
                message: "the source user cannot read the binlog position".into(),
                hint: Some("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the user".into()),
            },
            other => other,
        })?;
        Ok(())
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn check(&self) -> warp_core::Result<warp_core::ConnectionSecurity> {
        self.check_prerequisites().await?;
        Ok(self.connect.security().await?)
    }

    async fn discover(&self, _reads: &dyn TableReads) -> warp_core::Result<Vec<TableSchema>> {
        let mut conn = self.connect.conn().await?;
        let tables = discover::tables(&mut conn, &self.database, None).await?;
        let schemas = tables.iter().map(|t| t.schema.clone()).collect();
        let mut cache = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        cache.clear();
        cache.extend(tables.into_iter().map(|t| (t.schema.id.name.clone(), t)));
        Ok(schemas)
    }

    async fn plan_snapshot(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk_rows: usize,
    ) -> warp_core::Result<SnapshotPlan> {
        let t = self.cached(table)?;
        self.ensure_prerequisites().await?;
        let mut conn = snapshot::conn(&self.connect.pool().await?).await?;
        let start = self.start_position(&t, read, &mut conn, true).await?;
        let chunks =
            snapshot::plan_chunks(&mut conn, &self.database, &t, chunk_rows.max(1)).await?;
        conn.query_drop("COMMIT").await.context("end snapshot")?;
        Ok(SnapshotPlan { start, chunks })
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk: &KeyRange,
    ) -> warp_core::Result<ChunkRead> {
        let t = self.cached(table)?;
        let page = read.page_rows(PAGE_ROWS, self.estimate_row_bytes(table).await?);
        let mut conn = snapshot::conn(&self.connect.pool().await?).await?;
        let position = self.start_position(&t, read, &mut conn, false).await?;
        // A polled table's copy leaves the rows at the position's value to the polls.
        let only = if self.strategy.polls() {
            let at = warp_core::Watermark::decode(&position)?;
            Some(poll::older_than(read.change_column(&table.id)?, &at))
        } else {
            None
        };
        let zero = self.zero_dates();
        let name = table.id.name.clone();
        let zero: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| zero(&name, n));
        let rows = snapshot::chunk_rows(
            conn,
            self.database.clone(),
            t,
            chunk.clone(),
            only,
            page,
            zero,
        )
        .map_ok(ChunkPage::Rows)
        .boxed();
        Ok(ChunkRead { position, rows })
    }

    async fn current_position(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> warp_core::Result<Position> {
        if self.strategy.polls() {
            let t = self.cached(table)?;
            return poll::current(
                &self.connect.pool().await?,
                &self.database,
                &t,
                read.change_column(&table.id)?,
            )
            .await?
            .encode();
        }
        let mut conn = self.connect.conn().await?;
        let position =
            snapshot::between_xa_checks(&mut conn, async |c| snapshot::current(c).await).await?;
        Ok(position.encode()?)
    }

    async fn log_retention(
        &self,
        needed: &Position,
    ) -> warp_core::Result<Option<warp_core::LogRetention>> {
        if self.strategy.polls() {
            return Ok(None);
        }
        let needed = BinlogPosition::decode(needed)?;
        let mut conn = self.connect.conn().await?;
        Ok(Some(retention::read(&mut conn, &needed).await?))
    }

    async fn stream(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
        let t = self.cached(table)?;
        if self.strategy.polls() {
            return Ok(poll::stream(
                self.connect.pool().await?,
                self.database.clone(),
                t,
                read.change_column(&table.id)?,
                warp_core::Watermark::decode(from)?,
                read.pace(poll::PAGE),
            )?);
        }
        // A reader of its own, beside the replica's shared feed.
        let id = self
            .server_id
            .wrapping_add(self.next_stream_id.fetch_add(1, AtomicOrdering::Relaxed));
        let feed = self
            .binlog_feed(std::slice::from_ref(table), from, id)
            .await?;
        Ok(warp_core::single_table(feed))
    }

    fn change_strategy(&self) -> ChangeStrategy {
        self.strategy
    }

    /// A chunk's position is the binlog position of its consistent snapshot: an exact
    /// point of the stream's log (a polled table's watermark is not).
    fn recopies_while_streaming(&self) -> bool {
        !self.strategy.polls()
    }

    /// A chunk is read in the catalog's shape of the plan; it never reshapes.
    fn copies_in_fixed_shape(&self) -> bool {
        true
    }

    /// The binlog's DDL replays in log order from the shape recorded at a checkpoint; a
    /// polled table has no log of its DDL, so it starts from today's catalog.
    fn follows_schema_in_log(&self) -> bool {
        !self.strategy.polls()
    }

    async fn open_feed(
        &self,
        tables: &[FeedTable],
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
        let tables: Vec<TableSchema> = tables.iter().map(|t| t.schema.clone()).collect();
        self.binlog_feed(&tables, from, self.server_id).await
    }

    /// A key is placed in a chunk only when the server orders the table's keys as their
    /// values compare; otherwise (text under an insensitive collation, ENUM keys) it is
    /// never taken for one a later chunk read already holds: the change applies again
    /// over the copied row, which replays to the same state, instead of being skipped
    /// when the server had put the key in an earlier chunk.
    fn chunk_contains(
        &self,
        table: &warp_core::TableId,
        chunk: &KeyRange,
        key: &[warp_core::Value],
    ) -> bool {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables
            .get(&table.name)
            .is_some_and(|t| t.chunk_holds(chunk, key))
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> warp_core::Result<Ordering> {
        if self.strategy.polls() {
            return warp_core::Watermark::compare(a, b);
        }
        Ok(a.typed(BinlogPosition::decode)?
            .order(&*b.typed(BinlogPosition::decode)?))
    }

    async fn live_keys(
        &self,
        table: &TableSchema,
        _read: &ReadSettings,
    ) -> warp_core::Result<Option<Vec<warp_core::Key>>> {
        let t = self.cached(table)?;
        let mut conn = self.connect.conn().await?;
        Ok(Some(
            snapshot::all_keys(&mut conn, &self.database, &t).await?,
        ))
    }

    async fn existing_keys(
        &self,
        table: &TableSchema,
        _read: &ReadSettings,
        keys: &[warp_core::Key],
    ) -> warp_core::Result<Option<Vec<warp_core::Key>>> {
        let t = self.cached(table)?;
        let mut conn = self.connect.conn().await?;
        Ok(Some(
            snapshot::existing_keys(&mut conn, &self.database, &t, keys).await?,
        ))
    }

    async fn plan_notes(
        &self,
        table: &TableSchema,
        _read: &ReadSettings,
        _snapshot: bool,
    ) -> warp_core::Result<Vec<String>> {
        Ok(foreign_keys::notes(&self.cached(table)?, &self.database))
    }

    async fn estimate_rows(&self, table: &TableSchema) -> warp_core::Result<Option<u64>> {
        self.table_estimate(table, TableEstimate::Rows).await
    }

    /// `AVG_ROW_LENGTH`: InnoDB's data length over its row estimate (pages included, so a
    /// little above the rows' own size; 0 for an empty or never-analysed table).
    async fn estimate_row_bytes(&self, table: &TableSchema) -> warp_core::Result<Option<u64>> {
        let bytes = self.table_estimate(table, TableEstimate::RowBytes).await?;
        Ok(bytes.filter(|&b| b > 0))
    }
}

/// The server's estimates in `information_schema.TABLES`.
#[derive(Clone, Copy)]
enum TableEstimate {
    Rows,
    RowBytes,
}

impl MysqlSource {
    async fn table_estimate(
        &self,
        table: &TableSchema,
        what: TableEstimate,
    ) -> warp_core::Result<Option<u64>> {
        let (sql, context) = match what {
            TableEstimate::Rows => (
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                "estimate rows",
            ),
            TableEstimate::RowBytes => (
                "SELECT AVG_ROW_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                "estimate row size",
            ),
        };
        let mut conn = self.connect.conn().await?;
        let value: Option<Option<u64>> = conn
            .exec_first(sql, (&self.database, &table.id.name))
            .await
            .context(context)?;
        Ok(value.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_settings_name_what_to_change() {
        let of = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let good = [
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
        ];
        assert!(
            binlog_settings_wrong(&of(&good)).is_empty(),
            "MariaDB 10.11"
        );
        let mysql8 = [
            &good[..],
            &[
                ("binlog_row_value_options", ""),
                ("binlog_transaction_compression", "OFF"),
            ],
        ]
        .concat();
        assert!(binlog_settings_wrong(&of(&mysql8)).is_empty(), "MySQL 8");
        // Compressed transactions are read (their inner events are decompressed).
        let compressed = [&good[..], &[("binlog_transaction_compression", "ON")]].concat();
        assert!(binlog_settings_wrong(&of(&compressed)).is_empty());
        let bad = [
            &good[..],
            &[
                ("binlog_row_value_options", "PARTIAL_JSON"),
                ("binlog_transaction_compression", "ON"),
                ("log_bin_compress", "ON"),
            ],
        ]
        .concat();
        assert_eq!(
            binlog_settings_wrong(&of(&bad)),
            [
                "binlog_row_value_options='' (is PARTIAL_JSON)",
                "log_bin_compress=OFF (is ON)"
            ]
        );
        assert_eq!(
            binlog_settings_wrong(&of(&[("log_bin", "OFF")])).len(),
            4,
            "{:?}",
            binlog_settings_wrong(&of(&[("log_bin", "OFF")]))
        );
    }

    #[test]
    fn replicas_and_schemas_get_distinct_stable_reader_ids() {
        let ids: Vec<u32> = ["warp-users-0", "warp-users-1", "warp-users-2"]
            .iter()
            .flat_map(|pod| ["users", "orders"].map(|s| replica_server_id(None, pod, s)))
            .collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert!(a.abs_diff(*b) >= IDS_PER_REPLICA, "{ids:?}");
            }
        }
        assert_eq!(ids[0], replica_server_id(None, "warp-users-0", "users"));
        assert!(replica_server_id(Some(7), "p", "s") >= 7);
    }
}
