//! Shared by the MySQL source suites.

use futures::StreamExt;
use warp_core::{ChunkRead, Source, TableSchema, Value};

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
