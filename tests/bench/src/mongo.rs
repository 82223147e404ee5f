//! MongoDB → PostgreSQL through the `cartridge-warp` binary, next to a raw driver read
//! of the same server in the same run: a `find` of every document (the snapshot's limit)
//! and a change-stream read of the same events (the stream's limit). The only MongoDB
//! here is the nx-27017 emulator, so the absolute rates say little; the ratios say how
//! much cartridge-warp adds on top of reading.

use std::path::Path;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use futures::TryStreamExt;
use mongodb::Collection;
use sqlx::PgPool;

use crate::replicator::{until, Replicator};
use crate::Measurement;

const DB: &str = "bench_mongo";

pub struct Settings<'a> {
    pub pg_url: &'a str,
    pub mongo_url: &'a str,
    pub binary: &'a Path,
    pub docs: u64,
    pub changes: u64,
}

fn document(i: i64) -> Document {
    let channel = ["web", "app", "store"][(i % 3) as usize];
    doc! {
        "_id": i,
        "customer": i % 50_000,
        "status": (i % 7) as i32,
        "sku": format!("SKU-{:08}", i % 100_000),
        "title": format!("Order {i} — assorted items"),
        "amount": (i % 100_000) as f64 + 0.25,
        "quantity": (i % 20 + 1) as i32,
        "attributes": { "channel": channel, "gift": i % 11 == 0 },
        "tags": [i % 5, i % 13],
    }
}

async fn insert(
    coll: &Collection<Document>,
    from: i64,
    to: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut id = from;
    while id <= to {
        let end = (id + 999).min(to);
        coll.insert_many((id..=end).map(document)).await?;
        id = end + 1;
    }
    Ok(())
}

/// Reads `n` change events after `token` with the driver alone.
async fn read_stream(
    coll: &Collection<Document>,
    token: Option<mongodb::change_stream::event::ResumeToken>,
    n: u64,
) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let started = Instant::now();
    // Raw documents: the emulator's events do not fit the driver's typed event.
    let mut cs = coll
        .watch()
        .resume_after(token)
        .await?
        .with_type::<bson::RawDocumentBuf>();
    let mut events = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while events < n {
        match tokio::time::timeout(Duration::from_secs(30), cs.next_if_any()).await?? {
            Some(_) => events += 1,
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        if Instant::now() > deadline {
            return Err(format!("read {events} of {n} change events in 120 s").into());
        }
    }
    Ok((events, started.elapsed()))
}

fn config(s: &Settings<'_>, dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("bench-mongo.yaml");
    std::fs::write(
        &path,
        format!(
            "mode: single\nsingle_schema_name: bench_mongo\n\
             performance: {{ write_batch_size: 5000, write_batch_max_wait: 0.05 }}\n\
             source: {{ type: mongodb, connection_string: '{}', database: {DB} }}\n\
             destination: {{ type: postgresql, connection_string: '{}', schema: bench_mongo_dest, metadata_schema: bench_mongo_meta }}\n\
             schemas:\n- name: bench_mongo\n  snapshot_chunk_size: 20000\n  parallel_streams: 2\n\
             monitoring: {{ metrics_enabled: false, health_check_enabled: false }}\n\
             logging: {{ level: warn, format: text }}\n",
            s.mongo_url, s.pg_url
        ),
    )?;
    Ok(path)
}

/// (measurements, peak RSS of cartridge-warp in MiB)
pub async fn run(s: &Settings<'_>) -> Result<(Vec<Measurement>, f64), Box<dyn std::error::Error>> {
    let pg: PgPool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(s.pg_url)
        .await?;
    sqlx::raw_sql("DROP SCHEMA IF EXISTS bench_mongo_dest CASCADE; DROP SCHEMA IF EXISTS bench_mongo_meta CASCADE")
        .execute(&pg)
        .await?;
    let client = mongodb::Client::with_uri_str(s.mongo_url).await?;
    let db = client.database(DB);
    db.drop().await?;
    let coll: Collection<Document> = db.collection("orders");
    let n = i64::try_from(s.docs)?;
    insert(&coll, 1, n).await?;

    // Limit: the driver reading every document.
    let started = Instant::now();
    let mut cursor = coll.find(doc! {}).batch_size(2_000).await?;
    let mut read = 0u64;
    while cursor.try_next().await?.is_some() {
        read += 1;
    }
    let raw_read = started.elapsed();

    let dir = std::env::temp_dir().join(format!("warp-bench-mongo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = config(s, &dir)?;
    let log = dir.join("warp.log");
    let started = Instant::now();
    let mut warp = Replicator::start(s.binary, &config, &log)?;
    let streaming = "SELECT 1 FROM bench_mongo_meta.checkpoints WHERE table_name = 'orders' AND phase = 'streaming'";
    until(&pg, &mut warp, streaming, Duration::from_secs(1_800), &log).await?;
    let snapshot = started.elapsed();
    // The stream, live: one writer, the driver reading the change stream and the
    // replicator both following it, timed from the first write. (The emulator keeps a
    // short change history, so a backlog built while the replicator is stopped would
    // be lost to both; live, the source's write rate bounds them both.)
    let token = coll.watch().await?.resume_token();
    let m = i64::try_from(s.changes)?;
    let started = Instant::now();
    let reader = {
        let coll = coll.clone();
        let changes = s.changes;
        tokio::spawn(async move {
            read_stream(&coll, token, changes)
                .await
                .map_err(|e| e.to_string())
        })
    };
    // One document per write: the emulator's change streams miss events of
    // multi-document writes under load.
    for i in n + 1..=n + m {
        coll.insert_one(document(i)).await?;
    }
    let written = started.elapsed();
    let last = format!(
        "SELECT 1 FROM bench_mongo_dest.orders WHERE _id = '{}'",
        n + m
    );
    until(&pg, &mut warp, &last, Duration::from_secs(1_800), &log).await?;
    let caught_up = started.elapsed();
    let (events, raw_stream) = reader.await??;
    eprintln!("wrote {m} documents in {:.2} s", written.as_secs_f64());
    let peak = warp.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let line = |name: &str, rows: u64, took: Duration| Measurement {
        name: name.into(),
        rows,
        bytes: 0,
        took,
    };
    Ok((
        vec![
            line(
                "raw driver find of every document (emulator)",
                read,
                raw_read,
            ),
            line(
                "cartridge-warp snapshot (binary, 2 chunks in parallel)",
                s.docs,
                snapshot,
            ),
            line(
                "raw driver change-stream read, live (from the first write)",
                events,
                raw_stream,
            ),
            line(
                "cartridge-warp streaming, live (first write → last at the destination)",
                s.changes,
                caught_up,
            ),
        ],
        peak as f64 / 1024.0,
    ))
}
