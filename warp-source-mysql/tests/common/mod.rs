//! Shared by the MySQL source suites.
#![allow(dead_code)] // each suite uses its own part

pub mod compressing;
pub mod dump_proxy;

use futures::stream::BoxStream;
use futures::StreamExt;
use warp_core::config::{load_str, ConfigOverrides, Environment, ResolvedSchema};
use warp_core::{
    ChunkRead, FeedItem, FeedTable, Key, KeyRange, Position, SnapshotPlan, Source, StreamFragment,
    TableSchema, Value,
};
use warp_source_mysql::MysqlSource;

/// The source with its schema's settings: its methods call the source as the engine
/// does, each table with its own read settings.
pub struct Configured {
    pub source: MysqlSource,
    pub schema: ResolvedSchema,
}

impl std::ops::Deref for Configured {
    type Target = MysqlSource;
    fn deref(&self) -> &MysqlSource {
        &self.source
    }
}

type Fragments = BoxStream<'static, warp_core::Result<StreamFragment>>;

impl Configured {
    fn read(&self, t: &TableSchema) -> warp_core::ReadSettings {
        self.schema.table(&t.id.name).read_settings()
    }

    pub async fn discover(&self) -> warp_core::Result<Vec<TableSchema>> {
        self.source.discover(&self.schema).await
    }

    /// Retried while transient, as the engine does (a start position waits while another
    /// test holds an XA transaction prepared).
    pub async fn plan_snapshot(
        &self,
        t: &TableSchema,
        chunk_rows: usize,
    ) -> warp_core::Result<SnapshotPlan> {
        let read = self.read(t);
        warp_e2e::retried(|| self.source.plan_snapshot(t, &read, chunk_rows)).await
    }

    pub async fn existing_keys(
        &self,
        t: &TableSchema,
        keys: &[Key],
    ) -> warp_core::Result<Option<Vec<Key>>> {
        self.source.existing_keys(t, &self.read(t), keys).await
    }

    pub async fn live_keys(&self, t: &TableSchema) -> warp_core::Result<Option<Vec<Key>>> {
        self.source.live_keys(t, &self.read(t)).await
    }

    pub async fn read_chunk(
        &self,
        t: &TableSchema,
        chunk: &KeyRange,
    ) -> warp_core::Result<ChunkRead> {
        self.source.read_chunk(t, &self.read(t), chunk).await
    }

    /// Retried while transient, as [`Configured::plan_snapshot`].
    pub async fn current_position(&self, t: &TableSchema) -> warp_core::Result<Position> {
        let read = self.read(t);
        warp_e2e::retried(|| self.source.current_position(t, &read)).await
    }

    pub async fn stream(&self, t: &TableSchema, from: &Position) -> warp_core::Result<Fragments> {
        self.source.stream(t, &self.read(t), from).await
    }

    pub async fn open_feed(
        &self,
        tables: &[TableSchema],
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
        let tables: Vec<FeedTable> = tables
            .iter()
            .map(|t| FeedTable {
                schema: t.clone(),
                read: self.read(t),
            })
            .collect();
        self.source.open_feed(&tables, from).await
    }
}

/// The source of schema `db` as the config loader builds it from `source_fields` (the
/// inside of the `source:` mapping, after `type: mysql`).
pub fn source_config(source_fields: &str, db: &str) -> warp_core::Result<Configured> {
    tuned_source(source_fields, db, "")
}

/// The source of schema `db` reading the MariaDB peer through a local proxy on `port`.
pub fn through_proxy(port: u16, db: &str, server_id_base: u32) -> Configured {
    source_config(
        &format!(
            "connection_string: 'mysql://root@127.0.0.1:{port}/{db}', ssl_mode: disabled, server_id: {}",
            server_id(server_id_base)
        ),
        db,
    )
    .unwrap()
}

/// [`source_config`] with more `performance` fields (`, key: value` each).
pub fn tuned_source(
    source_fields: &str,
    db: &str,
    performance: &str,
) -> warp_core::Result<Configured> {
    let yaml = format!(
        "performance: {{ polling_interval: 0.1{performance} }}\n\
         source: {{ type: mysql, {source_fields} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas: [ {{ name: {db}, source_database: {db} }} ]\n"
    );
    let loaded = load_str(
        &yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .expect("config");
    let schema = loaded.config.schemas_to_run(None).remove(0);
    Ok(Configured {
        source: MysqlSource::new(&loaded.config.source, &schema)?,
        schema,
    })
}

/// `db` dropped and created again, as the current database of `conn`.
pub async fn fresh_database(conn: &mut mysql_async::Conn, db: &str) {
    use mysql_async::prelude::Queryable;
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
        format!("USE {db}"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
}

/// A binlog reader id no other test process uses (`base` keeps suites apart).
pub fn server_id(base: u32) -> u32 {
    base + std::process::id() % 40_000 * 20
}

/// Every row value of one chunk read, in the order the source gave them.
pub async fn rows_of_chunk(read: ChunkRead) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for page in read.rows.collect::<Vec<_>>().await {
        rows.extend(
            page.unwrap()
                .into_rows()
                .unwrap()
                .into_iter()
                .map(|r| r.values),
        );
    }
    rows
}

/// The whole snapshot of `t` in chunks of `chunk_rows`, as the engine would copy it.
pub async fn copy_all(source: &Configured, t: &TableSchema, chunk_rows: usize) -> Vec<Vec<Value>> {
    let plan = source.plan_snapshot(t, chunk_rows).await.unwrap();
    let mut rows = Vec::new();
    for chunk in &plan.chunks {
        rows.extend(rows_of_chunk(source.read_chunk(t, chunk).await.unwrap()).await);
    }
    rows
}

/// A committed transaction a feed handed out: (key, operation) of each row change, and
/// the commit position.
pub type Transaction = (
    Vec<(Option<i64>, warp_core::Operation)>,
    warp_source_mysql::BinlogPosition,
);

/// The next `n` transactions with row changes `feed` yields; `deadline` is for a hung
/// feed.
pub async fn transactions(
    feed: &mut BoxStream<'static, warp_core::Result<FeedItem>>,
    n: usize,
    deadline: std::time::Duration,
) -> Vec<Transaction> {
    let mut done = Vec::new();
    let mut open = Vec::new();
    let read = async {
        while done.len() < n {
            match feed.next().await.expect("feed ended").expect("feed error") {
                FeedItem::Fragment { changes, commit } => {
                    for c in changes {
                        if let warp_core::Change::Row(e) = c.change {
                            let id = match e.key.first() {
                                Some(Value::Int(i)) => Some(*i),
                                _ => None,
                            };
                            open.push((id, e.op));
                        }
                    }
                    if let Some(commit) = commit.filter(|_| !open.is_empty()) {
                        let at = commit.position.decode().unwrap();
                        done.push((std::mem::take(&mut open), at));
                    }
                }
                FeedItem::TableFailed { error, .. } => panic!("table failed: {error}"),
            }
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .expect("the feed delivered");
    done
}
