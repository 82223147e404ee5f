//! What the engine test suites share: the schema, settings and a running pipeline.
#![allow(dead_code)] // each suite uses a different part

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warp_core::config::{load_str, ConfigOverrides, Environment, ResolvedSchema};
use warp_core::testing::{MemorySink, MemorySource};
use warp_core::{
    Backoff, EngineSettings, LeaseTiming, Pipeline, PipelineControl, Result, Row, StatusBoard,
    TableKey, Value,
};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn row(id: i64, generation: i64) -> Row {
    Row::new(vec![
        Value::Int(id),
        Value::Text(format!("name-{id}-{generation}")),
        Value::Int(id * 10 + generation),
    ])
}

pub fn settings() -> EngineSettings {
    EngineSettings {
        owner: "test".into(),
        max_retries: 3,
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(10),
        },
        failed_cooldown: Duration::from_millis(50),
        batch_max_bytes: 1 << 20,
        batch_max_wait: Duration::from_millis(10),
        idle_checkpoint_interval: Duration::from_millis(50),
        queue_capacity: 4,
        full_resync: false,
        correlation_ids: true,
        leases: LeaseTiming {
            validity: Duration::from_millis(300),
            interval: Duration::from_millis(100),
        },
        feed_stall: Duration::from_millis(300),
        read_timeout: Duration::from_millis(500),
        discovery_interval: Some(Duration::from_millis(100)),
    }
}

/// A schema `shop` whose tables use `table_yaml` (YAML mapping body) as settings.
pub fn schema(tables_yaml: &str) -> ResolvedSchema {
    schema_with("", tables_yaml)
}

/// [`schema`] of a source polled by its `v` column (`timestamp` strategy).
pub fn polled_schema(tables_yaml: &str) -> ResolvedSchema {
    schema_with(
        ", change_detection_strategy: timestamp, change_detection_column: v",
        tables_yaml,
    )
}

/// [`schema`] with `source_extra` appended to the source mapping.
fn schema_with(source_extra: &str, tables_yaml: &str) -> ResolvedSchema {
    let yaml = format!(
        "source: {{ type: mysql, connection_string: 'mysql://u@h/shop'{source_extra} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas:\n- name: shop\n  snapshot_chunk_size: 10\n  tables:\n{tables_yaml}"
    );
    let loaded = load_str(
        &yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .unwrap();
    loaded.config.schemas_to_run(None).remove(0)
}

pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<()>>,
    pub status: StatusBoard,
    pub control: PipelineControl,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// The destination the engine suites run against: a sink that records checkpoints with
/// its data, or, with `WARP_TEST_CHECKPOINTS=apart` (a second run of the suites in
/// `scripts/test.sh`), one that commits data alone and leaves each checkpoint to its
/// control store, as a destination without a shared transaction does.
pub fn destination() -> MemorySink {
    match std::env::var("WARP_TEST_CHECKPOINTS").as_deref() {
        Ok("apart") => MemorySink::with_checkpoints_apart(),
        Ok("together") | Err(_) => MemorySink::new(),
        Ok(other) => panic!("WARP_TEST_CHECKPOINTS={other}: expected apart or together"),
    }
}

pub fn start(
    source: &MemorySource,
    sink: &MemorySink,
    schema: ResolvedSchema,
    settings: EngineSettings,
) -> Running {
    let pipeline = Pipeline::new(
        schema,
        Arc::new(source.clone()),
        Arc::new(sink.clone()),
        Arc::new(sink.control()),
        settings,
    );
    let status = pipeline.status();
    let control = pipeline.control();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(pipeline.run(shutdown.clone()));
    Running {
        shutdown,
        handle,
        status,
        control,
    }
}

pub fn key(table: &str) -> TableKey {
    TableKey {
        schema: "shop".into(),
        table: table.into(),
    }
}

/// No row's version exceeds the number of source writes to it (a replayed change would
/// push it above).
pub fn assert_no_double_apply(source: &MemorySource, sink: &MemorySink, table: &str) {
    for (k, stored) in sink.stored("shop", table) {
        let changes = source.changes_for(table, &k);
        assert!(
            stored.version <= changes.max(1),
            "{k:?}: version {} but only {changes} source changes",
            stored.version
        );
    }
}
