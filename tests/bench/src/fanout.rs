//! What one busy table costs when many idle tables are replicated beside it: the catch-up
//! of the same backlog of changes to one hot table, replicated alone and with 50 idle
//! tables beside it, in alternating passes. With one binlog reader per replica the
//! server sends — and cartridge-warp decodes — the backlog once in both cases, so the
//! CPU of MariaDB and of cartridge-warp should barely differ (the goal of the shared
//! change feed: at most 1.2× for 51 tables).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cpu::{self, CpuUse};
use crate::mysql::exec;
use crate::replicator::{until, Replicator};

const DB: &str = "bench_fan";
const HOT_ROWS: i64 = 10_000;
const IDLE: usize = 50;
const MARKER: i64 = 9_000_000_000;

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub my_url: &'a str,
    pub binary: &'a Path,
    pub changes: u64,
}

/// One catch-up: wall time and where the CPU went.
pub struct CatchUp {
    pub seconds: f64,
    pub cpu: CpuUse,
}

type Failure = Box<dyn std::error::Error>;

/// The hot table and the idle ones, once.
pub async fn seed(my: &mysql_async::Pool) -> Result<(), Failure> {
    let mut conn = my.get_conn().await?;
    exec(&mut conn, &format!("DROP DATABASE IF EXISTS {DB}")).await?;
    exec(&mut conn, &format!("CREATE DATABASE {DB}")).await?;
    // MariaDB's sequence tables (seq_1_to_N) live in the current database.
    exec(&mut conn, &format!("USE {DB}")).await?;
    exec(
        &mut conn,
        &format!("CREATE TABLE {DB}.hot (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40) NOT NULL)"),
    )
    .await?;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {DB}.hot SELECT seq, 0, CONCAT('row ', seq) FROM seq_1_to_{HOT_ROWS}"
        ),
    )
    .await?;
    for i in 0..IDLE {
        exec(
            &mut conn,
            &format!("CREATE TABLE {DB}.idle_{i:02} (id INT PRIMARY KEY, v VARCHAR(10))"),
        )
        .await?;
        exec(
            &mut conn,
            &format!("INSERT INTO {DB}.idle_{i:02} VALUES (1, 'x'), (2, 'y')"),
        )
        .await?;
    }
    Ok(())
}

fn config(s: &Settings<'_>, dir: &Path, all: bool) -> Result<std::path::PathBuf, Failure> {
    let path = dir.join(format!("fanout-{all}.yaml"));
    let whitelist = if all { "['*']" } else { "[hot]" };
    std::fs::write(
        &path,
        format!(
            "mode: single\nsingle_schema_name: fan\n\
             source: {{ type: mysql, connection_string: '{}/{DB}', database: {DB}, server_id: 4400000 }}\n\
             destination: {{ type: postgresql, connection_string: '{}', schema: bench_fan_dest, metadata_schema: bench_fan_meta }}\n\
             schemas:\n- name: fan\n  table_whitelist: {whitelist}\n\
             monitoring: {{ metrics_enabled: false, health_check_enabled: false }}\n\
             logging: {{ level: warn, format: text }}\n",
            s.my_url, s.pg_url
        ),
    )?;
    Ok(path)
}

/// The catch-up of `changes` updates to the hot table, with `all` tables replicated or
/// only the hot one. Default settings.
pub async fn catch_up(s: &Settings<'_>, all: bool) -> Result<CatchUp, Failure> {
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(s.pg_url)
        .await?;
    sqlx::raw_sql("DROP SCHEMA IF EXISTS bench_fan_dest CASCADE; DROP SCHEMA IF EXISTS bench_fan_meta CASCADE")
        .execute(&pg)
        .await?;
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(s.my_url)?);
    let mut conn = my.get_conn().await?;
    exec(
        &mut conn,
        &format!("DELETE FROM {DB}.hot WHERE id = {MARKER}"),
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("warp-bench-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = config(s, &dir, all)?;
    let log = dir.join("warp.log");
    let tables = if all { IDLE + 1 } else { 1 };

    // Copy, then stop once every table streams.
    let mut warp = Replicator::start(s.binary, &config, &log)?;
    until(
        &pg,
        &mut warp,
        &format!("SELECT 1 FROM bench_fan_meta.checkpoints WHERE phase = 'streaming' HAVING count(*) = {tables}"),
        Duration::from_secs(600),
        &log,
    )
    .await?;
    warp.stop()?;

    // The backlog: `changes` row updates in statements of 1,000 rows, then the marker.
    let mut done = 0u64;
    let mut id = 1;
    while done < s.changes {
        let end = (id + 999).min(HOT_ROWS);
        exec(
            &mut conn,
            &format!("UPDATE {DB}.hot SET v = v + 1 WHERE id BETWEEN {id} AND {end}"),
        )
        .await?;
        done += u64::try_from(end - id + 1)?;
        id = if end == HOT_ROWS { 1 } else { end + 1 };
    }
    exec(
        &mut conn,
        &format!("INSERT INTO {DB}.hot VALUES ({MARKER}, 0, 'marker')"),
    )
    .await?;

    let started = Instant::now();
    let before = cpu::sample();
    let mut warp = Replicator::start(s.binary, &config, &log)?;
    until(
        &pg,
        &mut warp,
        &format!("SELECT 1 FROM bench_fan_dest.hot WHERE id = {MARKER}"),
        Duration::from_secs(600),
        &log,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu::between(&before, &cpu::sample(), warp.pid());
    warp.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CatchUp { seconds, cpu })
}
