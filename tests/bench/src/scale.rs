//! One large table copied by 1, 2 and 3 replicas of its schema, in the same run, while a
//! writer changes that table at a fixed rate (`stream_during_copy`: the table streams
//! while it is copied). Reported per replica count: the copy's time and rows/s, each
//! replica's busy time (CPU seconds) and their sum, and the table's lag during the copy
//! (each probe row's arrival at the destination minus its commit at the source). On one
//! two-core machine the databases bound the rate; the busy times say what separate
//! machines would do (docs/benchmarks.md).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cpu;
use crate::mysql::{exec, DB};
use crate::replicator::{until, Replicator};

type Failure = Box<dyn std::error::Error>;

/// Probe rows' ids start here (beyond any seeded id).
const PROBE_BASE: i64 = 10_000_000_000;

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub my_url: &'a str,
    pub binary: &'a Path,
    pub rows: u64,
    /// Changes per second the writer makes to the copied table.
    pub load_per_sec: u64,
}

/// One copy's figures.
pub struct Figures {
    pub replicas: usize,
    /// Copied inside the stream (`stream_during_copy`), or before streaming.
    pub in_stream: bool,
    pub took: Duration,
    /// CPU seconds of each replica during the copy.
    pub busy: Vec<f64>,
    pub postgres: f64,
    pub mariadb: f64,
    /// Lag (seconds) of the probes written during the copy: p50, p99, max.
    pub lag: (f64, f64, f64),
    pub probes: u64,
}

fn config(s: &Settings<'_>, dir: &Path, in_stream: bool) -> Result<std::path::PathBuf, Failure> {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!(
            "mode: single\nsingle_schema_name: bench\n\
             source: {{ type: mysql, connection_string: '{}/{DB}', database: {DB} }}\n\
             destination: {{ type: postgresql, connection_string: '{}', schema: bench_scale_dest, metadata_schema: bench_scale_meta }}\n\
             schemas:\n- name: bench\n  table_whitelist: [orders]\n  stream_during_copy: {in_stream}\n\
             monitoring: {{ metrics_enabled: false, health_check_enabled: false }}\n\
             logging: {{ level: {}, format: text }}\n",
            s.my_url,
            s.pg_url,
            std::env::var("WARP_BENCH_LOG").unwrap_or_else(|_| "warn".into())
        ),
    )?;
    Ok(path)
}

/// Copies the table with `replicas` replicas under the write load, inside the stream
/// or (the baseline) before streaming.
pub async fn run(s: &Settings<'_>, replicas: usize, in_stream: bool) -> Result<Figures, Failure> {
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(s.pg_url)
        .await?;
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(s.my_url)?);
    let mut conn = my.get_conn().await?;
    exec(&mut conn, "SET SESSION time_zone = '+00:00'").await?;
    exec(&mut conn, &format!("DROP TABLE IF EXISTS {DB}.orders")).await?;
    exec(
        &mut conn,
        &format!("CREATE TABLE {DB}.orders LIKE {DB}.orders_seed"),
    )
    .await?;
    exec(
        &mut conn,
        &format!("INSERT INTO {DB}.orders SELECT * FROM {DB}.orders_seed"),
    )
    .await?;
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bench_scale_dest CASCADE; DROP SCHEMA IF EXISTS bench_scale_meta CASCADE",
    )
    .execute(&pg)
    .await?;
    crate::sink::settle(&pg).await?;

    let dir = std::env::temp_dir().join(format!("warp-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = config(s, &dir, in_stream)?;
    let log = dir.join("warp.log");
    let before = cpu::sample();
    let started = Instant::now();
    let mut warps = Vec::new();
    for i in 0..replicas {
        let pod = format!("bench-scale-{i}");
        warps.push(Replicator::start_as(s.binary, &config, &log, &pod)?);
    }
    let copying = "SELECT 1 FROM bench_scale_meta.checkpoints WHERE table_name = 'orders' AND (recopy_chunks IS NOT NULL OR phase = 'snapshot')";
    let copied = "SELECT 1 FROM bench_scale_meta.checkpoints WHERE table_name = 'orders' AND phase = 'streaming' AND recopy_chunks IS NULL";
    until(&pg, &mut warps[0], copying, Duration::from_secs(600), &log).await?;
    // Written from the copy's start: the lag measured is the stream's during the copy
    // (rows written before the copy's start position arrive with their chunk).
    let (my_url, load, rows) = (s.my_url.to_owned(), s.load_per_sec, s.rows);
    let writer = tokio::spawn(async move {
        let written = write(my_url, load, rows).await;
        written.map_err(|e| e.to_string())
    });
    until(&pg, &mut warps[0], copied, Duration::from_secs(3_600), &log).await?;
    let took = started.elapsed();
    let after = cpu::sample();
    if writer.is_finished() {
        if let Ok(Err(e)) = writer.await {
            return Err(format!("the writer stopped: {e}").into());
        }
        return Err("the writer stopped".into());
    }
    writer.abort();
    let probes = probes_written(&mut conn).await?;
    let busy: Vec<f64> = (warps.iter())
        .map(|w| cpu::between(&before, &after, w.pid()).warp)
        .collect();
    let databases = cpu::between(&before, &after, 0);
    let last = format!(
        "SELECT 1 FROM bench_scale_dest.orders WHERE id = {}",
        PROBE_BASE + probes
    );
    until(&pg, &mut warps[0], &last, Duration::from_secs(600), &log).await?;
    let lag: (f64, f64, f64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag)
           FROM (SELECT extract(epoch FROM _cartridge_updated_at - (updated_at AT TIME ZONE 'UTC'))::float8 AS lag
                   FROM bench_scale_dest.orders WHERE id > {PROBE_BASE} AND id <= {}) l",
        PROBE_BASE + probes
    )))
    .fetch_one(&pg)
    .await?;
    for w in warps {
        w.stop()?;
    }
    crate::replicator::clean_up(&dir);
    Ok(Figures {
        replicas,
        in_stream,
        took,
        busy,
        postgres: databases.postgres,
        mariadb: databases.mariadb,
        lag,
        probes: u64::try_from(probes).unwrap_or(0),
    })
}

/// Every 10 ms, `load / 100` changes to the copied table: half new probe rows stamped with
/// the source's commit time, half updates of seeded rows.
async fn write(my_url: String, load_per_sec: u64, rows: u64) -> Result<(), Failure> {
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(&my_url)?);
    let mut conn = my.get_conn().await?;
    exec(&mut conn, "SET SESSION time_zone = '+00:00'").await?;
    let per_tick = i64::try_from((load_per_sec / 100).max(2))?;
    let rows = i64::try_from(rows)?;
    let begin = tokio::time::Instant::now();
    let (mut probe, mut k) = (0i64, 0u64);
    loop {
        tokio::time::sleep_until(begin + Duration::from_millis(10 * k)).await;
        let inserts = per_tick / 2;
        let values: Vec<String> = (1..=inserts)
            .map(|i| {
                let id = PROBE_BASE + probe + i;
                format!("({id}, 1, 1, 'probe', 'probe', 1.00, 1, NOW(6), NOW(6), '{{}}', NULL, 1)")
            })
            .collect();
        probe += inserts;
        exec(
            &mut conn,
            &format!("INSERT INTO {DB}.orders VALUES {}", values.join(", ")),
        )
        .await?;
        let first = (i64::try_from(k)? * 7_919) % rows + 1;
        let last = first + (per_tick - inserts) - 1;
        exec(
            &mut conn,
            &format!("UPDATE {DB}.orders SET quantity = quantity + 1 WHERE id BETWEEN {first} AND {last}"),
        )
        .await?;
        k += 1;
    }
}

/// How many probe rows the writer committed.
async fn probes_written(conn: &mut mysql_async::Conn) -> Result<i64, Failure> {
    use mysql_async::prelude::Queryable;
    let max: Option<Option<i64>> = conn
        .query_first(format!(
            "SELECT max(id) FROM {DB}.orders WHERE id > {PROBE_BASE}"
        ))
        .await?;
    Ok(max.flatten().map_or(0, |m| m - PROBE_BASE))
}
