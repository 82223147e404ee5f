//! End to end from MariaDB (binlog) into PostgreSQL with the real `cartridge-warp`
//! binary, with default settings and with tuned ones, next to the limits measured in the
//! same run on the same rows: a raw full read of the source table, a raw `COPY` of the
//! rows into PostgreSQL, PostgreSQL applying the same change workload itself
//! (the same 1,000-row statements on a copy of the table, set-based), and PostgreSQL
//! merging the changes' row images with no client work (`merge`: the floor of any
//! replicator that ships images).
//!
//! - snapshot: time from start until the table's checkpoint says `streaming`;
//! - stream at full speed: 300,000 mixed changes (a third each updates, inserts,
//!   deletes) written while the replicator is stopped, then the time it takes to catch up;
//! - lag at a fixed offered load: inserts at 10,000 changes/s for 20 s into a table whose
//!   rows carry their source commit time; lag = `_cartridge_updated_at` − that time.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::Value;

use crate::cpu::{self, CpuUse};
use crate::replicator::{until, Replicator};
use crate::{data, merge, sink, Measurement};

pub const DB: &str = "bench_src";
const INSERT_ROWS: i64 = 2_000;
/// The key of the last streamed change.
const MARKER: i64 = 9_000_000_000;

/// One run's figures.
pub struct Run {
    /// The limits (measured when asked), then ours.
    pub lines: Vec<Measurement>,
    /// Peak resident memory of `cartridge-warp` over the run, MiB.
    pub warp_rss_mib: f64,
    pub lag_p50: f64,
    pub lag_p99: f64,
    /// CPU spent during the snapshot and during the catch-up.
    pub snapshot_cpu: CpuUse,
    pub catch_up_cpu: CpuUse,
}

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub my_url: &'a str,
    pub binary: &'a Path,
    pub rows: u64,
    pub changes: u64,
    pub load_per_sec: u64,
    pub load_secs: u64,
}

/// Which settings a run gives the replicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// None: what a new user gets.
    Defaults,
    /// The best known for this machine (docs/benchmarks.md).
    Tuned,
}

impl Tuning {
    fn label(self) -> &'static str {
        match self {
            Self::Defaults => "default settings",
            Self::Tuned => "tuned",
        }
    }
}

/// A MariaDB literal for a generated value.
fn literal(v: &Value) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) => quote(s),
        Value::Json(j) => quote(&j.to_string()),
        Value::Timestamp(t) => quote(&t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        Value::TimestampTz(t) => quote(&t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        other => quote(&other.to_string()),
    }
}

/// Runs `sql`, its start quoted in the error.
pub async fn exec(
    conn: &mut mysql_async::Conn,
    sql: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    conn.query_drop(sql)
        .await
        .map_err(|e| format!("{}: {e}", &sql[..sql.len().min(120)]).into())
}

/// The 12-column table of `data`, as MariaDB types (tinyint priority, json, nullable text).
const DDL: &str = "(id BIGINT PRIMARY KEY, customer_id INT NOT NULL, status SMALLINT NOT NULL, \
    sku VARCHAR(32) NOT NULL, title VARCHAR(200) NOT NULL, amount DECIMAL(12,2) NOT NULL, \
    quantity INT NOT NULL, created_at DATETIME(6) NOT NULL, updated_at TIMESTAMP(6) NULL, \
    attributes JSON NOT NULL, note TEXT NULL, priority TINYINT NOT NULL)";

/// Generates `orders_seed` once (deterministic rows 1..=n); each run copies it.
pub async fn seed(my: &mysql_async::Pool, n: i64) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = my.get_conn().await?;
    exec(&mut conn, "SET SESSION time_zone = '+00:00'").await?;
    exec(&mut conn, &format!("DROP DATABASE IF EXISTS {DB}")).await?;
    exec(&mut conn, &format!("CREATE DATABASE {DB}")).await?;
    exec(&mut conn, &format!("CREATE TABLE {DB}.orders_seed {DDL}")).await?;
    let mut id = 1;
    while id <= n {
        let end = (id + INSERT_ROWS - 1).min(n);
        let values: Vec<String> = (id..=end)
            .map(|i| {
                let row = data::row(i);
                let cells: Vec<String> = row.values.iter().map(literal).collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        exec(
            &mut conn,
            &format!("INSERT INTO {DB}.orders_seed VALUES {}", values.join(", ")),
        )
        .await?;
        id = end + 1;
    }
    Ok(())
}

fn config(
    s: &Settings<'_>,
    tuning: Tuning,
    dir: &Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("bench.yaml");
    let (performance, schema) = match tuning {
        Tuning::Defaults => ("", ""),
        Tuning::Tuned => (
            "performance: { write_batch_size: 5000, write_batch_max_wait: 0.05 }\n",
            "  snapshot_chunk_size: 50000\n  parallel_streams: 2\n",
        ),
    };
    std::fs::write(
        &path,
        format!(
            "mode: single\nsingle_schema_name: bench\n{performance}\
             source: {{ type: mysql, connection_string: '{}/{DB}', database: {DB}, server_id: 4300000 }}\n\
             destination: {{ type: postgresql, connection_string: '{}', schema: bench_my_dest, metadata_schema: bench_my_meta }}\n\
             schemas:\n- name: bench\n{schema}  table_whitelist: [orders, ticks]\n\
             monitoring: {{ metrics_enabled: false, health_check_enabled: false }}\n\
             logging: {{ level: warn, format: text }}\n",
            s.my_url, s.pg_url
        ),
    )?;
    Ok(path)
}

/// The change workload in 1,000-row statements: a third each updates, inserts and
/// deletes, interleaved (`now` is the dialect's current time). The same statements go
/// to MariaDB for the replicator and to PostgreSQL for its own apply.
pub fn workload(table: &str, seed: &str, rows: u64, changes: u64, now: &str) -> Vec<String> {
    let third = i64::try_from(changes / 3).unwrap_or(i64::MAX);
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    let step = 1_000;
    let mut out = Vec::new();
    let mut id = 1;
    while id <= third {
        let end = (id + step - 1).min(third);
        out.push(format!("UPDATE {table} SET quantity = quantity + 1, updated_at = {now} WHERE id BETWEEN {id} AND {end}"));
        out.push(format!(
            "INSERT INTO {table} SELECT id + {rows}, customer_id, status, sku, title, amount, quantity, created_at, updated_at, attributes, note, priority FROM {seed} WHERE id BETWEEN {id} AND {end}"
        ));
        let gone = third + id;
        out.push(format!(
            "DELETE FROM {table} WHERE id BETWEEN {gone} AND {}",
            gone + (end - id)
        ));
        id = end + 1;
    }
    out
}

/// A fresh, vacuumed copy of the raw `orders` rows (key and indexes included) as
/// `bench_my_raw.{name}`.
pub async fn copy_of_orders(pg: &sqlx::PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS bench_my_raw.{name}; \
         CREATE TABLE bench_my_raw.{name} (LIKE bench_my_raw.orders INCLUDING ALL); \
         INSERT INTO bench_my_raw.{name} SELECT * FROM bench_my_raw.orders"
    )))
    .execute(pg)
    .await?;
    // Not in the statement above: a multi-statement string runs as one transaction.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE bench_my_raw.{name}"
    )))
    .execute(pg)
    .await?;
    Ok(())
}

/// Limit: PostgreSQL applying the change workload itself, set-based, each statement its
/// own transaction as at the source, on a copy of the rows with the same key.
async fn postgres_applies(
    pg: &sqlx::PgPool,
    s: &Settings<'_>,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    copy_of_orders(pg, "applied").await?;
    let statements = workload(
        "bench_my_raw.applied",
        "bench_my_raw.orders",
        s.rows,
        s.changes,
        "now()",
    );
    sink::settle(pg).await?;
    let started = Instant::now();
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(pg)
            .await?;
    }
    Ok(Measurement {
        name: "PostgreSQL applying the same changes itself (1,000-row statements, set-based)"
            .into(),
        rows: s.changes / 3 * 3,
        bytes: 0,
        took: started.elapsed(),
    })
}

/// One pass with `tuning`; the limits are measured too when `limits`.
pub async fn run(
    s: &Settings<'_>,
    tuning: Tuning,
    limits: bool,
) -> Result<Run, Box<dyn std::error::Error>> {
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(s.pg_url)
        .await?;
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(s.my_url)?);
    let mut conn = my.get_conn().await?;
    exec(&mut conn, "SET SESSION time_zone = '+00:00'").await?;
    exec(
        &mut conn,
        &format!("DROP TABLE IF EXISTS {DB}.orders, {DB}.ticks"),
    )
    .await?;
    exec(&mut conn, &format!("CREATE TABLE {DB}.orders {DDL}")).await?;
    exec(
        &mut conn,
        &format!("INSERT INTO {DB}.orders SELECT * FROM {DB}.orders_seed"),
    )
    .await?;
    exec(
        &mut conn,
        &format!("CREATE TABLE {DB}.ticks (id BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL)"),
    )
    .await?;
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bench_my_dest CASCADE; DROP SCHEMA IF EXISTS bench_my_meta CASCADE",
    )
    .execute(&pg)
    .await?;

    let mut lines = Vec::new();
    if limits {
        lines = measure_limits(&pg, &mut conn, s).await?;
    }
    let bytes = lines.first().map_or(0, |l| l.bytes);

    let dir = std::env::temp_dir().join(format!("warp-bench-mysql-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = config(s, tuning, &dir)?;
    let log = dir.join("warp.log");
    run_replicator(s, tuning, &pg, &mut conn, &config, &log, bytes, lines).await
}

/// The limits of this run: raw COPYs (text, binary), a raw read of the source,
/// PostgreSQL's own apply of the changes and its merge of their row images.
async fn measure_limits(
    pg: &sqlx::PgPool,
    conn: &mut mysql_async::Conn,
    s: &Settings<'_>,
) -> Result<Vec<Measurement>, Box<dyn std::error::Error>> {
    // Limit 1: a raw full read of the source table.
    let started = Instant::now();
    let mut read = 0u64;
    {
        let mut result = conn
            .query_iter(format!("SELECT * FROM {DB}.orders"))
            .await?;
        let mut rows = result
            .stream::<mysql_async::Row>()
            .await?
            .ok_or("no result set")?;
        while let Some(row) = rows.next().await {
            drop(row?);
            read += 1;
        }
    }
    let source_read = started.elapsed();
    // Limit 2: a raw COPY of the same rows (its bytes measure MB/s for every line).
    let raw = sink::raw_copy(pg, s.pg_url, "bench_my_raw", s.rows).await?;
    let mut raw_binary = sink::raw_copy_binary(pg, "bench_my_raw", s.rows).await?;
    raw_binary.bytes = raw.bytes; // MB/s of the same rows in text form, as every line
    if read != s.rows {
        return Err(format!("read {read} source rows, expected {}", s.rows).into());
    }
    let read_line = Measurement {
        name: "raw full read of the MariaDB table (mysql_async)".into(),
        rows: read,
        bytes: raw.bytes,
        took: source_read,
    };
    let applied = postgres_applies(pg, s).await?;
    let mut lines = vec![raw, raw_binary, read_line, applied];
    lines.extend(merge::postgres_merges_images(pg, s.rows, s.changes).await?);
    Ok(lines)
}

#[allow(clippy::too_many_arguments)]
async fn run_replicator(
    s: &Settings<'_>,
    tuning: Tuning,
    pg: &sqlx::PgPool,
    conn: &mut mysql_async::Conn,
    config: &Path,
    log: &Path,
    bytes: u64,
    mut lines: Vec<Measurement>,
) -> Result<Run, Box<dyn std::error::Error>> {
    let dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Snapshot.
    sink::settle(pg).await?;
    let started = Instant::now();
    let cpu_before = cpu::sample();
    let mut warp = Replicator::start(s.binary, config, log)?;
    until(
        pg,
        &mut warp,
        "SELECT 1 FROM bench_my_meta.checkpoints WHERE table_name = 'orders' AND phase = 'streaming'",
        Duration::from_secs(1_800),
        log,
    )
    .await?;
    let snapshot = started.elapsed();
    let snapshot_cpu = cpu::between(&cpu_before, &cpu::sample(), warp.pid());
    let mut peak = warp.stop()?;

    // Stream at full speed: a backlog of mixed changes, then the catch-up.
    let statements = workload(
        &format!("{DB}.orders"),
        &format!("{DB}.orders_seed"),
        s.rows,
        s.changes,
        "NOW(6)",
    );
    for statement in &statements {
        exec(conn, statement).await?;
    }
    // The marker is the orders table's last change (each table has its own binlog
    // reader, in order): when it lands, every change before it has.
    exec(
        conn,
        &format!(
            "INSERT INTO {DB}.orders SELECT {MARKER}, customer_id, status, sku, title, amount, quantity, created_at, updated_at, attributes, note, priority FROM {DB}.orders_seed WHERE id = 1"
        ),
    )
    .await?;
    sink::settle(pg).await?;
    let started = Instant::now();
    let cpu_before = cpu::sample();
    let mut warp = Replicator::start(s.binary, config, log)?;
    until(
        pg,
        &mut warp,
        &format!("SELECT 1 FROM bench_my_dest.orders WHERE id = {MARKER}"),
        Duration::from_secs(1_800),
        log,
    )
    .await?;
    let catch_up = started.elapsed();
    let catch_up_cpu = cpu::between(&cpu_before, &cpu::sample(), warp.pid());

    // Lag at a fixed offered load.
    let per_tick = s.load_per_sec / 100;
    let ticks = s.load_secs * 100;
    let begin = tokio::time::Instant::now();
    let mut next_id = 1u64;
    for k in 0..ticks {
        tokio::time::sleep_until(begin + Duration::from_millis(10 * k)).await;
        let values: Vec<String> = (0..per_tick)
            .map(|i| format!("({}, NOW(6))", next_id + i))
            .collect();
        next_id += per_tick;
        exec(
            conn,
            &format!("INSERT INTO {DB}.ticks VALUES {}", values.join(", ")),
        )
        .await?;
        if k % 50 == 0 {
            warp.sample();
        }
    }
    let offered = begin.elapsed();
    until(
        pg,
        &mut warp,
        &format!(
            "SELECT 1 FROM bench_my_dest.ticks WHERE id = {}",
            next_id - 1
        ),
        Duration::from_secs(600),
        log,
    )
    .await?;
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) \
         FROM (SELECT extract(epoch FROM _cartridge_updated_at - (at AT TIME ZONE 'UTC'))::float8 AS lag FROM bench_my_dest.ticks) l",
    )
    .fetch_one(pg)
    .await?;
    peak = peak.max(warp.stop()?);
    crate::replicator::clean_up(&dir);
    eprintln!(
        "offered {} changes in {:.1} s ({:.0}/s)",
        next_id - 1,
        offered.as_secs_f64(),
        (next_id - 1) as f64 / offered.as_secs_f64()
    );

    let line = |name: &str, rows: u64, took: Duration| Measurement {
        name: format!("{name} ({})", tuning.label()),
        rows,
        bytes: if rows == s.rows { bytes } else { 0 },
        took,
    };
    lines.push(line("cartridge-warp snapshot", s.rows, snapshot));
    lines.push(line(
        "cartridge-warp streaming catch-up (binlog, mixed changes)",
        s.changes / 3 * 3 + 1,
        catch_up,
    ));
    Ok(Run {
        lines,
        warp_rss_mib: peak as f64 / 1024.0,
        lag_p50: p50,
        lag_p99: p99,
        snapshot_cpu,
        catch_up_cpu,
    })
}
