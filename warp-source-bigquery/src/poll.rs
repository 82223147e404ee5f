//! Incremental polling (SPEC §7): rows in (`change_detection_column`, key) order after the
//! last one delivered — the rows at the last value read again while they fit a page,
//! paged by key beyond that (a tie of any size costs bounded queries, memory and
//! position) — and the watermark commits with the data. Polling cannot see deletes: delete detection
//! (`delete_detection_interval`) compares key sets instead.

use std::collections::HashMap;

use futures::stream::BoxStream;
use warp_core::{
    Change, ChangeEvent, Operation, Pace, PollBatch, StreamFragment, Value, Watermark,
};

use crate::error::{BigQueryError, Result};
use crate::query::{quote, Query, Runner};
use crate::table::BqTable;

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
/// poll's.
pub async fn current(runner: &Runner, t: &BqTable, column: &str) -> Result<Watermark> {
    let i = column_index(t, column)?;
    let cd = quote(column);
    let max = runner
        .all(Query::new(
            &t.schema.id.name,
            format!("SELECT MAX({cd}) {}", t.scan_where::<&str>(&[])),
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
    lookback: Option<Lookback>,
}

/// `source.lookback`: each poll also reads again the rows whose column lies within this
/// span below the watermark, so a row whose DML committed after a poll had passed its
/// timestamp (a long-running job stamps rows when it starts) still arrives. The rows of
/// the span already delivered, by key and version, are remembered and skipped; after a
/// restart the span is delivered once more (upserts of the same rows).
struct Lookback {
    span: chrono::Duration,
    /// Key (as JSON) → the version (column value) delivered, for versions in the span.
    seen: HashMap<String, Value>,
}

impl Lookback {
    /// The lowest column value the span reaches, below `w`.
    fn since(&self, w: &Value) -> Result<Value> {
        Ok(match w {
            Value::TimestampTz(t) => Value::TimestampTz(*t - self.span),
            Value::Timestamp(t) => Value::Timestamp(*t - self.span),
            Value::Date(d) => Value::Date(*d - self.span),
            other => {
                return Err(BigQueryError::Unsupported {
                    message: format!(
                        "source.lookback needs a TIMESTAMP, DATETIME or DATE change_detection_column, not {other:?}"
                    ),
                    hint: Some("remove source.lookback for this table's column type".into()),
                })
            }
        })
    }

    /// Whether the row at `version` is new to the span; records it.
    fn first_time(&mut self, key: &warp_core::Key, version: &Value) -> bool {
        let id = serde_json::to_string(key).unwrap_or_default();
        let same = self
            .seen
            .get(&id)
            .is_some_and(|v| v.cmp_key(version).is_eq());
        self.seen.insert(id, version.clone());
        !same
    }

    fn forget_below(&mut self, since: &Value) {
        self.seen.retain(|_, v| v.cmp_key(since).is_ge());
    }
}

/// Polls forever from `from`, one fragment per poll (a heartbeat when nothing changed).
pub fn stream(
    runner: Runner,
    table: BqTable,
    column: &str,
    from: Watermark,
    pace: Pace,
    lookback: Option<std::time::Duration>,
) -> Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
    let lookback = match lookback.filter(|d| !d.is_zero()) {
        Some(d) => Some(Lookback {
            span: chrono::Duration::from_std(d).map_err(|_| BigQueryError::Unsupported {
                message: format!("source.lookback of {d:?} is out of range"),
                hint: None,
            })?,
            seen: HashMap::new(),
        }),
        None => None,
    };
    let poller = Poller {
        column: column_index(&table, column)?,
        runner,
        table,
        at: from,
        rows: pace.rows,
        lookback,
    };
    Ok(warp_core::poll_every(poller, pace.interval))
}

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let t = &self.table;
        let cd = quote(&t.schema.columns[self.column].name);
        let key: Vec<String> = t
            .key_columns()
            .iter()
            .map(|&i| quote(&t.schema.columns[i].name))
            .collect();
        let mut params = Vec::new();
        let mut bind = |v: &Value| {
            params.push(v.clone());
            format!("@p{}", params.len())
        };
        // The rows at the position's value are read again while they fit a page: a later
        // statement can stamp the same value on a row with a smaller key than the last one
        // delivered (a writer reusing a timestamp), which paging by key alone would pass.
        // A larger group is one batch load: it is paged by key (bounded queries) and a
        // late row in it needs `lookback`, which covers the value anyway.
        let reread = self.lookback.is_none() && self.at.seen_at.len() < self.rows;
        self.at.reread_ties = reread;
        let after = if reread {
            self.at.ties_again(&cd, &mut bind)
        } else {
            self.at.sql_after(&cd, &key, &mut bind)
        };
        let mut filter = after.unwrap_or_else(|| format!("{cd} IS NOT NULL"));
        // With a lookback, the span below the watermark too; the rows of it delivered
        // already are in `seen`, so ask for that many more. Ties read again likewise.
        let mut limit = self.rows + if reread { self.at.seen_at.len() } else { 0 };
        if let (Some(lb), Some(w)) = (&mut self.lookback, &self.at.value) {
            let since = lb.since(w)?;
            lb.forget_below(&since);
            params.push(since);
            filter = format!("{filter} OR {cd} >= @p{}", params.len());
            limit += lb.seen.len();
        }
        let mut q = Query::new(
            &t.schema.id.name,
            format!(
                "SELECT {} {} ORDER BY {cd}, {} LIMIT {limit}",
                t.select_list(),
                t.scan_where(&[filter]),
                key.join(", "),
            ),
        );
        for (i, v) in params.iter().enumerate() {
            q = q.param(&format!("p{}", i + 1), v)?;
        }
        let rows = self.runner.all(q).await?;
        let key_columns = t.key_columns();
        let mut batch = PollBatch::new(self.at.clone());
        for cells in &rows {
            let row = t.row(cells);
            let key = row.key(&key_columns);
            let version = &row.values[self.column];
            let change = |row| {
                Change::Row(ChangeEvent {
                    // Polling cannot tell an insert from an update: both upsert.
                    op: Operation::Update,
                    key: key.clone(),
                    before: None,
                    after: Some(row),
                    source_ts: None,
                })
            };
            if let Some(lb) = &mut self.lookback {
                let new = lb.first_time(&key, version);
                let read_again = Watermark {
                    after: Some(key.clone()),
                    ..Watermark::at(Some(version.clone()))
                }
                .order(&self.at)
                .is_le();
                if read_again {
                    if new {
                        batch.late(change(row));
                    }
                    continue;
                }
            }
            if !batch.admit(version, &key)? {
                continue;
            }
            batch.push(change(row));
        }
        let (at, fragments) = batch.finish()?;
        self.at = at;
        Ok(fragments)
    }
}
