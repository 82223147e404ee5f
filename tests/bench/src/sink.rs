//! Snapshot apply of the PostgreSQL sink next to a raw `COPY` of the same rows.
//!
//! The raw limit: the rows, already in COPY text form in a file, sent with
//! `COPY … FROM STDIN` in one transaction per chunk — no encoding, no bookkeeping.
//! Ours: `write_snapshot_rows` + chunk commits, exactly as a snapshot runs (encoding
//! from values included).

use std::io::Write;
use std::time::Instant;

use sqlx::postgres::PgPoolOptions;
use sqlx::AssertSqlSafe;
use warp_core::config::{DeletionStrategy, SchemaChangePolicy};
use warp_core::{CheckpointUpdate, KeyRange, LeaseStore, Position, Sink, Target};
use warp_sink_postgres::PostgresSink;

use crate::{data, Measurement};

const CHUNK: i64 = 50_000;
const PAGE: i64 = 1_000;

pub async fn run(url: &str, rows: u64) -> Result<Vec<Measurement>, Box<dyn std::error::Error>> {
    let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bench_warp CASCADE; DROP SCHEMA IF EXISTS bench_meta CASCADE",
    )
    .execute(&pool)
    .await?;
    let schema = data::schema("orders");
    let n = i64::try_from(rows)?;
    let raw = raw_copy(&pool, url, "bench_raw", rows).await?;
    let mut raw_binary = raw_copy_binary(&pool, "bench_raw", rows).await?;
    raw_binary.bytes = raw.bytes; // MB/s of the same rows in text form, as every line
    let bytes = raw.bytes;

    let sink = PostgresSink::with_pool(pool.clone(), "bench_meta");
    sink.prepare().await?;
    let target = Target {
        schema: "bench".into(),
        source: schema.id.clone(),
        destination_schema: "bench_warp".into(),
        table: "orders".into(),
        deletion_strategy: DeletionStrategy::Soft,
        soft_delete_column: "is_deleted".into(),
        deleted_at_column: "deleted_at".into(),
        schema_change_policy: SchemaChangePolicy::WidenToText,
        landing: warp_core::LandingVersion::UNRECORDED,
    };
    sink.ensure_table(&target, &schema).await?;
    let token = sink
        .acquire(&target.key(), "bench", std::time::Duration::from_secs(3600))
        .await?
        .ok_or("the bench table's lease is held elsewhere")?;
    let pos = Position::from_json(serde_json::json!({ "bench": 0 }));

    let sequential = timed_apply(
        &sink,
        &target,
        token,
        &pos,
        n,
        1,
        rows,
        bytes,
        "cartridge-warp snapshot apply, 1 chunk at a time",
    )
    .await?;
    sqlx::raw_sql("TRUNCATE bench_warp.orders")
        .execute(&pool)
        .await?;
    let parallel = timed_apply(
        &sink,
        &target,
        token,
        &pos,
        n,
        2,
        rows,
        bytes,
        "cartridge-warp snapshot apply, 2 chunks in parallel",
    )
    .await?;
    let landed: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_warp.orders")
        .fetch_one(&pool)
        .await?;
    if landed != n {
        return Err(format!("sink landed {landed} rows, expected {n}").into());
    }
    let streamed = timed_changes(&sink, &target, token, n, rows, bytes).await?;
    Ok(vec![raw, raw_binary, sequential, parallel, streamed])
}

/// The limit: rows 1..=`rows` already encoded as COPY text in a file, loaded by
/// `psql -1 -c '\copy …'` (one transaction) into `<schema_name>.orders` (same primary
/// key). The measurement's `bytes` is the size of that text.
pub async fn raw_copy(
    pool: &sqlx::PgPool,
    url: &str,
    schema_name: &str,
    rows: u64,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema_name} CASCADE; CREATE SCHEMA {schema_name}"
    )))
    .execute(pool)
    .await?;
    let schema = data::schema("orders");
    let n = i64::try_from(rows)?;

    // The same rows as COPY text in a file (written before timing).
    let dir = std::env::temp_dir().join(format!("warp-bench-{schema_name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("orders.copy");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let mut bytes = 0u64;
    for id in 1..=n {
        let line = copy_text(&data::row(id));
        bytes += line.len() as u64;
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    drop(out);

    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, warp_sink_postgres::pg_type(&c.column_type)))
        .collect();
    let ddl = format!(
        "CREATE TABLE {schema_name}.orders ({}, PRIMARY KEY (id))",
        cols.join(", ")
    );
    sqlx::raw_sql(AssertSqlSafe(ddl)).execute(pool).await?;
    settle(pool).await?;
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", url, "-c"])
        .arg(format!(
            "\\copy {schema_name}.orders FROM '{}'",
            file.display()
        ))
        .status()?;
    if !status.success() {
        return Err(format!("psql \\copy failed: {status}").into());
    }
    let raw = Measurement {
        name: "psql \\copy of a text file (one transaction)".into(),
        rows,
        bytes,
        took: started.elapsed(),
    };
    std::fs::remove_dir_all(&dir)?;
    Ok(raw)
}

/// The other limit: the same rows in COPY binary form (written by PostgreSQL itself from
/// the table [`raw_copy`] filled, one file per 50,000 rows, before timing), sent with
/// `COPY … FROM STDIN (FORMAT binary)` into a fresh table of the same shape, one
/// transaction per file. cartridge-warp sends snapshot rows in this format.
pub async fn raw_copy_binary(
    pool: &sqlx::PgPool,
    schema_name: &str,
    rows: u64,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    use futures::StreamExt;
    let n = i64::try_from(rows)?;
    let dir = std::env::temp_dir().join(format!("warp-bench-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    let mut conn = pool.acquire().await?;
    let mut start = 1;
    while start <= n {
        let end = (start + CHUNK - 1).min(n);
        let path = dir.join(format!("{start}.bin"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut data = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {schema_name}.orders WHERE id BETWEEN {start} AND {end} ORDER BY id) \
                 TO STDOUT (FORMAT binary)"
            ))
            .await?;
        while let Some(bytes) = data.next().await {
            out.write_all(&bytes?)?;
        }
        out.flush()?;
        files.push(path);
        start = end + 1;
    }
    drop(conn);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {schema_name}.orders_bin; \
         CREATE TABLE {schema_name}.orders_bin (LIKE {schema_name}.orders INCLUDING ALL)"
    )))
    .execute(pool)
    .await?;
    settle(pool).await?;
    let started = Instant::now();
    for path in &files {
        let bytes = std::fs::read(path)?;
        let mut tx = pool.begin().await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {schema_name}.orders_bin FROM STDIN (FORMAT binary)"
            ))
            .await?;
        copy.send(bytes).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let took = started.elapsed();
    std::fs::remove_dir_all(&dir)?;
    Ok(Measurement {
        name: "raw COPY (binary, pre-encoded file)".into(),
        rows,
        bytes: 0,
        took,
    })
}

/// Starts a timed line from the same server state: a `CHECKPOINT` first, so no line pays
/// for another's dirty pages, and every line writes full-page images after a checkpoint
/// alike (without it a timed checkpoint could fall inside one line and not another: two
/// passes measured the same binary COPY at 2.65 s and 4.05 s).
/// Autovacuum workers are waited for first (up to a minute, said on stderr): the tables
/// the previous line filled get vacuumed soon after, and a worker running through the
/// next line would take CPU from it.
pub async fn settle(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(60);
    while Instant::now() < deadline {
        let workers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_one(pool)
        .await?;
        if workers == 0 {
            if started.elapsed().as_secs_f64() > 0.1 {
                eprintln!(
                    "waited {:.1} s for autovacuum",
                    started.elapsed().as_secs_f64()
                );
            }
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    sqlx::raw_sql("CHECKPOINT").execute(pool).await.map(drop)
}

/// Applies every row again as an update (COPY into staging, then the set-based upsert),
/// in batches of 5,000 committed with a checkpoint each — the streaming path.
async fn timed_changes(
    sink: &PostgresSink,
    target: &Target,
    token: warp_core::FencingToken,
    n: i64,
    rows: u64,
    bytes: u64,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    use warp_core::{Change, ChangeEvent, Operation, Value};
    const BATCH: i64 = 5_000;
    let started = Instant::now();
    let mut id = 1;
    let mut seq = 0u64;
    while id <= n {
        let end = (id + BATCH - 1).min(n);
        let changes: Vec<Change> = (id..=end)
            .map(|i| {
                let mut row = data::row(i);
                row.values[6] = Value::Int(i % 20 + 2); // quantity changes: a real update
                Change::Row(ChangeEvent {
                    op: Operation::Update,
                    key: vec![Value::Int(i)],
                    before: None,
                    after: Some(row),
                    source_ts: None,
                })
            })
            .collect();
        let mut tx = sink.begin(target, token).await?;
        tx.apply(changes).await?;
        seq += 1;
        tx.commit(CheckpointUpdate::Streaming {
            position: Position::from_json(serde_json::json!({ "bench": seq })),
            source_ts: None,
            handover: Vec::new(),
            shape: None,
            recopy: None,
        })
        .await?;
        id = end + 1;
    }
    Ok(Measurement {
        name: "cartridge-warp streaming apply (updates, 5,000 per batch)".into(),
        rows,
        bytes,
        took: started.elapsed(),
    })
}

/// Applies rows 1..=n as 50k-row chunks, `parallel` chunks at a time, like a snapshot.
#[allow(clippy::too_many_arguments)]
async fn timed_apply(
    sink: &PostgresSink,
    target: &Target,
    token: warp_core::FencingToken,
    pos: &Position,
    n: i64,
    parallel: usize,
    rows: u64,
    bytes: u64,
    name: &str,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    use futures::StreamExt;
    let chunks = (n + CHUNK - 1) / CHUNK;
    // A fresh snapshot plan, as the engine records before copying.
    let plan = (0..chunks).map(|_| KeyRange::ALL).collect();
    let tx = sink.begin(target, token).await?;
    tx.commit(CheckpointUpdate::BeginSnapshot {
        start: pos.clone(),
        chunks: plan,
        recopy: false,
        shared: None,
    })
    .await?;
    let started = Instant::now();
    let results: Vec<warp_core::Result<()>> = futures::stream::iter(0..chunks)
        .map(|index| async move {
            let mut tx = sink.begin(target, token).await?;
            let (first, last) = (index * CHUNK + 1, ((index + 1) * CHUNK).min(n));
            let mut id = first;
            while id <= last {
                let page_end = (id + PAGE - 1).min(last);
                tx.write_snapshot_rows((id..=page_end).map(data::row).collect())
                    .await?;
                id = page_end + 1;
            }
            let index = usize::try_from(index).unwrap_or(usize::MAX);
            tx.commit(CheckpointUpdate::ChunkDone {
                index,
                position: pos.clone(),
                rows: (last - first + 1) as u64,
            })
            .await
            .map(drop)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<warp_core::Result<Vec<()>>>()?;
    Ok(Measurement {
        name: name.into(),
        rows,
        bytes,
        took: started.elapsed(),
    })
}

/// The row in COPY text form, through the same value → text rules PostgreSQL input uses.
fn copy_text(row: &warp_core::Row) -> String {
    let fields: Vec<String> = row
        .values
        .iter()
        .map(|v| match v {
            warp_core::Value::Null => "\\N".to_owned(),
            warp_core::Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            warp_core::Value::TimestampTz(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            other => other.to_string(),
        })
        .collect();
    format!("{}\n", fields.join("\t"))
}
