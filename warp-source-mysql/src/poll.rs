//! The `timestamp` strategy, for servers where binlog access is impossible: poll rows in
//! (`change_detection_column`, key) order from the watermark's value, skipping the rows
//! at it already delivered. Deletes are not visible to polling (docs/mysql.md).

use futures::stream::BoxStream;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use warp_core::{
    Change, ChangeEvent, Operation, Pace, PollBatch, Row, StreamFragment, Value, Watermark,
};

use crate::decode::{decode, decode_from, to_param, Decoded, Origin};
use crate::discover::MysqlTable;
use crate::error::{Context, Result};
use crate::snapshot::{quote, read_expr};

/// Rows per poll when `stream_batch_size` is unset.
pub const PAGE: usize = 5_000;

/// Where a snapshot (or a chunk read) stands: before the current highest value of
/// `column`. The copy takes only rows below it ([`older_than`]); rows at it or above are
/// the first poll's.
pub async fn current(
    pool: &Pool,
    database: &str,
    table: &MysqlTable,
    column: &str,
) -> Result<Watermark> {
    let i = index(table, column)?;
    let mut conn = pool.get_conn().await.context("connect")?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .context("set time zone")?;
    let sql = format!(
        "SELECT MAX({}) FROM {}.{}",
        quote(column),
        quote(database),
        quote(&table.schema.id.name)
    );
    let v: Option<mysql_async::Value> = conn.query_first(sql).await.context("read watermark")?;
    let value = match v.map(|v| decode(v, &table.columns[i].kind)) {
        Some(Ok(Decoded::Value(Value::Null))) | None | Some(Ok(Decoded::ZeroDate)) => None,
        Some(Ok(Decoded::Value(v))) => Some(v),
        Some(Err(e)) => {
            return Err(crate::error::MysqlError::Unsupported {
                message: format!("{column}: {e}"),
                hint: None,
            })
        }
    };
    Ok(Watermark::at(value))
}

/// The rows a chunk read at `at` copies, as a condition: those below its value, and
/// those without a value (polls never see them).
pub fn older_than(column: &str, at: &Watermark) -> (String, Vec<mysql_async::Value>) {
    let c = quote(column);
    match &at.value {
        Some(v) => (format!("({c} < ? OR {c} IS NULL)"), vec![to_param(v)]),
        None => (format!("{c} IS NULL"), Vec::new()),
    }
}

fn index(table: &MysqlTable, column: &str) -> Result<usize> {
    table.schema.column_index(column).ok_or_else(|| crate::error::MysqlError::Unsupported {
        message: format!("{}: change_detection_column `{column}` does not exist", table.schema.id),
        hint: Some("set change_detection_column to a column that every write updates (e.g. updated_at)".into()),
    })
}

struct Poller {
    pool: Pool,
    database: String,
    table: MysqlTable,
    column: usize,
    key: Vec<usize>,
    at: Watermark,
    rows: usize,
}

/// Polls forever from `from`, one fragment per poll (a heartbeat when nothing changed).
pub fn stream(
    pool: Pool,
    database: String,
    table: MysqlTable,
    column: &str,
    from: Watermark,
    pace: Pace,
) -> Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
    let poller = Poller {
        column: index(&table, column)?,
        key: table
            .schema
            .key_indexes()
            .map_err(|e| crate::error::MysqlError::Unsupported {
                message: e.to_string(),
                hint: None,
            })?,
        pool,
        database,
        table,
        at: Watermark {
            reread_ties: true,
            ..from
        },
        rows: pace.rows,
    };
    Ok(warp_core::poll_every(poller, pace.interval))
}

#[async_trait::async_trait]
impl warp_core::Poll for Poller {
    async fn poll(&mut self) -> warp_core::Result<Vec<StreamFragment>> {
        let mut conn = self.pool.get_conn().await.context("connect")?;
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .context("set time zone")?;
        let cols = self
            .table
            .columns
            .iter()
            .map(read_expr)
            .collect::<Vec<_>>()
            .join(", ");
        let cd = quote(&self.table.columns[self.column].name);
        let key: Vec<String> = self
            .key
            .iter()
            .map(|&i| quote(&self.table.columns[i].name))
            .collect();
        let table = format!(
            "{}.{}",
            quote(&self.database),
            quote(&self.table.schema.id.name)
        );
        let mut params = Vec::new();
        // The watermark's value is read again: a later write may share it (a timestamp
        // the writer sets) with a smaller key; the ties delivered are skipped by key.
        let filter = self
            .at
            .ties_again(&cd, |v| {
                params.push(to_param(v));
                "?".into()
            })
            .unwrap_or_else(|| format!("{cd} IS NOT NULL"));
        let sql = format!(
            "SELECT {cols} FROM {table} WHERE {filter} ORDER BY {cd}, {} LIMIT {}",
            key.join(", "),
            self.rows + self.at.seen_at.len()
        );
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.context("poll")?;
        let mut batch = PollBatch::new(self.at.clone());
        for row in rows {
            let mut values = Vec::with_capacity(self.table.columns.len());
            for (v, c) in row.unwrap().into_iter().zip(&self.table.columns) {
                values.push(match decode_from(v, &c.kind, Origin::Stored) {
                    Ok(Decoded::Value(v)) => v,
                    Ok(Decoded::ZeroDate) => Value::Null,
                    // Dead-lettered by the destination, with the reason.
                    Err(e) => Value::Unreadable(format!("column {}: {e}", c.name)),
                });
            }
            let row = Row::new(values);
            let k = row.key(&self.key);
            if !batch.admit(&row.values[self.column], &k)? {
                continue;
            }
            batch.push(Change::Row(ChangeEvent {
                op: Operation::Update,
                key: k,
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
