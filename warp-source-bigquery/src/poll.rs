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
    /// The largest lateness of a late row since start, in seconds.
    most_late: f64,
    /// Whether a poll has read the whole span since start. Until then the span's rows are
    /// delivered again (those landed before the start or by the copy cannot be told from
    /// late ones) but not counted as late.
    span_read: bool,
    /// Where the next page of the span starts (`None`: at the span's start).
    span_cursor: Option<Watermark>,
    polls: u64,
}

/// `source.lookback`: the polls also read again, a page every [`SPAN_EVERY`] polls, the rows
/// whose column lies within this span below the watermark, so a row whose DML committed
/// after a poll had passed its timestamp (a long-running job stamps rows when it starts)
/// still arrives. The rows of the span already delivered, by key and version, are
/// remembered and skipped; after a restart the span is delivered once more (upserts of
/// the same rows).
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

/// The span read again when `source.lookback` is not set: BigQuery stamps a DML job's rows
/// when it starts and shows them when it commits, and a DML statement or dbt model running
/// for minutes is ordinary. Re-reading costs no extra bytes billed (a poll scans the
/// column anyway; a partitioned table's last partition holds the span), only the span's
/// rows returned again and one remembered key per row.
pub const DEFAULT_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(900);

/// The span a table's polls read again: `configured` when set (0 turns it off), else
/// [`DEFAULT_LOOKBACK`] for a temporal column; an INT64 or STRING column has no span
/// below it to read ("seconds below" means nothing there).
pub fn lookback_for(
    configured: Option<std::time::Duration>,
    column: &warp_core::ColumnType,
) -> Option<std::time::Duration> {
    use warp_core::ColumnType as T;
    let temporal = matches!(
        column,
        T::Date | T::Timestamp { .. } | T::TimestampTz { .. }
    );
    match configured {
        Some(d) => Some(d).filter(|d| !d.is_zero()),
        None => temporal.then_some(DEFAULT_LOOKBACK),
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
    let column = column_index(&table, column)?;
    let lookback = match lookback_for(lookback, &table.schema.columns[column].column_type) {
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
        column,
        runner,
        table,
        at: from,
        rows: pace.rows,
        lookback,
        most_late: 0.0,
        span_read: false,
        span_cursor: None,
        polls: 0,
    };
    Ok(warp_core::poll_every(poller, pace.interval))
}

/// Every this many polls, one also reads the next page of the lookback span (a query of its
/// own): each query stays one page long whatever the span holds (a batch load of 100,000
/// rows stamped alike is 10 pages), at a quarter more queries.
const SPAN_EVERY: u64 = 4;

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        self.polls += 1;
        // The first poll reads the span too, so the rows below the starting position are
        // known (delivered once more) before any late one can be counted. A span page
        // that finds nothing adds no fragment: an empty one means nothing is new.
        let mut fragments = Vec::new();
        if self.lookback.is_some() && self.at.value.is_some() && self.polls % SPAN_EVERY == 1 {
            fragments.extend(
                self.poll_span()
                    .await?
                    .into_iter()
                    .filter(|f| !f.changes.is_empty()),
            );
        }
        fragments.extend(self.poll_new().await?);
        Ok(fragments)
    }
}

impl Poller {
    fn names(&self) -> (String, Vec<String>) {
        let t = &self.table;
        let key = t
            .key_columns()
            .iter()
            .map(|&i| quote(&t.schema.columns[i].name))
            .collect();
        (quote(&t.schema.columns[self.column].name), key)
    }

    async fn query(
        &self,
        filter: String,
        limit: usize,
        params: Vec<Value>,
    ) -> Result<Vec<warp_core::Row>> {
        let t = &self.table;
        let (cd, key) = self.names();
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
        let cells = self.runner.all(q).await?;
        Ok(cells.iter().map(|c| t.row(c)).collect())
    }

    /// The rows past the position, a page at most.
    async fn poll_new(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let (cd, key) = self.names();
        let mut params = Vec::new();
        let mut bind = |v: &Value| {
            params.push(v.clone());
            format!("@p{}", params.len())
        };
        // The rows at the position's value are read again while they fit a page: a later
        // statement can stamp the same value on a row with a smaller key than the last one
        // delivered (a writer reusing a timestamp), which paging by key alone would pass.
        // A larger group is one batch load: it is paged by key (bounded queries) and a
        // late row in it needs `lookback`.
        let reread = self.at.seen_at.len() < self.rows;
        self.at.reread_ties = reread;
        let after = if reread {
            self.at.ties_again(&cd, &mut bind)
        } else {
            self.at.sql_after(&cd, &key, &mut bind)
        };
        let filter = after.unwrap_or_else(|| format!("{cd} IS NOT NULL"));
        let limit = self.rows + if reread { self.at.seen_at.len() } else { 0 };
        let rows = self.query(filter, limit, params).await?;
        let key_columns = self.table.key_columns();
        let mut batch = PollBatch::new(self.at.clone());
        for row in rows {
            let key = row.key(&key_columns);
            let version = row.values[self.column].clone();
            if !batch.admit(&version, &key)? {
                continue;
            }
            if let Some(lb) = &mut self.lookback {
                lb.first_time(&key, &version);
            }
            batch.push(upsert(key, row));
        }
        let (at, fragments) = batch.finish()?;
        self.at = at;
        Ok(fragments)
    }

    /// The next page of the lookback span (the rows below the position within the span),
    /// delivering those not delivered before at the version read: late commits.
    async fn poll_span(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let (cd, key) = self.names();
        let (Some(lb), Some(w)) = (&mut self.lookback, &self.at.value) else {
            return Ok(Vec::new());
        };
        let since = lb.since(w)?;
        lb.forget_below(&since);
        let mut params = vec![since];
        let mut bind = |v: &Value| {
            params.push(v.clone());
            format!("@p{}", params.len())
        };
        let mut conds = vec![format!("{cd} >= @p1")];
        if let Some(past) = self.at.sql_after(&cd, &key, &mut bind) {
            conds.push(format!("NOT {past}"));
        }
        if let Some(cursor) = self.span_cursor.as_ref() {
            conds.extend(cursor.sql_after(&cd, &key, &mut bind));
        }
        let rows = self.query(conds.join(" AND "), self.rows, params).await?;
        let whole_page = rows.len() >= self.rows;
        let key_columns = self.table.key_columns();
        let mut batch = PollBatch::new(self.at.clone());
        let mut late = LateRows::default();
        let mut last = None;
        for row in rows {
            let key = row.key(&key_columns);
            let version = row.values[self.column].clone();
            let Some(lb) = &mut self.lookback else { break };
            if lb.first_time(&key, &version) {
                if self.span_read {
                    late.found(&version, self.at.value.as_ref());
                }
                batch.late(upsert(key.clone(), row));
            }
            last = Some((version, key));
        }
        // The span is read page by page; once read to its end, from its start again.
        self.span_cursor = match last.filter(|_| whole_page) {
            Some((version, key)) => Some(Watermark {
                after: Some(key),
                ..Watermark::at(Some(version))
            }),
            None => {
                self.span_read = true;
                None
            }
        };
        let (_, fragments) = batch.finish()?;
        late.record(
            &self.runner.schema,
            &self.table.schema.id.name,
            &mut self.most_late,
        );
        Ok(fragments)
    }
}

/// Polling cannot tell an insert from an update: both upsert.
fn upsert(key: warp_core::Key, row: warp_core::Row) -> Change {
    Change::Row(ChangeEvent {
        op: Operation::Update,
        key,
        before: None,
        after: Some(row),
        source_ts: None,
    })
}

/// Rows a poll found below its position that it had not delivered: late commits. How late
/// the latest of them was tells whether the span is wide enough (rows later than the span
/// are never seen, so the largest lateness found approaching it is the signal to widen).
#[derive(Default)]
struct LateRows {
    count: u64,
    most_seconds: f64,
}

impl LateRows {
    fn found(&mut self, version: &Value, position: Option<&Value>) {
        self.count += 1;
        let seconds = match (version, position) {
            (Value::TimestampTz(v), Some(Value::TimestampTz(p))) => (*p - *v).num_milliseconds(),
            (Value::Timestamp(v), Some(Value::Timestamp(p))) => (*p - *v).num_milliseconds(),
            (Value::Date(v), Some(Value::Date(p))) => (*p - *v).num_days() * 86_400_000,
            _ => 0,
        } as f64
            / 1000.0;
        self.most_seconds = self.most_seconds.max(seconds);
    }

    /// Counts the poll's late rows; `most` is the largest lateness since start, which the
    /// gauge shows (a gauge that only grows until a restart).
    fn record(&self, schema: &str, table: &str, most: &mut f64) {
        if self.count == 0 {
            return;
        }
        *most = most.max(self.most_seconds);
        let labels = [("schema", schema.to_owned()), ("table", table.to_owned())];
        metrics::counter!(warp_core::metrics::LATE_ROWS_TOTAL, &labels).increment(self.count);
        metrics::gauge!(warp_core::metrics::LATE_ROW_MAX_SECONDS, &labels).set(*most);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warp_core::ColumnType as T;

    #[test]
    fn temporal_columns_look_back_by_default_and_zero_turns_it_off() {
        let ts = T::TimestampTz { precision: None };
        assert_eq!(lookback_for(None, &ts), Some(DEFAULT_LOOKBACK));
        assert_eq!(lookback_for(None, &T::Date), Some(DEFAULT_LOOKBACK));
        assert_eq!(lookback_for(None, &T::Int64), None);
        let set = Some(Duration::from_secs(60));
        assert_eq!(lookback_for(set, &ts), set);
        // Set on an INT64 column it is kept, and the first poll stops the table saying why.
        assert_eq!(lookback_for(set, &T::Int64), set);
        assert_eq!(lookback_for(Some(Duration::ZERO), &ts), None);
    }

    #[test]
    fn lateness_is_the_position_minus_the_rows_timestamp() {
        let at = |s: i64| Value::TimestampTz(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let mut late = LateRows::default();
        late.found(&at(85), Some(&at(100)));
        late.found(&at(95), Some(&at(100)));
        assert_eq!((late.count, late.most_seconds), (2, 15.0));
    }
}
