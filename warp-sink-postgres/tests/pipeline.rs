//! The engine driving the real PostgreSQL sink: parallel chunked snapshot with writes
//! during the copy, a crash mid-snapshot, restart, streaming — and no change applied twice.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use warp_core::config::{load_str, ConfigOverrides, Environment, ResolvedSchema};
use warp_core::testing::{wait_for, FailPoint, MemorySource};
use warp_core::{
    Backoff, EngineSettings, Pipeline, Retry, Row, Sink, TableKey, TableState, Target, Value,
};
use warp_sink_postgres::read::rows;
use warp_sink_postgres::PostgresSink;

fn schema() -> ResolvedSchema {
    let yaml = "source: { type: mysql, connection_string: 'mysql://u@h/shop' }\n\
                destination: { type: postgresql, connection_string: 'postgresql://u@h/d', schema: t_pipeline }\n\
                schemas:\n- name: shop\n  snapshot_chunk_size: 50\n  tables:\n    orders: { parallel_streams: 3, batch_size: 40 }\n";
    let loaded = load_str(
        yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .unwrap();
    loaded.config.schemas_to_run(None).remove(0)
}

fn settings() -> EngineSettings {
    EngineSettings {
        owner: "pipeline-test".into(),
        max_retries: 5,
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        failed_cooldown: Duration::from_millis(100),
        batch_max_bytes: 1 << 20,
        batch_max_wait: Duration::from_millis(20),
        idle_checkpoint_interval: Duration::from_millis(50),
        queue_capacity: 8,
        full_resync: false,
        correlation_ids: true,
        leases: warp_core::LeaseTiming::from_ttl(Duration::from_secs(30)),
        feed_stall: Duration::from_secs(5),
        read_timeout: Duration::from_secs(60),
        discovery_interval: None,
    }
}

fn row(id: i64, generation: i64) -> Row {
    Row::new(vec![
        Value::Int(id),
        Value::Text(format!("name-{id}-{generation}")),
        Value::Int(id * 10 + generation),
    ])
}

#[tokio::test]
async fn engine_with_postgres_sink_survives_a_crash_mid_snapshot() {
    let url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name("cw-test-pipeline");
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect_with(options)
        .await
        .unwrap();
    for s in ["t_pipeline", "m_pipeline"] {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {s} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
    let sink = PostgresSink::with_pool(pool.clone(), "m_pipeline");
    let source = MemorySource::with_sample_table("shop", "orders", 1000);

    // Writes land while chunks are read; the eighth chunk read "crashes" the process.
    let reads = Arc::new(AtomicI64::new(0));
    let (counter, faults) = (Arc::clone(&reads), source.faults().clone());
    source.on_chunk_read(move |src| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        if n < 12 {
            src.update("orders", row(n * 50 + 1, 1));
            src.update("orders", row(990 - n, 1));
            src.insert("orders", row(2000 + n, 0));
            src.delete("orders", vec![Value::Int(900 + n)]);
        }
        if n == 7 {
            faults.arm(FailPoint::ReadChunk, Some("orders"), 1, Retry::Permanent);
        }
    });

    let start = |source: &MemorySource| {
        let pipeline = Pipeline::new(
            schema(),
            Arc::new(source.clone()),
            Arc::new(sink.clone()),
            Arc::new(sink.clone()),
            settings(),
        );
        let status = pipeline.status();
        let shutdown = CancellationToken::new();
        (
            tokio::spawn(pipeline.run(shutdown.clone())),
            shutdown,
            status,
        )
    };
    let key = TableKey {
        schema: "shop".into(),
        table: "orders".into(),
    };
    let (run, shutdown, status) = start(&source);
    wait_for("the crash", Duration::from_secs(30), || {
        status
            .get(&key)
            .is_some_and(|s| s.state == TableState::Failed)
    })
    .await;
    // A failed table waits for a resync or shutdown; this "process" is shut down.
    shutdown.cancel();
    run.await.unwrap().unwrap();

    // Restart: resumes the snapshot, then streams.
    let (run, shutdown, status) = start(&source);
    let target = Target::new(&schema(), &warp_core::TableId::new("shop", "orders"));
    let table_schema = source_schema(&source).await;
    let equal = || async {
        let landed = rows(&pool, &target, &table_schema)
            .await
            .unwrap_or_default();
        let live: Vec<Row> = landed
            .iter()
            .filter(|r| !r.deleted)
            .map(|r| r.row.clone())
            .collect();
        live == source.rows("orders")
    };
    wait_until(&status, &key, equal).await;
    for id in (1..=1000).step_by(7) {
        source.update("orders", row(id, 5));
    }
    source.transaction("orders", (3000..3200).map(|id| row(id, 0)).collect());
    wait_until(&status, &key, equal).await;

    for r in rows(&pool, &target, &table_schema).await.unwrap() {
        let changes = source.changes_for("orders", &vec![r.row.values[0].clone()]);
        assert!(
            u64::try_from(r.version).unwrap() <= changes.max(1),
            "{:?}: version {} after {changes} source changes",
            r.row.values[0],
            r.version
        );
    }
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

async fn source_schema(source: &MemorySource) -> warp_core::TableSchema {
    use warp_core::Source;
    source
        .discover(&schema())
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id.name == "orders")
        .unwrap()
}

async fn wait_until<F, Fut>(status: &warp_core::StatusBoard, key: &TableKey, equal: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let caught_up = async || {
        let streaming = status
            .get(key)
            .is_some_and(|s| s.state == TableState::Streaming && s.pending_changes == 0);
        (streaming && equal().await).then_some(())
    };
    let state = || format!("{:?}", status.get(key));
    let what = format!("{key} streaming and equal to the source");
    warp_e2e::eventually_with(&what, warp_e2e::Poll::TIGHT, caught_up, state).await;
}

#[tokio::test]
async fn dry_run_plan_reads_the_catalog_and_writes_nothing() {
    let url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql("DROP SCHEMA IF EXISTS t_plan CASCADE; DROP SCHEMA IF EXISTS m_plan CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let sink = PostgresSink::with_pool(pool.clone(), "m_plan");
    let source = MemorySource::with_sample_table("shop", "orders", 3);
    let table = source_schema(&source).await;
    let mut target = Target::new(&schema(), &table.id);
    target.destination_schema = "t_plan".into();
    let ddl = sink.plan_table(&target, &table).await.unwrap();
    assert!(
        ddl.iter()
            .any(|s| s.starts_with("CREATE TABLE \"t_plan\".\"orders\"")),
        "{ddl:?}"
    );
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname IN ('t_plan', 'm_plan'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!exists, "planning created nothing");
}
