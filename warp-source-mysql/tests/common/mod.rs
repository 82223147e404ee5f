//! Shared by the MySQL source suites.
#![allow(dead_code)] // each suite uses its own part

use futures::StreamExt;
use warp_core::config::{load_str, ConfigOverrides, Environment};
use warp_core::{ChunkRead, Source, TableSchema, Value};
use warp_source_mysql::MysqlSource;

/// The source of schema `db` as the config loader builds it from `source_fields` (the
/// inside of the `source:` mapping, after `type: mysql`).
pub fn source_config(source_fields: &str, db: &str) -> warp_core::Result<MysqlSource> {
    tuned_source(source_fields, db, "")
}

/// [`source_config`] with more `performance` fields (`, key: value` each).
pub fn tuned_source(
    source_fields: &str,
    db: &str,
    performance: &str,
) -> warp_core::Result<MysqlSource> {
    let yaml = format!(
        "performance: {{ polling_interval: 0.1{performance} }}\n\
         source: {{ type: mysql, {source_fields} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas: [ {{ name: {db}, source_database: {db} }} ]\n"
    );
    let loaded = load_str(
        &yaml,
        "test",
        &Environment::new(),
        &ConfigOverrides::default(),
    )
    .expect("config");
    let schema = loaded.config.schemas_to_run(None).remove(0);
    MysqlSource::new(&loaded.config.source, &schema)
}

/// `db` dropped and created again, as the current database of `conn`.
pub async fn fresh_database(conn: &mut mysql_async::Conn, db: &str) {
    use mysql_async::prelude::Queryable;
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
        format!("USE {db}"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
}

/// A binlog reader id no other test process uses (`base` keeps suites apart).
pub fn server_id(base: u32) -> u32 {
    base + std::process::id() % 40_000 * 20
}

/// Every row value of one chunk read, in the order the source gave them.
pub async fn rows_of_chunk(read: ChunkRead) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for page in read.rows.collect::<Vec<_>>().await {
        rows.extend(
            page.unwrap()
                .into_rows()
                .unwrap()
                .into_iter()
                .map(|r| r.values),
        );
    }
    rows
}

/// The whole snapshot of `t` in chunks of `chunk_rows`, as the engine would copy it.
pub async fn copy_all(source: &dyn Source, t: &TableSchema, chunk_rows: usize) -> Vec<Vec<Value>> {
    let plan = source.plan_snapshot(t, chunk_rows).await.unwrap();
    let mut rows = Vec::new();
    for chunk in &plan.chunks {
        rows.extend(rows_of_chunk(source.read_chunk(t, chunk).await.unwrap()).await);
    }
    rows
}
