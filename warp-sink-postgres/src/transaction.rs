//! One destination transaction: rows, schema changes and dead letters, then the
//! checkpoint, committed together.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::config::DeletionStrategy;
use warp_core::{
    Change, ChangeEvent, CheckpointUpdate, ColumnType, Committed, FencingToken, Operation, Row,
    SinkTransaction, TableKey, TableSchema, Target, Value,
};

use crate::apply::{
    create_stage, delete_image, execute_all, merge_statements, unit, unit_with, Kinds, Merge,
    StageCopy, Staged, STAGE_EXTRA,
};
use crate::binary::{self, binary_row};
use crate::connection::TxConnection;
use crate::ddl;
use crate::encode::copy_line;
use crate::error::{Context, Result, SinkError};
use crate::ident::quote;
use crate::landed::{Landed, OP, UPDATED_AT, VERSION};
use crate::{Inner, TableEntry};

/// Encoded snapshot data sent per COPY.
const SNAPSHOT_FLUSH_BYTES: usize = 2 << 20;

/// A row that could not be written, with why.
struct DeadLetter {
    payload: serde_json::Value,
    error: String,
}

pub struct PgTransaction {
    pub(crate) inner: Arc<Inner>,
    pub(crate) tx: TxConnection,
    pub(crate) target: Target,
    pub(crate) key: TableKey,
    pub(crate) token: FencingToken,
    pub(crate) entry: TableEntry,
    pub(crate) shape_changed: bool,
    /// Staging table valid for the current shape, and a counter for new names.
    pub(crate) stage: Option<String>,
    pub(crate) stage_seq: u32,
    /// Snapshot rows go straight into the landing table until a key already exists.
    pub(crate) snapshot_direct: bool,
    /// Snapshot rows not yet sent: binary tuples (after the format header) and how many,
    /// text lines for rows without an exact binary form, and all the rows themselves (for
    /// the fallback).
    snap_binary: Vec<u8>,
    snap_binary_rows: usize,
    snap_text: String,
    snap_rows: Vec<Row>,
    dead: Vec<DeadLetter>,
    /// Opened to copy a claimed chunk for the table's owner ([`PgTransaction::claimed`]).
    claimed: bool,
}

impl PgTransaction {
    pub(crate) fn new(
        inner: Arc<Inner>,
        tx: TxConnection,
        target: Target,
        token: FencingToken,
        entry: TableEntry,
    ) -> Self {
        let key = target.key();
        Self {
            inner,
            tx,
            target,
            key,
            token,
            entry,
            shape_changed: false,
            stage: None,
            stage_seq: 0,
            snapshot_direct: true,
            snap_binary: Vec::new(),
            snap_binary_rows: 0,
            snap_text: String::new(),
            snap_rows: Vec::new(),
            dead: Vec::new(),
            claimed: false,
        }
    }

    /// The transaction copies a claimed chunk: its commit records the chunk under the
    /// claim, not a checkpoint under the lease.
    pub(crate) fn claimed(mut self) -> Self {
        self.claimed = true;
        self
    }

    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    fn landed(&self) -> &Landed {
        &self.entry.landed
    }

    pub(crate) async fn stage(&mut self) -> Result<String> {
        if let Some(s) = &self.stage {
            return Ok(s.clone());
        }
        self.stage_seq += 1;
        let (n, landed) = (self.stage_seq, self.entry.landed.clone());
        let name = create_stage(self.conn(), &landed, n).await?;
        self.stage = Some(name.clone());
        Ok(name)
    }

    fn dead_letter(&mut self, mut payload: serde_json::Value, error: String) {
        // jsonb and text cannot hold NUL; the dead-letter table must accept any row.
        let sanitized = replace_nul(&mut payload);
        if sanitized {
            // Replaying an altered row would write altered data: `dlq replay` refuses it.
            if let Some(obj) = payload.as_object_mut() {
                obj.insert("nul_replaced".into(), serde_json::Value::Bool(true));
            }
        }
        let error = if sanitized {
            format!("{error} (NUL characters in the payload are stored as the text \\u0000)")
        } else {
            error
        };
        self.dead.push(DeadLetter {
            payload,
            error: error.replace('\0', "\\u0000"),
        });
    }

    /// Stages `items` (encoded as they are sent, see [`StageCopy`]) and merges them; items
    /// that cannot be encoded become dead letters. On a data error the batch is retried
    /// one item at a time and the items that fail alone are dead-lettered.
    async fn merge<T>(
        &mut self,
        items: Vec<T>,
        encode: impl Fn(&Landed, &[(&str, &ColumnType)], &T) -> Result<Staged, String>,
        payload: impl Fn(&T) -> serde_json::Value,
        merge: Merge,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let stage = self.stage().await?;
        let landed = self.entry.landed.clone();
        let types = landed.types(); // once per batch, not per row
        let columns = format!("{}, {STAGE_EXTRA}", landed.column_list());
        let mut statements = merge_statements(&landed, &stage, merge);
        statements.push(format!("TRUNCATE {stage}"));
        let mut staged: Vec<(Staged, T)> = Vec::with_capacity(items.len());
        let mut unencodable: Vec<(T, String)> = Vec::new();
        let outcome = unit_with(self.conn(), async |conn: &mut PgConnection| {
            let mut copy = StageCopy::start(conn, &stage, &columns).await?;
            for item in items {
                match encode(&landed, &types, &item) {
                    Ok(s) => {
                        copy.push(&s).await?;
                        staged.push((s, item));
                    }
                    Err(e) => unencodable.push((item, e)),
                }
            }
            let text = copy.finish().await?;
            if !text.is_empty() {
                let sql = format!("COPY {stage} ({columns}) FROM STDIN");
                crate::apply::copy(conn, &sql, &text).await?;
            }
            execute_all(conn, &statements).await
        })
        .await?;
        for (item, e) in unencodable {
            self.dead_letter(payload(&item), e);
        }
        if outcome.is_ok() {
            return Ok(());
        }
        for (staged, item) in staged {
            let copies = Staged::copies(&stage, &columns, [&staged]);
            if let Err(e) = unit(self.conn(), &copies, &statements).await? {
                self.dead_letter(payload(&item), e.to_string());
            }
        }
        Ok(())
    }

    /// Snapshot rows are encoded as they arrive and sent in COPYs of about
    /// [`SNAPSHOT_FLUSH_BYTES`]: few round trips, bounded memory.
    async fn snapshot_rows(&mut self, rows: Vec<Row>) -> Result<()> {
        if !self.snapshot_direct {
            return self.snapshot_merge(rows).await;
        }
        let types: Vec<(String, ColumnType)> = self
            .landed()
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        let types: Vec<(&str, &ColumnType)> = types.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let read = Value::Text("r".into());
        let op = [(&read, &crate::apply::OP_TYPE)];
        for row in rows {
            if self.snap_binary.is_empty() {
                self.snap_binary.extend_from_slice(binary::HEADER);
            }
            if binary_row(&mut self.snap_binary, &row, &types, &op) {
                self.snap_binary_rows += 1;
                self.snap_rows.push(row);
                continue;
            }
            match copy_line(&mut self.snap_text, &row, &types, &[Some("r")]) {
                Ok(()) => self.snap_rows.push(row),
                Err(e) => self.dead_letter(snapshot_payload(&row), e),
            }
        }
        if self.snap_binary.len() + self.snap_text.len() >= SNAPSHOT_FLUSH_BYTES {
            self.flush_snapshot().await?;
        }
        Ok(())
    }

    async fn flush_snapshot(&mut self) -> Result<()> {
        if self.snap_rows.is_empty() {
            return Ok(());
        }
        let mut binary = std::mem::take(&mut self.snap_binary);
        let binary_rows = std::mem::take(&mut self.snap_binary_rows);
        let mut text = std::mem::take(&mut self.snap_text);
        let mut rows = std::mem::take(&mut self.snap_rows);
        let sql = format!(
            "COPY {} ({}, {}) FROM STDIN",
            self.landed().table,
            self.landed().column_list(),
            quote(OP)
        );
        let mut sent = Ok(());
        if binary_rows > 0 {
            binary.extend_from_slice(binary::TRAILER);
            let sql = format!("{sql} (FORMAT binary)");
            sent = unit(self.conn(), &[(&sql, &binary)], &[]).await?;
        }
        if sent.is_ok() && !text.is_empty() {
            sent = unit(self.conn(), &[(&sql, text.as_bytes())], &[]).await?;
        }
        // On failure every row of this flush is merged (rows a first COPY landed are
        // merged again, which changes nothing).
        match sent {
            Ok(()) => {
                // The buffers keep their capacity for the next flush: growing and freeing
                // megabytes each time cost allocator time (malloc_consolidate) in profiles.
                binary.clear();
                text.clear();
                rows.clear();
                (self.snap_binary, self.snap_text, self.snap_rows) = (binary, text, rows);
                return Ok(());
            }
            // A key exists already (re-snapshot): merge from now on.
            Err(e) if e.code() == Some("23505") => self.snapshot_direct = false,
            Err(_) => {}
        }
        self.snapshot_merge(rows).await
    }

    async fn snapshot_merge(&mut self, rows: Vec<Row>) -> Result<()> {
        let encode = |_: &Landed, types: &[(&str, &ColumnType)], row: &Row| {
            Staged::encode(row, types, None, 'r', true)
        };
        self.merge(rows, encode, snapshot_payload, Merge::Snapshot)
            .await
    }

    async fn change_rows(&mut self, events: Vec<ChangeEvent>) -> Result<()> {
        let merge = Merge::Changes(
            self.target.deletion_strategy,
            Kinds::of(&events, self.landed().columns.len()),
        );
        self.merge(events, event_staged, change_payload, merge)
            .await
    }

    async fn schema_change(&mut self, change: &warp_core::SchemaChange) -> Result<()> {
        let statements = ddl::change_ddl(&self.target, &mut self.entry.landed, change)?;
        self.entry
            .schema
            .apply(change)
            .map_err(|e| SinkError::Invalid(e.to_string()))?;
        let (metadata, target, landed, schema) = (
            self.inner.metadata.clone(),
            self.target.clone(),
            self.entry.landed.clone(),
            self.entry.schema.clone(),
        );
        ddl::execute(
            self.conn(),
            &metadata,
            &target,
            &landed,
            &schema,
            &statements,
        )
        .await?;
        self.shape_changed = true;
        self.stage = None;
        Ok(())
    }

    async fn truncate(&mut self) -> Result<()> {
        let t = self.landed().table.clone();
        let sql = match self.target.deletion_strategy {
            DeletionStrategy::Hard => format!("DELETE FROM {t}"),
            DeletionStrategy::Soft => format!(
                "UPDATE {t} SET {d} = true, {da} = now(), {op} = 'd', {u} = now(), {v} = {v} + 1 WHERE NOT {d}",
                d = self.landed().is_deleted(),
                da = self.landed().deleted_at(),
                op = quote(OP),
                u = quote(UPDATED_AT),
                v = quote(VERSION)
            ),
        };
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(self.conn())
            .await
            .context("truncate")?;
        Ok(())
    }

    async fn cascade(&mut self, c: &warp_core::Cascade) -> Result<()> {
        let sql = crate::cascade::statement(self.landed(), c, self.target.deletion_strategy)?;
        let done = sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(self.conn())
            .await
            .context("foreign-key action")?;
        tracing::debug!(constraint = %c.constraint, rows = done.rows_affected(), "foreign-key action reproduced");
        Ok(())
    }

    async fn write_dead_letters(&mut self, position: Option<&serde_json::Value>) -> Result<()> {
        if self.dead.is_empty() {
            return Ok(());
        }
        let records: Vec<serde_json::Value> = self
            .dead
            .iter()
            .map(|d| serde_json::json!({ "payload": d.payload, "error": warp_core::mask_secrets(&d.error) }))
            .collect();
        let sql = format!(
            "INSERT INTO {}.dead_letter_queue (schema_name, table_name, payload, error, source_position)
             SELECT $1, $2, r.payload, r.error, $3 FROM jsonb_to_recordset($4::jsonb) AS r(payload jsonb, error text)",
            quote(&self.inner.metadata)
        );
        let (schema, table) = (self.key.schema.clone(), self.key.table.clone());
        sqlx::query(AssertSqlSafe(sql))
            .bind(&schema)
            .bind(&table)
            .bind(position)
            .bind(serde_json::Value::Array(records))
            .execute(self.conn())
            .await
            .context("write dead letters")?;
        Ok(())
    }

    async fn commit_inner(mut self, update: CheckpointUpdate) -> Result<()> {
        self.flush_snapshot().await?;
        let position = match &update {
            CheckpointUpdate::BeginSnapshot { start, .. } => start.as_json().clone(),
            CheckpointUpdate::ChunkDone { position, .. }
            | CheckpointUpdate::ChunkCopied { position, .. }
            | CheckpointUpdate::Streaming { position, .. } => position.as_json().clone(),
        };
        self.write_dead_letters(Some(&position)).await?;
        let (key, token) = (self.key.clone(), self.token);
        let checkpoints = self.inner.checkpoints.clone();
        // A chunk copied for the table's owner is guarded by its claim (checked as it is
        // recorded), not by the owner's lease.
        let claimed = matches!(update, CheckpointUpdate::ChunkCopied { .. });
        if claimed != self.claimed {
            return Err(SinkError::Invalid(format!(
                "{key}: only a transaction opened for a claimed chunk records one as copied"
            )));
        }
        if claimed {
            // Checked in `write`.
        } else if let Some(current) = checkpoints
            .check_fence(self.conn(), &key, token, true)
            .await?
        {
            return Err(SinkError::Fenced {
                table: key.to_string(),
                ours: token.0,
                current,
            });
        }
        checkpoints.write(self.conn(), &key, token, &update).await?;
        let dead = self.dead.len() as u64;
        warp_core::failpoint::hit(warp_core::failpoint::Point::BeforeCommit);
        self.tx.commit().await?;
        warp_core::failpoint::hit(warp_core::failpoint::Point::AfterCommit);
        if dead > 0 {
            tracing::warn!(rows = dead, "rows sent to the dead-letter table");
            metrics::counter!(warp_core::metrics::DEAD_LETTER_TOTAL, "schema" => key.schema.clone(), "table" => key.table.clone())
                .increment(dead);
        }
        if self.shape_changed {
            self.inner.remember(&key, self.entry);
        }
        Ok(())
    }
}

/// What a change event stages: the after image for upserts, the before image (or just
/// the key) for deletes; with its operation code and whether the image is complete.
fn event_image<'a>(
    landed: &Landed,
    width: usize,
    e: &'a ChangeEvent,
) -> Result<(Cow<'a, Row>, char, bool), String> {
    match (e.op, &e.after) {
        (Operation::Delete, _) => match delete_image(e, width) {
            Some(before) => Ok((Cow::Borrowed(before), 'd', true)),
            None => {
                let mut values = vec![Value::Null; width];
                for (&i, v) in landed.key.iter().zip(&e.key) {
                    values[i] = v.clone();
                }
                Ok((Cow::Owned(Row::new(values)), 'd', false))
            }
        },
        (op, Some(after)) => Ok((Cow::Borrowed(after), op.code(), true)),
        (op, None) => Err(format!("{op:?} event without a row image")),
    }
}

/// A change event encoded for the staging COPY.
fn event_staged(
    landed: &Landed,
    types: &[(&str, &ColumnType)],
    e: &ChangeEvent,
) -> Result<Staged, String> {
    let (row, op, image) = event_image(landed, types.len(), e)?;
    Staged::encode(&row, types, e.source_ts, op, image)
}

/// One staging line (COPY text) for a change event.
pub(crate) fn event_line(
    landed: &Landed,
    types: &[(&str, &ColumnType)],
    e: &ChangeEvent,
    out: &mut String,
) -> Result<(), String> {
    let (row, op, image) = event_image(landed, types.len(), e)?;
    crate::apply::stage_line(out, &row, types, e.source_ts, op, image)
}

/// Replaces NUL characters in every string of `v` with the text `\u0000`; true if any.
fn replace_nul(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\\u0000");
            true
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().fold(false, |any, i| replace_nul(i) | any)
        }
        serde_json::Value::Object(map) => {
            map.values_mut().fold(false, |any, i| replace_nul(i) | any)
        }
        _ => false,
    }
}

fn change_payload(e: &ChangeEvent) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or_default()
}

fn snapshot_payload(row: &Row) -> serde_json::Value {
    serde_json::json!({ "op": "read", "after": row })
}

#[async_trait]
impl SinkTransaction for PgTransaction {
    async fn write_snapshot_rows(&mut self, rows: Vec<Row>) -> warp_core::Result<()> {
        Ok(self.snapshot_rows(rows).await?)
    }

    async fn apply(&mut self, changes: Vec<Change>) -> warp_core::Result<()> {
        self.flush_snapshot().await?;
        let mut rows = Vec::new();
        for change in changes {
            match change {
                Change::Row(e) => rows.push(e),
                Change::Schema(sc) => {
                    self.change_rows(std::mem::take(&mut rows)).await?;
                    self.schema_change(&sc).await?;
                }
                Change::Truncate => {
                    self.change_rows(std::mem::take(&mut rows)).await?;
                    self.truncate().await?;
                }
                Change::Cascade(c) => {
                    self.change_rows(std::mem::take(&mut rows)).await?;
                    self.cascade(&c).await?;
                }
            }
        }
        Ok(self.change_rows(rows).await?)
    }

    async fn commit(self: Box<Self>, update: CheckpointUpdate) -> warp_core::Result<Committed> {
        self.commit_inner(update).await?;
        Ok(Committed::WithData)
    }
}

/// Keeps the registry's view of the source shape next to the landing shape.
impl TableEntry {
    pub(crate) fn new(landed: Landed, schema: TableSchema) -> Self {
        Self { landed, schema }
    }
}
