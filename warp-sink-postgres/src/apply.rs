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
use crate::landed::{Landed, OP, SOURCE_TS, UPDATED_AT, VERSION};
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
    /// Deletes that carry the row's whole before image.
    pub image_deletes: bool,
    /// Deletes that carry only the key.
    pub key_deletes: bool,
}

impl Kinds {
    pub const ALL: Self = Self {
        upserts: true,
        image_deletes: true,
        key_deletes: true,
    };

    /// The kinds in `events`, for a landing table of `width` data columns.
    pub fn of(events: &[ChangeEvent], width: usize) -> Self {
        let mut kinds = Self {
            upserts: false,
            image_deletes: false,
            key_deletes: false,
        };
        for e in events {
            match e.op {
                Operation::Delete if delete_image(e, width).is_some() => kinds.image_deletes = true,
                Operation::Delete => kinds.key_deletes = true,
                _ => kinds.upserts = true,
            }
        }
        kinds
    }
}

/// The whole before image a delete carries, for a landing table of `width` data columns
/// (`None`: the delete names only its key, and can mark a row but not make a tombstone).
pub fn delete_image(e: &ChangeEvent, width: usize) -> Option<&Row> {
    e.before.as_ref().filter(|b| b.values.len() == width)
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
        landed.is_deleted(),
        landed.deleted_at(),
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
            let deletes: Vec<String> = match strategy {
                DeletionStrategy::Hard => (kinds.image_deletes || kinds.key_deletes)
                    .then(|| format!("DELETE FROM {t} AS t USING {stage} AS s WHERE s.{op} = 'd' AND {key_match}"))
                    .into_iter()
                    .collect(),
                DeletionStrategy::Soft => {
                    let mark = format!(
                        "{deleted} = true, {deleted_at} = now(), {op} = 'd', {updated} = now(), {version} = t.{version} + 1"
                    );
                    // A delete with the row's image is one statement: it marks the row,
                    // or leaves a tombstone when we never had it (one pass over the
                    // staged deletes instead of an UPDATE join and an INSERT).
                    let with_image = format!(
                        "INSERT INTO {t} AS t ({cols}, {ts}, {op}, {deleted}, {deleted_at})
                         SELECT {cols}, {ts}, 'd', true, now() FROM {stage} WHERE {op} = 'd' AND \"_cw_image\"
                         ON CONFLICT ({key}) DO UPDATE SET {mark}, {ts} = EXCLUDED.{ts} WHERE NOT t.{deleted}"
                    );
                    // A key alone cannot make a tombstone: only rows we have are marked.
                    let key_only = format!(
                        "UPDATE {t} AS t SET {mark}, {ts} = s.{ts}
                         FROM {stage} AS s WHERE s.{op} = 'd' AND NOT s.\"_cw_image\" AND {key_match} AND NOT t.{deleted}"
                    );
                    [(kinds.image_deletes, with_image), (kinds.key_deletes, key_only)]
                        .into_iter()
                        .filter_map(|(wanted, sql)| wanted.then_some(sql))
                        .collect()
                }
            };
            kinds.upserts.then_some(upsert).into_iter().chain(deletes).collect()
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
/// savepoint (see [`unit_with`]).
pub async fn unit<S: AsRef<str>, D: AsRef<[u8]>>(
    conn: &mut PgConnection,
    copies: &[(S, D)],
    statements: &[String],
) -> Result<Result<(), crate::error::SinkError>> {
    unit_with(conn, async |conn: &mut PgConnection| {
        for (statement, data) in copies {
            copy(conn, statement.as_ref(), data.as_ref()).await?;
        }
        execute_all(conn, statements).await
    })
    .await
}

/// Runs `body` as one unit under a savepoint. Returns `Ok(Err(e))` for a row-level data
/// error after rolling the unit back, so the caller can retry row by row; other errors
/// abort.
pub async fn unit_with(
    conn: &mut PgConnection,
    body: impl AsyncFnOnce(&mut PgConnection) -> Result<()>,
) -> Result<Result<(), crate::error::SinkError>> {
    run(conn, "SAVEPOINT cw_unit").await?;
    match body(&mut *conn).await {
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

/// Runs the merge statements of a batch, in order.
pub async fn execute_all(conn: &mut PgConnection, statements: &[String]) -> Result<()> {
    for s in statements {
        sqlx::raw_sql(AssertSqlSafe(s.clone()))
            .execute(&mut *conn)
            .await
            .context("apply batch")?;
    }
    Ok(())
}

/// Bytes of binary tuples sent per COPY message while a batch is staged.
const STAGE_PIECE_BYTES: usize = 128 << 10;

/// A staging COPY fed while the batch is still being encoded: each piece is sent as soon
/// as it is full, so PostgreSQL parses one piece while the next is encoded (encoding the
/// whole batch first left the server idle for that time, on every batch). Rows without an
/// exact binary form are kept as text lines for a second COPY after this one.
pub struct StageCopy<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
    piece: Vec<u8>,
    text: Vec<u8>,
}

impl<'c> StageCopy<'c> {
    pub async fn start(conn: &'c mut PgConnection, stage: &str, columns: &str) -> Result<Self> {
        let sql = format!("COPY {stage} ({columns}) FROM STDIN (FORMAT binary)");
        let copy = conn.copy_in_raw(&sql).await.context("start COPY")?;
        let mut piece = Vec::with_capacity(STAGE_PIECE_BYTES + (16 << 10));
        piece.extend_from_slice(binary::HEADER);
        Ok(Self {
            copy,
            piece,
            text: Vec::new(),
        })
    }

    pub async fn push(&mut self, staged: &Staged) -> Result<()> {
        match staged {
            Staged::Binary(tuple) => {
                self.piece.extend_from_slice(tuple);
                if self.piece.len() >= STAGE_PIECE_BYTES {
                    self.send().await?;
                }
            }
            Staged::Text(line) => self.text.extend_from_slice(line.as_bytes()),
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<()> {
        if let Err(e) = self.copy.send(self.piece.as_slice()).await {
            return Err(crate::error::SinkError::from_sqlx("COPY", e));
        }
        self.piece.clear();
        Ok(())
    }

    /// Ends the binary COPY; returns the text lines still to send.
    pub async fn finish(mut self) -> Result<Vec<u8>> {
        self.piece.extend_from_slice(binary::TRAILER);
        let sent = self.send().await;
        if let Err(e) = sent {
            let _ = self.copy.abort("send failed").await;
            return Err(e);
        }
        warp_core::failpoint::hit(warp_core::failpoint::Point::InsideCopy);
        self.copy.finish().await.context("COPY")?;
        Ok(self.text)
    }
}

pub async fn run(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql).execute(conn).await.context(sql)?;
    Ok(())
}
