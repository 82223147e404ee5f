//! Full load by paged queries over key ranges.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use warp_core::{ChunkPage, KeyRange, Value};

use crate::error::Result;
use crate::query::{Query, Runner};
use crate::table::BqTable;

/// Rows per result page.
/// Rows per page when `stream_batch_size` is unset.
pub const PAGE_ROWS: usize = 10_000;

/// Chunk bounds every `chunk_rows` keys (tables with a one-column key; others are one
/// chunk). One query reads only the key column.
pub async fn plan(runner: &Runner, t: &BqTable, chunk_rows: usize) -> Result<Vec<KeyRange>> {
    let key = t.key_columns();
    if key.len() != 1 {
        return Ok(vec![KeyRange::ALL]);
    }
    let k = t.key_list();
    let sql = format!(
        "SELECT {k} FROM (SELECT {k}, ROW_NUMBER() OVER (ORDER BY {k}) AS rn {}) \
         WHERE rn > 1 AND MOD(rn - 1, @n) = 0 ORDER BY {k}",
        t.scan_where::<&str>(&[])
    );
    let q = Query::new(&t.schema.id.name, sql).param("n", &Value::Int(chunk_rows as i64))?;
    let bounds = runner.all(q).await?;
    Ok(KeyRange::split_at(
        bounds.iter().map(|cells| t.key(cells)).collect(),
    ))
}

/// The rows of one chunk, in pages.
pub fn read(
    runner: &Runner,
    t: &BqTable,
    range: &KeyRange,
    only: Option<(String, Option<Value>)>,
    page_rows: usize,
) -> Result<BoxStream<'static, warp_core::Result<ChunkPage>>> {
    let k = t.key_list();
    let mut filter = Vec::new();
    if range.start.is_some() {
        filter.push(format!("{k} >= @lo"));
    }
    if range.end.is_some() {
        filter.push(format!("{k} < @hi"));
    }
    let top = only.and_then(|(condition, top)| {
        filter.push(condition);
        top
    });
    let mut q = Query::new(
        &t.schema.id.name,
        format!(
            "SELECT {} {} ORDER BY {k}",
            t.select_list(),
            t.scan_where(&filter)
        ),
    );
    // Ranges exist only for one-column keys (see `plan`).
    if let Some(lo) = range.start.as_ref().and_then(|s| s.first()) {
        q = q.param("lo", lo)?;
    }
    if let Some(hi) = range.end.as_ref().and_then(|e| e.first()) {
        q = q.param("hi", hi)?;
    }
    if let Some(top) = &top {
        q = q.param("top", top)?;
    }
    let table = t.clone();
    Ok(runner
        .pages(q, i32::try_from(page_rows).unwrap_or(i32::MAX))
        .map_ok(move |page| ChunkPage::Rows(page.iter().map(|cells| table.row(cells)).collect()))
        .map_err(warp_core::Error::from)
        .boxed())
}
