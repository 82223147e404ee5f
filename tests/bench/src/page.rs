//! The status page with many tables: how long `GET /` (the page) and `GET /status` (what
//! it polls) take on the binary when the metadata schema holds N tables, next to the
//! metadata query the page's reader runs every 2 s (which no request waits for).
//! The source is an empty MariaDB database, so the tables are only in the metadata
//! schema, seeded in the shapes replicas record: mostly streaming, some copying, some
//! failed with an error and hint, some dead letters and schema versions.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};

use crate::mysql::exec;
use crate::replicator::Replicator;

const DB: &str = "bench_page";
const META: &str = "bench_page_meta";

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub my_url: &'a str,
    pub binary: &'a Path,
    pub tables: u64,
    pub requests: u64,
}

type Failure = Box<dyn std::error::Error>;

/// Milliseconds of each request, sorted.
struct Timings(Vec<f64>);

impl Timings {
    fn at(&self, q: f64) -> f64 {
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }
    fn line(&self, what: &str, bytes: usize) {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} | {} |",
            self.at(0.5),
            self.at(0.95),
            self.at(1.0),
            bytes
        );
    }
}

fn time_get(port: u16, path: &str, n: u64) -> Result<(Timings, usize), Failure> {
    let mut ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (code, body) = warp_e2e::http_get(port, path).ok_or("no answer")?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if code != 200 {
            return Err(format!("{path}: HTTP {code}").into());
        }
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    Ok((Timings(ms), bytes))
}

async fn seed(pg: &PgPool, tables: u64) -> Result<(), Failure> {
    let m = META;
    for sql in [
        format!(
            "INSERT INTO {m}.table_state (schema_name, table_name, state, rows_copied, last_error, hint, owner, last_source_ts, chunks_done, chunks_total)
             SELECT '{DB}', 't' || lpad(i::text, 4, '0'),
                    CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 50 = 1 THEN 'snapshotting' WHEN i % 97 = 0 THEN 'pending' ELSE 'streaming' END,
                    i * 1000,
                    CASE WHEN i % 100 = 0 THEN 'source: binlog position no longer on the server (purged)' END,
                    CASE WHEN i % 100 = 0 THEN 'cartridge-warp resync --schema {DB} --table t' || i END,
                    'bench-a', now() - (i % 7) * interval '1 second',
                    CASE WHEN i % 50 = 1 THEN 3 END, CASE WHEN i % 50 = 1 THEN 10 END
             FROM generate_series(1, {tables}) i"
        ),
        format!(
            "INSERT INTO {m}.checkpoints (schema_name, table_name, phase, position, source_ts, fencing_token)
             SELECT '{DB}', 't' || lpad(i::text, 4, '0'), 'streaming', jsonb_build_object('file', 'mysql-bin.000042', 'pos', i), now(), 1
             FROM generate_series(1, {tables}) i"
        ),
        format!(
            "INSERT INTO {m}.leases (schema_name, table_name, owner, fencing_token, expires_at)
             SELECT '{DB}', 't' || lpad(i::text, 4, '0'), 'bench-' || (i % 3), 1, now() + interval '1 day'
             FROM generate_series(1, {tables}) i"
        ),
        format!(
            "INSERT INTO {m}.schema_registry (schema_name, table_name, version, change, table_schema)
             SELECT '{DB}', 't' || lpad(i::text, 4, '0'), v, '{{}}', '{{}}'
             FROM generate_series(1, {tables}) i, generate_series(1, 1 + i % 3) v"
        ),
        format!(
            "INSERT INTO {m}.dead_letter_queue (schema_name, table_name, payload, error)
             SELECT '{DB}', 't' || lpad((i % {tables} + 1)::text, 4, '0'), '{{}}', 'bench'
             FROM generate_series(1, 2000) i"
        ),
        format!(
            "INSERT INTO {m}.members (schema_name, owner, expires_at)
             SELECT '{DB}', 'bench-' || i, now() + interval '1 day' FROM generate_series(0, 2) i"
        ),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(pg).await?;
    }
    Ok(())
}

pub async fn run(s: &Settings<'_>) -> Result<(), Failure> {
    let my = mysql_async::Pool::new(mysql_async::Opts::from_url(s.my_url)?);
    let mut conn = my.get_conn().await?;
    exec(&mut conn, &format!("DROP DATABASE IF EXISTS {DB}")).await?;
    exec(&mut conn, &format!("CREATE DATABASE {DB}")).await?;
    drop(conn);
    let pg = PgPool::connect(s.pg_url).await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {META} CASCADE"
    )))
    .execute(&pg)
    .await?;
    let dir = std::env::temp_dir().join("warp-bench-page");
    std::fs::create_dir_all(&dir)?;
    let (config, log) = (dir.join("config.yaml"), dir.join("run.log"));
    let health = warp_e2e::free_port();
    std::fs::write(
        &config,
        format!(
            "mode: single\nsingle_schema_name: {DB}\n\
             source: {{ type: mysql, connection_string: '{}/{DB}', database: {DB} }}\n\
             destination: {{ type: postgresql, connection_string: '{}', metadata_schema: {META} }}\n\
             schemas:\n- name: {DB}\n\
             monitoring: {{ metrics_port: {}, health_check_port: {health} }}\n",
            s.my_url,
            s.pg_url,
            warp_e2e::free_port()
        ),
    )?;
    let _warp = Replicator::start(s.binary, &config, &log)?;
    // The metadata schema exists once start-up finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    while warp_e2e::http_get(health, "/startup").map(|r| r.0) != Some(200) {
        if Instant::now() > deadline {
            return Err(format!("never started; see {}", log.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seed(&pg, s.tables).await?;
    let listed = format!("\"table\":\"t{:04}\"", s.tables);
    while !warp_e2e::http_get(health, "/status").is_some_and(|r| r.1.contains(&listed)) {
        if Instant::now() > deadline {
            return Err("the page never listed the seeded tables".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (page, page_bytes) = time_get(health, "/", s.requests)?;
    let (status, status_bytes) = time_get(health, "/status", s.requests)?;
    let mut query = Vec::new();
    for _ in 0..s.requests.min(50) {
        let started = Instant::now();
        warp_sink_postgres::status::deployment(&pg, META).await?;
        query.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    query.sort_by(f64::total_cmp);
    let render = render_in_chromium(health, s.requests.min(50), &dir)?;
    println!(
        "status page with {} tables in the metadata schema ({} requests each, one at a time)",
        s.tables, s.requests
    );
    println!("| request | p50 ms | p95 ms | max ms | bytes |");
    println!("|---|---:|---:|---:|---:|");
    page.line("GET / (the page)", page_bytes);
    status.line("GET /status (what it polls every 2 s)", status_bytes);
    Timings(query).line(
        "metadata read the page's reader runs every 2 s (not waited for)",
        0,
    );
    if let Some(render) = render {
        render.line("page redraw in headless Chromium (fetch excluded)", 0);
    }
    Ok(())
}

/// How long the page takes to draw one `/status` answer, measured inside Chromium (when
/// scripts/browser.sh installed it): what keeps the page usable at this size.
fn render_in_chromium(port: u16, n: u64, dir: &Path) -> Result<Option<Timings>, Failure> {
    if !Path::new(warp_e2e::browser::CHROMEDRIVER).exists() {
        eprintln!("no chromedriver (scripts/browser.sh installs it): page redraw not measured");
        return Ok(None);
    }
    let browser = warp_e2e::browser::Browser::start(&dir.join("chromedriver.log"));
    browser.open(&format!("http://127.0.0.1:{port}/"));
    let mut ms = Vec::new();
    for _ in 0..n {
        let took = browser.eval(
            "return fetch('status').then((r) => r.json()).then((s) => {
               const t = performance.now(); render(s);
               document.body.getBoundingClientRect();  // include layout
               return performance.now() - t; });",
        );
        ms.push(took.as_f64().ok_or("no timing from the page")?);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Some(Timings(ms)))
}
