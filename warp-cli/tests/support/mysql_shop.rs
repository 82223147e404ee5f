//! A MariaDB schema replicated by the real binary, shared by the MySQL suites: its
//! source writes are counted per key, so no destination version may exceed them.
#![allow(dead_code)] // each suite uses its own part

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use sqlx::PgPool;
use warp_core::{Row, Source, TableReport, TableSchema, Value};
use warp_e2e::replica::{self, TempDir};
use warp_e2e::Process;
use warp_source_mysql::MysqlSource;

pub struct Shop {
    pub db: String,
    pub config: PathBuf,
    pub dir: TempDir,
    pub mysql: mysql_async::Pool,
    pub pg: PgPool,
    /// Source writes per (table, id): `_cartridge_version` may never exceed it.
    pub writes: Arc<Mutex<HashMap<(String, i64), u64>>>,
}

pub async fn shop(name: &str, orders: i64, chunk: usize) -> Shop {
    shop_to(name, orders, chunk, &warp_e2e::peer_url("WARP_TEST_PG_URL")).await
}

/// A shop replicated into the PostgreSQL at `pg_url`.
pub async fn shop_to(name: &str, orders: i64, chunk: usize, pg_url: &str) -> Shop {
    shop_at(
        name,
        orders,
        chunk,
        &warp_e2e::peer_url("WARP_TEST_MARIADB_URL"),
        pg_url,
    )
    .await
}

/// A shop at the MariaDB at `my_url`, replicated into the PostgreSQL at `pg_url`.
pub async fn shop_at(name: &str, orders: i64, chunk: usize, my_url: &str, pg_url: &str) -> Shop {
    let db = format!("e2e_{name}");
    let mysql = mysql_async::Pool::new(mysql_async::Opts::from_url(my_url).unwrap());
    let mut conn = mysql.get_conn().await.unwrap();
    for stmt in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
        format!("CREATE TABLE {db}.customers (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, tier ENUM('basic','gold'), since DATETIME(6))"),
        format!("CREATE TABLE {db}.orders (id BIGINT PRIMARY KEY, customer_id INT, amount DECIMAL(12,2), status VARCHAR(10), note TEXT NULL, updated TIMESTAMP(6) NULL, payload JSON)"),
    ] {
        conn.query_drop(stmt).await.unwrap();
    }
    let writes = Arc::new(Mutex::new(HashMap::new()));
    conn.query_drop(format!("USE {db}")).await.unwrap();
    conn.query_drop(format!(
        "INSERT INTO {db}.customers SELECT seq, CONCAT('customer ', seq), IF(seq % 3 = 0, 'gold', 'basic'), '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_50"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "INSERT INTO {db}.orders SELECT seq, seq % 50 + 1, seq * 1.25, 'new', IF(seq % 4 = 0, NULL, CONCAT('note ', seq)), '2024-01-02 03:04:05.123456', JSON_OBJECT('n', seq) FROM seq_1_to_{orders}"
    ))
    .await
    .unwrap();
    {
        let mut w = writes.lock().unwrap();
        for id in 1..=50 {
            w.insert(("customers".to_owned(), id), 1);
        }
        for id in 1..=orders {
            w.insert(("orders".to_owned(), id), 1);
        }
    }
    let pg = replica::fresh_pg_at(pg_url, &[&db, &format!("{db}_meta")]).await;
    let dir = TempDir::new(&format!("e2e-{name}"));
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: single\nsingle_schema_name: {db}\n\
             performance: {{ write_batch_max_wait: 0.2, retry_delay: 0.2, retry_max_delay: 2, failed_table_cooldown: 1, lease_ttl: 3 }}\n\
             source: {{ type: mysql, connection_string: '{my_url}/{db}', database: {db}, server_id: {} }}\n\
             destination: {{ type: postgresql, connection_string: '{pg_url}', schema: {db}, metadata_schema: {db}_meta }}\n\
             schemas:\n- name: {db}\n  snapshot_chunk_size: {chunk}\n  parallel_streams: 2\n\
             monitoring: {{ metrics_port: {}, health_check_port: {} }}\n\
             logging: {{ level: info, format: text }}\n",
100_000 + std::process::id() % 40_000 * 20,
            warp_e2e::free_port(),
            warp_e2e::free_port()
        ),
    )
    .unwrap();
    Shop {
        db,
        config,
        dir,
        mysql,
        pg,
        writes,
    }
}

/// Updates `tables` in turn (one row of the first `rows` per round) until `stop`, each
/// write counted.
pub fn keep_writing(
    shop: &Arc<Shop>,
    tables: &'static [&'static str],
    rows: i64,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (shop, stop) = (Arc::clone(shop), Arc::clone(stop));
    tokio::spawn(async move {
        let mut round = 0i64;
        while !stop.load(Ordering::SeqCst) {
            let t = tables[round as usize % tables.len()];
            let id = (round * 37) % rows + 1;
            let column = if t == "customers" { "name" } else { "status" };
            shop.exec(&format!(
                "UPDATE {t} SET {column} = 'r{round}' WHERE id = {id}"
            ))
            .await;
            shop.wrote(t, id);
            round += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

impl Shop {
    pub fn run(&self) -> Process {
        Process::spawn(
            env!("CARGO_BIN_EXE_cartridge-warp"),
            &["run", "--config", self.config.to_str().unwrap()],
            &self.dir.join("run.log"),
        )
    }

    /// One replica of the schema, as pod `pod` with its own health and metrics ports
    /// (logging to `<pod>.log`).
    pub fn run_replica(&self, pod: &str, health_port: u16) -> Process {
        warp_e2e::run_replica(
            env!("CARGO_BIN_EXE_cartridge-warp"),
            &self.config,
            &self.dir.0,
            pod,
            health_port,
        )
    }

    pub fn replica_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{pod}.log"))).unwrap_or_default()
    }

    pub fn status(&self) -> Vec<TableReport> {
        warp_e2e::status(env!("CARGO_BIN_EXE_cartridge-warp"), &self.config)
    }

    /// Another session's `ACCESS EXCLUSIVE` lock on `table`'s landing table, held until
    /// the returned transaction ends: the table's writer blocks on it.
    pub async fn lock_landing(&self, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut lock = self.pg.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {}.{table} IN ACCESS EXCLUSIVE MODE",
            self.db
        )))
        .execute(&mut *lock)
        .await
        .unwrap();
        lock
    }

    /// Waits until `status` shows `n` tables streaming.
    pub async fn wait_streaming(&self, n: usize) {
        let bin = env!("CARGO_BIN_EXE_cartridge-warp");
        warp_e2e::wait_streaming(bin, &self.config, n, || self.log()).await;
    }

    /// Every process log of this shop (`run.log`, replicas' and cycles' logs), each under
    /// its file name, for failure messages.
    pub fn log(&self) -> String {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir.0)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                format!("==> {} <==\n{text}", p.display())
            })
            .collect()
    }

    pub async fn exec(&self, sql: &str) {
        // A pooled connection may predate a restart of the server: a connection error is
        // retried on a new one (a statement the server refused is not).
        for attempt in 1.. {
            let done = async {
                let mut conn = self.mysql.get_conn().await?;
                conn.query_drop(format!("USE {}", self.db)).await?;
                conn.query_drop(sql).await
            }
            .await;
            match done {
                Ok(()) => return,
                Err(mysql_async::Error::Server(e)) => panic!("{sql}: {e}"),
                Err(e) if attempt >= 3 => panic!("{sql}: {e}"),
                Err(_) => continue,
            }
        }
    }

    /// Sets `column` of rows 1..=`rows` of `table` in turn, `count` times (`label` and the
    /// round in the value), each write counted.
    pub async fn update_each(&self, table: &str, column: &str, label: &str, count: i64, rows: i64) {
        for i in 0..count {
            let id = i % rows + 1;
            self.exec(&format!(
                "UPDATE {table} SET {column} = '{label}{i}' WHERE id = {id}"
            ))
            .await;
            self.wrote(table, id);
        }
    }

    /// `cartridge-warp resync` of `table`; returns what it printed.
    pub fn resync(&self, table: &str) -> String {
        warp_e2e::resync(
            env!("CARGO_BIN_EXE_cartridge-warp"),
            &self.config,
            &self.db,
            table,
        )
    }

    /// Waits until a process log of this shop contains `needle` (`what` names it when it
    /// never does).
    pub async fn wait_log(&self, needle: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never logged `{needle}`\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn wrote(&self, table: &str, id: i64) {
        *self
            .writes
            .lock()
            .unwrap()
            .entry((table.to_owned(), id))
            .or_default() += 1;
    }

    /// Source rows (read through the source's decoder) and live destination rows (through
    /// the sink's), per table.
    pub async fn both(&self, table: &str) -> (Vec<Row>, Vec<Row>, TableSchema) {
        let (loaded, schema) = replica::load(&self.config);
        let source = MysqlSource::new(&loaded.config.source, &schema).unwrap();
        let t = source
            .discover(&schema)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id.name == table)
            .unwrap();
        let read = schema.table(table).read_settings();
        // Retried while transient, as the engine does (a start position waits while
        // an XA transaction is prepared).
        let plan = warp_e2e::retried(|| source.plan_snapshot(&t, &read, usize::MAX / 2))
            .await
            .unwrap();
        let mut src = Vec::new();
        for chunk in &plan.chunks {
            let mut pages = source.read_chunk(&t, &read, chunk).await.unwrap().rows;
            while let Some(page) = pages.next().await {
                src.extend(page.unwrap().into_rows().unwrap());
            }
        }
        let live = replica::live(replica::landed(&self.pg, &self.config, &t).await);
        (src, live, t)
    }

    pub async fn wait_equal(&self, table: &str) {
        replica::wait_equal(
            table,
            || self.log(),
            || async {
                let (src, dest, _) = self.both(table).await;
                (src, dest)
            },
        )
        .await;
    }

    /// No destination row counts more versions than the source made changes to it.
    pub async fn assert_no_double_apply(&self, table: &str) {
        let (_, _, t) = self.both(table).await;
        let rows = replica::landed(&self.pg, &self.config, &t).await;
        let writes = self.writes.lock().unwrap();
        replica::assert_versions_within(table, &rows, |key| {
            let Value::Int(id) = key else {
                panic!("integer key")
            };
            writes.get(&(table.to_owned(), *id)).copied().unwrap_or(0)
        });
    }

    /// Replicates as a MariaDB user of this shop's own (named after its database), so the
    /// server's process list tells this shop's connections from other suites'.
    pub async fn own_user(&self) {
        let user = &self.db;
        for host in ["localhost", "%"] {
            self.exec(&format!("CREATE OR REPLACE USER '{user}'@'{host}'"))
                .await;
            self.exec(&format!("GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}'"))
                .await;
        }
        let text = std::fs::read_to_string(&self.config).unwrap();
        let own = text.replacen("'mysql://root@", &format!("'mysql://{user}@"), 1);
        assert_ne!(own, text, "the config names the root user");
        std::fs::write(&self.config, own).unwrap();
    }

    /// Binlog dump connections of this shop's own user (`SHOW PROCESSLIST`).
    pub async fn binlog_dumps(&self) -> usize {
        let mut conn = self.mysql.get_conn().await.unwrap();
        let n: Option<u64> = conn
            .exec_first(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump' AND USER = ?",
                (&self.db,),
            )
            .await
            .unwrap();
        n.unwrap_or(0) as usize
    }

    /// Sets `key: value` in the config's `performance` mapping.
    pub fn tune(&self, key: &str, value: &str) {
        warp_e2e::tune(&self.config, key, value);
    }

    pub async fn scalar_pg(&self, sql: String) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pg)
            .await
            .unwrap()
    }
}
