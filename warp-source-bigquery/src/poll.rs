//! Incremental polling (docs/guarantees.md): rows in (`change_detection_column`, key) order after the
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
use crate::lookback::{lookback_for, LateRows, Lookback};
use crate::metadata;
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
    /// The project holding the table, whose metadata the polls follow.
    project: String,
    /// Since when queries have named a column the metadata still lists but the table no
    /// longer has.
    metadata_behind: Option<std::time::Instant>,
}

/// Polls forever from `from`, one fragment per poll (a heartbeat when nothing changed).
pub fn stream(
    project: &str,
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
        project: project.to_owned(),
        metadata_behind: None,
    };
    Ok(warp_core::poll_every(poller, pace.interval))
}

/// Every this many polls, one also reads the next page of the lookback span (a query of its
/// own): each query stays one page long whatever the span holds (a batch load of 100,000
/// rows stamped alike is 10 pages), at a quarter more queries.
const SPAN_EVERY: u64 = 4;

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    /// Reads, then looks at the table's metadata: when its shape changed, what was read
    /// (perhaps without a column just added, whose values the rows may hold) is dropped
    /// and the change alone is delivered; the next poll reads again in the new shape.
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        self.polls += 1;
        // The first poll reads the span too, so the rows below the starting position are
        // known (delivered once more) before any late one can be counted.
        let span_due =
            self.lookback.is_some() && self.at.value.is_some() && self.polls % SPAN_EVERY == 1;
        let read = async {
            let span = match span_due {
                true => Some(self.read_span().await?),
                false => None,
            };
            Ok::<_, BigQueryError>((span, self.read_new().await?))
        }
        .await;
        let (span, new) = match read {
            Ok(read) => read,
            // A column dropped (or retyped): the query names what is gone.
            Err(e) if e.reason() == Some("invalidQuery") => {
                let followed = self.follow_schema().await?;
                if !followed.is_empty() {
                    return Ok(followed);
                }
                // The metadata does not show the change yet: poll again (a stream restart
                // would deliver the lookback span once more), for a while.
                let first = self.metadata_behind.is_none();
                let since = *self
                    .metadata_behind
                    .get_or_insert_with(std::time::Instant::now);
                if names_a_missing_column(&e) && since.elapsed() < METADATA_LAG {
                    if first {
                        tracing::warn!(table = %self.table.schema.id, error = %e, "a column the query names is gone, but the table's metadata does not say so yet; polling again");
                    }
                    return Ok(Vec::new());
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.metadata_behind = None;
        let followed = self.follow_schema().await?;
        if !followed.is_empty() {
            return Ok(followed);
        }
        // A span page that finds nothing adds no fragment: an empty one means nothing is new.
        let mut fragments: Vec<StreamFragment> = match span {
            Some(rows) => self
                .deliver_span(rows)?
                .into_iter()
                .filter(|f| !f.changes.is_empty())
                .collect(),
            None => Vec::new(),
        };
        fragments.extend(self.deliver_new(new)?);
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

    /// The table's shape changes since the last look, as a fragment committing at the
    /// position (none when nothing changed).
    async fn follow_schema(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let id = &self.table.schema.id;
        let described =
            metadata::describe(&self.runner.api, &self.project, &id.database, &id.name).await?;
        let (next, changes) = self.table.follow(described);
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        tracing::info!(table = %id, changes = ?changes, "the source table's shape changed");
        self.table = next;
        let mut batch = PollBatch::new(self.at.clone());
        for change in changes {
            batch.push(Change::Schema(change));
        }
        Ok(batch.finish()?.1)
    }

    /// The rows past the position, a page at most.
    async fn read_new(&mut self) -> Result<Vec<warp_core::Row>> {
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
        self.query(filter, limit, params).await
    }

    fn deliver_new(&mut self, rows: Vec<warp_core::Row>) -> warp_core::Result<Vec<StreamFragment>> {
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

    /// The next page of the lookback span: the rows below the position within the span.
    async fn read_span(&mut self) -> Result<Vec<warp_core::Row>> {
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
        self.query(conds.join(" AND "), self.rows, params).await
    }

    /// The span page's rows not delivered before at the version read: late commits.
    fn deliver_span(
        &mut self,
        rows: Vec<warp_core::Row>,
    ) -> warp_core::Result<Vec<StreamFragment>> {
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

/// How long queries may name a column the table lost before its metadata shows the drop;
/// past it the table stops with the query's error.
const METADATA_LAG: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a query failed because a column it names does not exist (BigQuery: "Unrecognized
/// name"; the DuckDB-backed emulator: "Referenced column … not found").
fn names_a_missing_column(e: &BigQueryError) -> bool {
    let text = e.to_string();
    text.contains("Unrecognized name") || text.contains("Referenced column")
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
