//! What background verification costs: the replicator's peak memory while a pass walks a
//! large table, against the same process streaming with verification off; a pass's rate
//! against a raw full read of the same source table; and a catch-up of the same backlog
//! with verification off and on (defaults), in alternating runs.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;

use crate::mysql::{exec, workload, DB};
use crate::replicator::{until, Replicator};

const MARKER: i64 = 9_000_000_000;
/// How long the process streams idle when its memory is measured without verification.
const IDLE: Duration = Duration::from_secs(20);

type Failure = Box<dyn std::error::Error>;

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub my_url: &'a str,
    pub binary: &'a Path,
    pub rows: u64,
    pub changes: u64,
}

/// One run's figures.
pub struct Figures {
    pub rss_off_mib: f64,
    pub rss_on_mib: f64,
    pub pass_seconds: f64,
    pub raw_read_seconds: f64,
    pub catch_up_off: f64,
    pub catch_up_on: f64,
    /// Lag p50 and p99 (seconds) at a fixed offered load, verification off and on.
    pub lag_off: (f64, f64),
    pub lag_on: (f64, f64),
}

fn config(s: &Settings<'_>, dir: &Path, verification: &str) -> Result<std::path::PathBuf, Failure> {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!(
            "mode: single\nsingle_schema_name: bench\n\
             source: {{ type: mysql, connection_string: '{}/{DB}', database: {DB}, server_id: 4300001 }}\n\
             destination: {{ type: postgresql, connection_string: '{}', schema: bench_ver_dest, metadata_schema: bench_ver_meta }}\n\
             schemas:\n- name: bench\n  table_whitelist: [orders, vticks]\n\
             verification: {verification}\n\
             monitoring: {{ metrics_enabled: false, health_check_enabled: false }}\n\
             logging: {{ level: warn, format: text }}\n",
            s.my_url, s.pg_url
        ),
    )?;
    Ok(path)
}

const OFF: &str = "{ enabled: false }";
/// A pass as fast as the reads go, once.
const FLAT_OUT: &str = "{ enabled: true, rows_per_second: 100000000, pass_interval: 86400 }";
/// What a user gets.
const DEFAULTS: &str = "{ enabled: true }";

async fn raw_read(conn: &mut mysql_async::Conn) -> Result<Duration, Failure> {
    let started = Instant::now();
    let mut result = conn
        .query_iter(format!("SELECT * FROM {DB}.orders"))
        .await?;
    let mut rows = result
        .stream::<mysql_async::Row>()
        .await?
        .ok_or("no result set")?;
    while let Some(row) = rows.next().await {
        drop(row?);
    }
    Ok(started.elapsed())
}

/// One run: copy, memory off and on, then the two catch-ups.
pub async fn run(s: &Settings<'_>, run: u64) -> Result<Figures, Failure> {
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(s.pg_url)
        .await?;
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(s.my_url)?);
    let mut conn = my.get_conn().await?;
    exec(&mut conn, "SET SESSION time_zone = '+00:00'").await?;
    exec(
        &mut conn,
        &format!("DROP TABLE IF EXISTS {DB}.orders, {DB}.vticks"),
    )
    .await?;
    exec(
        &mut conn,
        &format!("CREATE TABLE {DB}.vticks (id BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL)"),
    )
    .await?;
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
    sqlx::raw_sql("DROP SCHEMA IF EXISTS bench_ver_dest CASCADE; DROP SCHEMA IF EXISTS bench_ver_meta CASCADE")
        .execute(&pg)
        .await?;
    let raw_read_seconds = raw_read(&mut conn).await?.as_secs_f64();
    let dir = std::env::temp_dir().join(format!("warp-bench-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("warp.log");

    // The copy, unmeasured.
    let mut warp = Replicator::start(s.binary, &config(s, &dir, OFF)?, &log)?;
    let streaming = "SELECT 1 FROM bench_ver_meta.checkpoints WHERE table_name = 'orders' AND phase = 'streaming'";
    until(&pg, &mut warp, streaming, Duration::from_secs(3600), &log).await?;
    warp.stop()?;

    // Streaming, verification off.
    let mut warp = Replicator::start(s.binary, &config(s, &dir, OFF)?, &log)?;
    let deadline = Instant::now() + IDLE;
    while Instant::now() < deadline {
        warp.sample();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_off = warp.stop()?;

    // Streaming while a pass walks the table.
    sqlx::raw_sql("UPDATE bench_ver_meta.table_state SET verification = NULL")
        .execute(&pg)
        .await?;
    let mut warp = Replicator::start(s.binary, &config(s, &dir, FLAT_OUT)?, &log)?;
    let passed = "SELECT 1 FROM bench_ver_meta.table_state WHERE table_name = 'orders' AND (verification->>'passes')::int >= 1";
    until(&pg, &mut warp, passed, Duration::from_secs(3600), &log).await?;
    let rss_on = warp.stop()?;
    let (pass_seconds, mismatched): (f64, i64) = sqlx::query_as(
        "SELECT (verification->>'last_pass_seconds')::float8, (verification->>'mismatched_rows')::int8 \
         FROM bench_ver_meta.table_state WHERE table_name = 'orders'",
    )
    .fetch_one(&pg)
    .await?;
    if mismatched != 0 {
        return Err(format!("the pass found {mismatched} differing rows on an equal table").into());
    }

    // Alternating which goes first, so neither always meets the other's leftovers.
    let (catch_up_off, catch_up_on) = if run % 2 == 1 {
        let off = catch_up(s, &pg, &mut conn, &dir, OFF, 1).await?;
        (off, catch_up(s, &pg, &mut conn, &dir, DEFAULTS, 2).await?)
    } else {
        let on = catch_up(s, &pg, &mut conn, &dir, DEFAULTS, 2).await?;
        (catch_up(s, &pg, &mut conn, &dir, OFF, 1).await?, on)
    };
    let lag_off = lag_at_load(&pg, &mut conn, s, &dir, OFF).await?;
    let lag_on = lag_at_load(&pg, &mut conn, s, &dir, DEFAULTS).await?;
    crate::replicator::clean_up(&dir);
    Ok(Figures {
        lag_off,
        lag_on,
        rss_off_mib: rss_off as f64 / 1024.0,
        rss_on_mib: rss_on as f64 / 1024.0,
        pass_seconds,
        raw_read_seconds,
        catch_up_off,
        catch_up_on,
    })
}

/// Seconds to apply a backlog of `s.changes` mixed changes, written while stopped.
async fn catch_up(
    s: &Settings<'_>,
    pg: &sqlx::PgPool,
    conn: &mut mysql_async::Conn,
    dir: &Path,
    verification: &str,
    round: i64,
) -> Result<f64, Failure> {
    // Each round updates and re-inserts the same keys: delete the previous round's.
    let third = i64::try_from(s.changes / 3)?;
    let rows = i64::try_from(s.rows)?;
    exec(conn, &format!("DELETE FROM {DB}.orders WHERE id > {rows}")).await?;
    exec(
        conn,
        &format!("INSERT IGNORE INTO {DB}.orders SELECT * FROM {DB}.orders_seed WHERE id BETWEEN {} AND {}", third + 1, 2 * third),
    )
    .await?;
    let log = dir.join("warp.log");
    let config = config(s, dir, verification)?;
    // Settle what the resets above changed before the backlog.
    let mut warp = Replicator::start(s.binary, &config, &log)?;
    let marker = MARKER + round;
    insert_marker(conn, marker).await?;
    until(
        pg,
        &mut warp,
        &landed(marker),
        Duration::from_secs(3600),
        &log,
    )
    .await?;
    warp.stop()?;
    for statement in workload(
        &format!("{DB}.orders"),
        &format!("{DB}.orders_seed"),
        s.rows,
        s.changes,
        "NOW(6)",
    ) {
        exec(conn, &statement).await?;
    }
    let marker = MARKER + 100 + round;
    insert_marker(conn, marker).await?;
    // The previous catch-up left dead rows behind: without this, the second of the two
    // catch-ups of a run would be timed on a more bloated table than the first.
    sqlx::raw_sql("VACUUM ANALYZE bench_ver_dest.orders")
        .execute(pg)
        .await?;
    crate::sink::settle(pg).await?;
    let started = Instant::now();
    let mut warp = Replicator::start(s.binary, &config, &log)?;
    until(
        pg,
        &mut warp,
        &landed(marker),
        Duration::from_secs(3600),
        &log,
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    warp.stop()?;
    Ok(took)
}

/// Inserts per second offered while lag is measured, for `LOAD_SECS`.
const LOAD_PER_SEC: u64 = 2_000;
const LOAD_SECS: u64 = 20;

/// Lag p50/p99 of rows inserted at a fixed rate into a small table while the 5-million-row
/// table beside it is (with verification on) being walked: `_cartridge_updated_at` minus
/// the row's own commit time.
async fn lag_at_load(
    pg: &sqlx::PgPool,
    conn: &mut mysql_async::Conn,
    s: &Settings<'_>,
    dir: &Path,
    verification: &str,
) -> Result<(f64, f64), Failure> {
    let log = dir.join("warp.log");
    exec(conn, &format!("DELETE FROM {DB}.vticks")).await?;
    // A state recorded by an earlier process must not pass for this one's.
    sqlx::raw_sql("UPDATE bench_ver_meta.table_state SET verification = NULL")
        .execute(pg)
        .await?;
    let mut warp = Replicator::start(s.binary, &config(s, dir, verification)?, &log)?;
    let streaming = "SELECT 1 FROM bench_ver_meta.checkpoints WHERE table_name = 'vticks' AND phase = 'streaming'";
    until(pg, &mut warp, streaming, Duration::from_secs(600), &log).await?;
    if verification != OFF {
        // The load starts once a pass is walking the large table.
        let walking = "SELECT 1 FROM bench_ver_meta.table_state WHERE table_name = 'orders' AND verification->>'state' = 'verifying'";
        until(pg, &mut warp, walking, Duration::from_secs(600), &log).await?;
    }
    let per_tick = LOAD_PER_SEC / 100;
    let begin = tokio::time::Instant::now();
    let mut next = 1u64;
    for k in 0..LOAD_SECS * 100 {
        tokio::time::sleep_until(begin + Duration::from_millis(10 * k)).await;
        let values: Vec<String> = (next..next + per_tick)
            .map(|i| format!("({i}, NOW(6))"))
            .collect();
        next += per_tick;
        exec(
            conn,
            &format!("INSERT INTO {DB}.vticks VALUES {}", values.join(", ")),
        )
        .await?;
    }
    let last = format!(
        "SELECT 1 FROM bench_ver_dest.vticks WHERE id = {}",
        next - 1
    );
    until(pg, &mut warp, &last, Duration::from_secs(600), &log).await?;
    let lag: (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) \
         FROM (SELECT extract(epoch FROM _cartridge_updated_at - (at AT TIME ZONE 'UTC'))::float8 AS lag FROM bench_ver_dest.vticks WHERE NOT is_deleted) l",
    )
    .fetch_one(pg)
    .await?;
    warp.stop()?;
    Ok(lag)
}

/// A copy of row 1 under key `marker`: the last change of a backlog.
async fn insert_marker(conn: &mut mysql_async::Conn, marker: i64) -> Result<(), Failure> {
    exec(conn, &format!("INSERT INTO {DB}.orders SELECT {marker}, customer_id, status, sku, title, amount, quantity, created_at, updated_at, attributes, note, priority FROM {DB}.orders_seed WHERE id = 1")).await
}

/// A query answering once the row `marker` has landed.
fn landed(marker: i64) -> String {
    format!("SELECT 1 FROM bench_ver_dest.orders WHERE id = {marker}")
}

/// The report: medians of every run.
pub fn print(runs: &[Figures], s: &Settings<'_>) {
    let med = |f: fn(&Figures) -> f64| crate::median_f64(runs.iter().map(f).collect());
    let (off, on) = (med(|f| f.rss_off_mib), med(|f| f.rss_on_mib));
    let (pass, raw) = (med(|f| f.pass_seconds), med(|f| f.raw_read_seconds));
    let (c_off, c_on) = (med(|f| f.catch_up_off), med(|f| f.catch_up_on));
    let (l50_off, l99_off) = (med(|f| f.lag_off.0), med(|f| f.lag_off.1));
    let (l50_on, l99_on) = (med(|f| f.lag_on.0), med(|f| f.lag_on.1));
    println!(
        "verification of {} rows, medians of {} runs",
        s.rows,
        runs.len()
    );
    println!("  peak RSS streaming, verification off     {off:>9.1} MiB");
    println!(
        "  peak RSS while a pass walks the table    {on:>9.1} MiB  (+{:.1} MiB; goal ≤ +30)",
        on - off
    );
    println!(
        "  raw full read of the source table        {raw:>9.1} s   {:>10.0} rows/s (limit)",
        s.rows as f64 / raw
    );
    println!("  one verification pass, unthrottled       {pass:>9.1} s   {:>10.0} rows/s ({:.2}× the raw read)", s.rows as f64 / pass, raw / pass);
    println!(
        "  catch-up of {} changes, verification off {c_off:>7.2} s",
        s.changes
    );
    println!(
        "  catch-up of {} changes, defaults (on)    {c_on:>7.2} s   ({:+.1} %; goal within 10 %)",
        s.changes,
        (c_on / c_off - 1.0) * 100.0
    );
    println!(
        "  lag at {LOAD_PER_SEC} inserts/s, verification off   p50 {l50_off:.3} s, p99 {l99_off:.3} s"
    );
    println!(
        "  lag at {LOAD_PER_SEC} inserts/s, pass walking (on)   p50 {l50_on:.3} s, p99 {l99_on:.3} s  (p50 {:+.1} %; goal within 10 %)",
        (l50_on / l50_off - 1.0) * 100.0
    );
}
