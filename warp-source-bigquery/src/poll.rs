//! Incremental polling (SPEC §7): rows with `change_detection_column >= watermark` in
//! (column, key) order; rows tied at the watermark are de-duplicated by key, and the
//! watermark commits with the data. Polling cannot see deletes: delete detection
//! (`delete_detection_interval`) compares key sets instead.

use futures::stream::BoxStream;
use warp_core::{
    Change, ChangeEvent, Operation, Pace, PollBatch, StreamFragment, Value, Watermark,
};

use crate::error::{BigQueryError, Result};
use crate::query::{quote, Query, Runner};
use crate::table::BqTable;

/// Rows read per poll.
/// Rows per poll when `stream_batch_size` is unset.
pub const PAGE: usize = 10_000;

fn column_index(t: &BqTable, column: &str) -> Result<usize> {
    t.schema
        .column_index(column)
        .ok_or_else(|| BigQueryError::Unsupported {
            message: format!(
                "{}: change_detection_column `{column}` does not exist",
                t.schema.id
            ),
            hint: Some(
                "name a TIMESTAMP (or DATETIME/INT64) column that every write updates".into(),
            ),
        })
}

/// Where a snapshot (or a chunk read) stands: before the column's current maximum. The
/// copy takes only rows below it ([`older_than`]); rows at it or above are the first
/// poll's, so no position has tied keys to agree on.
pub async fn current(runner: &Runner, t: &BqTable, column: &str) -> Result<Watermark> {
    let i = column_index(t, column)?;
    let cd = quote(column);
    let max = runner
        .all(Query::new(
            &t.schema.id.name,
            format!("SELECT MAX({cd}) FROM {}", t.path),
        ))
        .await?;
    let value = match (max.first().and_then(|r| r.first()), &t.fields[i]) {
        (Some(cell), Some(f)) => crate::types::value(cell, f),
        _ => Value::Null,
    };
    Ok(Watermark::at((!value.is_null()).then_some(value)))
}

/// The rows a chunk read at `at` copies, as a condition on the `@top` parameter: those
/// below its value, and those without a value (polls never see them).
pub fn older_than(column: &str, at: &Watermark) -> (String, Option<Value>) {
    let c = quote(column);
    match &at.value {
        Some(v) => (format!("({c} < @top OR {c} IS NULL)"), Some(v.clone())),
        None => (format!("{c} IS NULL"), None),
    }
}

struct Poller {
    runner: Runner,
    table: BqTable,
    column: usize,
    at: Watermark,
    rows: usize,
}

/// Polls forever from `from`, one fragment per poll (a heartbeat when nothing changed).
pub fn stream(
    runner: Runner,
    table: BqTable,
    column: &str,
    from: Watermark,
    pace: Pace,
) -> Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
    let poller = Poller {
        column: column_index(&table, column)?,
        runner,
        table,
        at: from,
        rows: pace.rows,
    };
    Ok(warp_core::poll_every(poller, pace.interval))
}

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let t = &self.table;
        let cd = quote(&t.schema.columns[self.column].name);
        let limit = self.rows + self.at.keys_at.len();
        let (filter, value) = match &self.at.value {
            Some(w) => (format!("WHERE {cd} >= @w"), Some(w)),
            None => (format!("WHERE {cd} IS NOT NULL"), None),
        };
        let mut q = Query::new(
            &t.schema.id.name,
            format!(
                "SELECT {} FROM {} {filter} ORDER BY {cd}, {} LIMIT {limit}",
                t.select_list(),
                t.path,
                t.key_list()
            ),
        );
        if let Some(w) = value {
            q = q.param("w", w)?;
        }
        let rows = self.runner.all(q).await?;
        let key_columns = t.key_columns();
        let mut batch = PollBatch::new(self.at.clone());
        for cells in &rows {
            let row = t.row(cells);
            let key = row.key(&key_columns);
            if !batch.admit(&row.values[self.column], &key)? {
                continue;
            }
            batch.push(Change::Row(ChangeEvent {
                // Polling cannot tell an insert from an update: both upsert.
                op: Operation::Update,
                key,
                before: None,
                after: Some(row),
                source_ts: None,
            }));
        }
        let (at, fragments) = batch.finish()?;
        self.at = at;
        Ok(fragments)
    }
}
