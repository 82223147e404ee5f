//! Incremental polling (SPEC §7): rows with `change_detection_column >= watermark` in
//! (column, key) order; rows tied at the watermark are de-duplicated by key, and the
//! watermark commits with the data. Polling cannot see deletes: delete detection
//! (`delete_detection_interval`) compares key sets instead.

use chrono::Utc;
use futures::stream::BoxStream;
use warp_core::{Change, ChangeEvent, Commit, Operation, Pace, StreamFragment, Value, Watermark};

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

/// The current watermark: the column's maximum, with the keys of the rows at exactly
/// that value (a snapshot copies them; the first poll must not repeat them).
pub async fn current(runner: &Runner, t: &BqTable, column: &str) -> Result<Watermark> {
    let i = column_index(t, column)?;
    let cd = quote(column);
    let name = &t.schema.id.name;
    let max = runner
        .all(Query::new(
            name,
            format!("SELECT MAX({cd}) FROM {}", t.path),
        ))
        .await?;
    let value = match (max.first().and_then(|r| r.first()), &t.fields[i]) {
        (Some(cell), Some(f)) => crate::types::value(cell, f),
        _ => Value::Null,
    };
    if value.is_null() {
        return Ok(Watermark::at(None));
    }
    let tied = runner
        .all(
            Query::new(
                name,
                format!("SELECT {} FROM {} WHERE {cd} = @w", t.key_list(), t.path),
            )
            .param("w", &value)?,
        )
        .await?;
    let mut w = Watermark::at(Some(value));
    w.keys_at = tied.iter().map(|k| t.key(k)).collect();
    Ok(w)
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
    async fn poll(&mut self) -> warp_core::Result<StreamFragment> {
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
        let mut at = self.at.clone();
        let mut changes = Vec::new();
        for cells in &rows {
            let row = t.row(cells);
            let key = row.key(&key_columns);
            if !at.admit(&row.values[self.column], &key) {
                continue;
            }
            changes.push(Change::Row(ChangeEvent {
                // Polling cannot tell an insert from an update: both upsert.
                op: Operation::Update,
                key,
                before: None,
                after: Some(row),
                source_ts: None,
            }));
        }
        self.at = at;
        // Every row changed up to this poll is in hand: caught up as of now.
        Ok(StreamFragment::transaction(
            changes,
            Commit {
                position: self.at.encode()?,
                source_ts: Some(Utc::now()),
            },
        ))
    }
}
