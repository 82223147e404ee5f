//! Writing rows: COPY into the landing table (snapshots) or into a per-transaction
//! staging table followed by set-based upsert/delete statements (changes). When a bulk
//! write fails on a data error, it is retried row by row so only the poison rows go to
//! the dead-letter table.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::config::DeletionStrategy;
use warp_core::{ChangeEvent, ColumnType, Operation, Row, Value};

use crate::binary::{self, binary_row};
use crate::encode::{copy_line, pg_text};
use crate::error::{Context, Result};
use crate::ident::quote;
use crate::landed::{Landed, DELETED_AT, IS_DELETED, OP, SOURCE_TS, UPDATED_AT, VERSION};
use crate::types::pg_type;

/// Extra staging columns after the data columns.
pub const STAGE_EXTRA: &str = "\"_cartridge_source_ts\", \"_cartridge_op\", \"_cw_image\"";

/// Types of the extra columns, as [`create_stage`] declares them.
const SOURCE_TS_TYPE: ColumnType = ColumnType::TimestampTz { precision: None };
pub const OP_TYPE: ColumnType = ColumnType::Text { max_len: None };

/// One row encoded for a staging COPY: a binary tuple when every value has an exact
/// binary form (PostgreSQL then parses no text: in the benchmark the text COPY into the
/// staging table was half of each batch's server time), a text line otherwise.
pub enum Staged {
    Binary(Vec<u8>),
    Text(String),
}

impl Staged {
    /// `row` and the staging extras: source time, operation code, whether `row` is a
    /// complete image (a key-only delete is not).
    pub fn encode(
        row: &Row,
        types: &[(&str, &ColumnType)],
        source_ts: Option<DateTime<Utc>>,
        op: char,
        image: bool,
    ) -> Result<Self, String> {
        let ts = source_ts.map_or(Value::Null, Value::TimestampTz);
        let (op_value, image_value) = (Value::Text(op.to_string()), Value::Bool(image));
        let extra = [
            (&ts, &SOURCE_TS_TYPE),
            (&op_value, &OP_TYPE),
            (&image_value, &ColumnType::Bool),
        ];
        let mut bytes = Vec::new();
        if binary_row(&mut bytes, row, types, &extra) {
            return Ok(Self::Binary(bytes));
        }
        let mut line = String::new();
        stage_line(&mut line, row, types, source_ts, op, image)?;
        Ok(Self::Text(line))
    }

    /// The COPY statements (binary tuples first, then text lines) that load `items` into
    /// `stage`'s `columns`, each with its data.
    pub fn copies<'a>(
        stage: &str,
        columns: &str,
        items: impl IntoIterator<Item = &'a Staged>,
    ) -> Vec<(String, Vec<u8>)> {
        let (mut tuples, mut lines) = (Vec::new(), Vec::new());
        for item in items {
            match item {
                Self::Binary(tuple) => {
                    if tuples.is_empty() {
                        tuples.extend_from_slice(binary::HEADER);
                    }
                    tuples.extend_from_slice(tuple);
                }
                Self::Text(line) => lines.extend_from_slice(line.as_bytes()),
            }
        }
        let mut out = Vec::new();
        if !tuples.is_empty() {
            tuples.extend_from_slice(binary::TRAILER);
            let sql = format!("COPY {stage} ({columns}) FROM STDIN (FORMAT binary)");
            out.push((sql, tuples));
        }
        if !lines.is_empty() {
            out.push((format!("COPY {stage} ({columns}) FROM STDIN"), lines));
        }
        out
    }
}

/// `row` as one staging line in COPY text form (see [`Staged::encode`]).
pub fn stage_line(
    out: &mut String,
    row: &Row,
    types: &[(&str, &ColumnType)],
    source_ts: Option<DateTime<Utc>>,
    op: char,
    image: bool,
) -> Result<(), String> {
    let ts = source_ts
        .map(|t| pg_text(&Value::TimestampTz(t), &SOURCE_TS_TYPE))
        .transpose()?;
    let op = op.to_string();
    let image = if image { "t" } else { "f" };
    copy_line(out, row, types, &[ts.as_deref(), Some(&op), Some(image)])
}

/// How staged rows are merged into the landing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Snapshot rows: overwrite without counting a version (a re-copy is not a change).
    Snapshot,
    /// Change events: upserts bump the version when the row really changes; deletes per
    /// strategy. Statements for kinds of change the batch lacks are not sent.
    Changes(DeletionStrategy, Kinds),
}

/// The kinds of change a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub upserts: bool,
    pub deletes: bool,
}

impl Kinds {
    pub const ALL: Self = Self {
        upserts: true,
        deletes: true,
    };

    pub fn of(events: &[ChangeEvent]) -> Self {
        let deletes = events.iter().filter(|e| e.op == Operation::Delete).count();
        Self {
            upserts: deletes < events.len(),
            deletes: deletes > 0,
        }
    }
}

/// Creates a staging table shaped like `landed` (all columns nullable, so key-only
/// deletes fit), dropped at commit.
pub async fn create_stage(conn: &mut PgConnection, landed: &Landed, n: u32) -> Result<String> {
    let name = quote(&format!("_cw_stage_{n}"));
    let mut defs: Vec<String> = landed
        .columns
        .iter()
        .map(|c| format!("{} {}", c.ident, pg_type(&c.ty)))
        .collect();
    defs.push(format!("{} timestamp with time zone", quote(SOURCE_TS)));
    defs.push(format!("{} text", quote(OP)));
    defs.push("\"_cw_image\" boolean".into());
    let sql = format!(
        "CREATE TEMP TABLE {name} ({}) ON COMMIT DROP",
        defs.join(", ")
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(conn)
        .await
        .context("create staging table")?;
    Ok(name)
}

/// The statements that merge a filled staging table into the landing table.
pub fn merge_statements(landed: &Landed, stage: &str, merge: Merge) -> Vec<String> {
    let t = &landed.table;
    let cols = landed.column_list();
    let key = landed.key_list();
    let set_cols: Vec<String> = landed
        .columns
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", c.ident))
        .collect();
    let old: Vec<String> = landed
        .columns
        .iter()
        .map(|c| format!("t.{}", c.ident))
        .collect();
    let new: Vec<String> = landed
        .columns
        .iter()
        .map(|c| format!("EXCLUDED.{}", c.ident))
        .collect();
    let (op, ts, version, updated, deleted, deleted_at) = (
        quote(OP),
        quote(SOURCE_TS),
        quote(VERSION),
        quote(UPDATED_AT),
        quote(IS_DELETED),
        quote(DELETED_AT),
    );
    // A row only counts as changed when its data or deletion state differs: replaying a
    // change that is already applied changes nothing.
    let changed = format!(
        "({}, t.{deleted}) IS DISTINCT FROM ({}, false)",
        old.join(", "),
        new.join(", ")
    );
    let key_match: Vec<String> = landed
        .key_columns()
        .map(|c| format!("t.{0} = s.{0}", c.ident))
        .collect();
    let key_match = key_match.join(" AND ");
    match merge {
        Merge::Snapshot => vec![format!(
            "INSERT INTO {t} AS t ({cols}, {op}) SELECT {cols}, 'r' FROM {stage}
             ON CONFLICT ({key}) DO UPDATE SET {}, {op} = 'r', {updated} = now(), {deleted} = false, {deleted_at} = NULL
             WHERE {changed}",
            set_cols.join(", ")
        )],
        Merge::Changes(strategy, kinds) => {
            let upsert = format!(
                "INSERT INTO {t} AS t ({cols}, {ts}, {op}) SELECT {cols}, {ts}, {op} FROM {stage} WHERE {op} <> 'd'
                 ON CONFLICT ({key}) DO UPDATE SET {}, {ts} = EXCLUDED.{ts}, {op} = EXCLUDED.{op},
                    {updated} = now(), {version} = t.{version} + 1, {deleted} = false, {deleted_at} = NULL
                 WHERE {changed}",
                set_cols.join(", ")
            );
            let deletes = match strategy {
                DeletionStrategy::Hard => vec![
                    format!("DELETE FROM {t} AS t USING {stage} AS s WHERE s.{op} = 'd' AND {key_match}"),
                ],
                DeletionStrategy::Soft => vec![
                    format!(
                        "UPDATE {t} AS t SET {deleted} = true, {deleted_at} = now(), {op} = 'd', {ts} = s.{ts},
                            {updated} = now(), {version} = t.{version} + 1
                         FROM {stage} AS s WHERE s.{op} = 'd' AND {key_match} AND NOT t.{deleted}"
                    ),
                    // A delete of a row we never had still leaves a tombstone when the
                    // source sent its image.
                    format!(
                        "INSERT INTO {t} ({cols}, {ts}, {op}, {deleted}, {deleted_at})
                         SELECT {cols}, {ts}, 'd', true, now() FROM {stage} WHERE {op} = 'd' AND \"_cw_image\"
                         ON CONFLICT ({key}) DO NOTHING"
                    ),
                ],
            };
            let upserts = kinds.upserts.then_some(upsert);
            upserts
                .into_iter()
                .chain(deletes.into_iter().filter(|_| kinds.deletes))
                .collect()
        }
    }
}

/// COPY `data` (in the format `statement` names) with `statement`.
pub async fn copy(conn: &mut PgConnection, statement: &str, data: &[u8]) -> Result<u64> {
    let mut copy = conn.copy_in_raw(statement).await.context("start COPY")?;
    if let Err(e) = copy.send(data).await {
        let _ = copy.abort("send failed").await;
        return Err(crate::error::SinkError::from_sqlx("COPY", e));
    }
    warp_core::failpoint::hit(warp_core::failpoint::Point::InsideCopy);
    copy.finish().await.context("COPY")
}

/// Runs `statements` (and the COPYs, statement and data, before them) as one unit under a
/// savepoint. Returns `Ok(Err(e))` for a row-level data error after rolling the unit back,
/// so the caller can retry row by row; other errors abort.
pub async fn unit<S: AsRef<str>, D: AsRef<[u8]>>(
    conn: &mut PgConnection,
    copies: &[(S, D)],
    statements: &[String],
) -> Result<Result<(), crate::error::SinkError>> {
    run(conn, "SAVEPOINT cw_unit").await?;
    let result = async {
        for (statement, data) in copies {
            copy(conn, statement.as_ref(), data.as_ref()).await?;
        }
        for s in statements {
            sqlx::raw_sql(AssertSqlSafe(s.clone()))
                .execute(&mut *conn)
                .await
                .context("apply batch")?;
        }
        Ok::<_, crate::error::SinkError>(())
    }
    .await;
    match result {
        Ok(()) => {
            run(conn, "RELEASE SAVEPOINT cw_unit").await?;
            Ok(Ok(()))
        }
        Err(e) if e.is_row_level() => {
            run(conn, "ROLLBACK TO SAVEPOINT cw_unit").await?;
            Ok(Err(e))
        }
        Err(e) => Err(e),
    }
}

pub async fn run(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql).execute(conn).await.context(sql)?;
    Ok(())
}
