//! Embedding the engine: a pipeline over in-memory connectors that copies a table, then
//! streams live changes, printing each table's status. Run with
//! `cargo run -p warp-core --features test-utils --example embedded`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warp_core::config::{load_str, ConfigOverrides, Environment};
use warp_core::testing::{MemorySink, MemorySource};
use warp_core::{EngineSettings, Pipeline, Row, Value};

const CONFIG: &str = r#"
source: { type: mysql, connection_string: "mysql://demo@localhost/shop" }
destination: { type: postgresql, connection_string: "postgresql://demo@localhost/dw" }
schemas:
- name: shop
  snapshot_chunk_size: 2500
  tables:
    orders: { parallel_streams: 2 }
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loaded = load_str(
        CONFIG,
        "embedded",
        &Environment::new(),
        &ConfigOverrides::default(),
    )?;
    let schema = loaded.config.schemas_to_run(None).remove(0);
    let source = MemorySource::with_sample_table("shop", "orders", 10_000);
    let sink = MemorySink::new();
    let mut settings = EngineSettings::from_config(&loaded.config, "demo");
    settings.batch_max_wait = Duration::from_millis(50);
    let pipeline = Pipeline::new(
        schema,
        Arc::new(source.clone()),
        Arc::new(sink.clone()),
        Arc::new(sink.control()),
        settings,
    );
    let status = pipeline.status();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline.run(shutdown.clone()));

    sink.wait_until_equal(&source, "shop", "orders").await;
    println!(
        "snapshot copied: {} rows",
        sink.live_rows("shop", "orders").len()
    );
    for id in 1..=100 {
        source.update(
            "orders",
            Row::new(vec![
                Value::Int(id),
                Value::Text(format!("updated-{id}")),
                Value::Int(id),
            ]),
        );
    }
    source.delete("orders", vec![Value::Int(10_000)]);
    sink.wait_until_equal(&source, "shop", "orders").await;
    println!("101 live changes streamed; destination equals source");
    for table in status.snapshot() {
        println!(
            "{}.{}: {:?}, rows copied {}, events applied {}, commits {}, position {}",
            table.schema,
            table.table,
            table.state,
            table.rows_copied,
            table.events_applied,
            table.commits,
            table.position.unwrap_or_default()
        );
    }
    shutdown.cancel();
    run.await??;
    Ok(())
}
