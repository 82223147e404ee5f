//! Checkpoints in the metadata schema. Reads are free-standing; writes happen
//! only inside a data transaction (see `transaction.rs`), guarded by the fencing token.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use warp_core::{
    Checkpoint, CheckpointUpdate, ChunkProgress, FencingToken, KeyRange, Phase, Position, TableKey,
};

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use crate::error::{Context, Result, SinkError};
use crate::ident::quote;

/// SQL for one metadata schema.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// The quoted metadata schema.
    pub(crate) m: String,
    /// How long a transaction holding a lease row lock may sit idle before PostgreSQL
    /// ends it (milliseconds): half the lease validity last asked for.
    lock_idle_ms: Arc<AtomicU64>,
}

/// Until a lease is acquired (the default lease validity, 20 s, halved).
const DEFAULT_LOCK_IDLE_MS: u64 = 10_000;

type CheckpointRow = (
    String,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    serde_json::Value,
    Option<DateTime<Utc>>,
    i64,
    bool,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

/// A checkpoint row's columns as one update writes them.
struct Stored<'a> {
    phase: &'static str,
    position: Option<&'a serde_json::Value>,
    /// The snapshot's start position (snapshot phase only).
    start: Option<&'a serde_json::Value>,
    handover: &'a serde_json::Value,
    source_ts: Option<DateTime<Utc>>,
    /// The snapshot re-copies a table that held rows.
    recopy: bool,
    /// The source shape at `position`; `None` keeps the stored one while streaming.
    shape: Option<serde_json::Value>,
    /// A re-copy's chunks still to copy, while streaming.
    recopy_chunks: Option<serde_json::Value>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| SinkError::Invalid(format!("stored {what} is unreadable: {e}")))
}

impl Checkpoints {
    pub fn new(metadata_schema: &str) -> Self {
        Self {
            m: quote(metadata_schema),
            lock_idle_ms: Arc::new(AtomicU64::new(DEFAULT_LOCK_IDLE_MS)),
        }
    }

    /// Bounds lease row locks by the lease validity: a lock holder frozen (SIGSTOP, a
    /// paused VM, a partition) for longer loses its transaction, so the next owner's
    /// acquisition can proceed instead of waiting until the connection dies.
    pub(crate) fn bound_locks_by(&self, validity: std::time::Duration) {
        let ms = u64::try_from((validity / 2).as_millis()).unwrap_or(u64::MAX);
        self.lock_idle_ms.store(ms.max(1), AtomicOrdering::Relaxed);
    }

    /// `SET LOCAL` for a transaction about to lock a lease row: it may sit idle holding
    /// the lock for at most half the lease validity.
    pub(crate) fn idle_bound(&self) -> String {
        let ms = self.lock_idle_ms.load(AtomicOrdering::Relaxed);
        format!("SET LOCAL idle_in_transaction_session_timeout = {ms}")
    }

    pub async fn load(&self, pool: &PgPool, key: &TableKey) -> Result<Option<Checkpoint>> {
        let sql = format!(
            "SELECT phase, position, snapshot_start, handover, source_ts, fencing_token, recopy, shape, recopy_chunks FROM {}.checkpoints
             WHERE schema_name = $1 AND table_name = $2 AND stream = 'main'",
            self.m
        );
        let row: Option<CheckpointRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .fetch_optional(pool)
            .await
            .context("load checkpoint")?;
        let Some((
            phase,
            position,
            start,
            handover,
            source_ts,
            token,
            recopy,
            shape,
            recopy_chunks,
        )) = row
        else {
            return Ok(None);
        };
        let phase = match phase.as_str() {
            "snapshot" => {
                let sql = format!(
                    "SELECT key_range, done_position, rows_copied FROM {}.snapshot_chunks
                     WHERE schema_name = $1 AND table_name = $2 ORDER BY chunk_index",
                    self.m
                );
                let chunks: Vec<(serde_json::Value, Option<serde_json::Value>, i64)> =
                    sqlx::query_as(AssertSqlSafe(sql))
                        .bind(&key.schema)
                        .bind(&key.table)
                        .fetch_all(pool)
                        .await
                        .context("load snapshot progress")?;
                Phase::Snapshot {
                    recopy,
                    start: Position::from_json(start.unwrap_or_default()),
                    chunks: chunks
                        .into_iter()
                        .map(|(range, done, rows)| {
                            Ok(ChunkProgress {
                                range: decode::<KeyRange>("chunk range", range)?,
                                done: done.map(Position::from_json),
                                rows: u64::try_from(rows).unwrap_or(0),
                            })
                        })
                        .collect::<Result<_>>()?,
                }
            }
            _ => Phase::Streaming {
                position: Position::from_json(position.unwrap_or_default()),
                source_ts,
                handover: decode("handover", handover)?,
                recopy: (recopy_chunks.map(|c| decode("copy in the stream", c))).transpose()?,
            },
        };
        Ok(Some(Checkpoint {
            phase,
            fencing: FencingToken(u64::try_from(token).unwrap_or(0)),
            shape: shape.map(|s| decode("source shape", s)).transpose()?,
        }))
    }

    /// Inside a transaction: `Some(current token)` unless `token` is current. With
    /// `hold`, the lease row stays locked until the transaction ends, so no acquisition
    /// can overtake it (`FOR KEY SHARE` blocks their `FOR UPDATE`, not the holder's own
    /// renewals: see `lease.rs`). Commits hold it only from this check to `COMMIT`, so a
    /// replica frozen mid-batch never blocks a takeover; one frozen inside that window
    /// loses its transaction after half the lease validity ([`Self::idle_bound`]).
    pub async fn check_fence(
        &self,
        conn: &mut PgConnection,
        key: &TableKey,
        token: FencingToken,
        hold: bool,
    ) -> Result<Option<u64>> {
        if hold {
            sqlx::raw_sql(AssertSqlSafe(self.idle_bound()))
                .execute(&mut *conn)
                .await
                .context("bound the commit's lease lock")?;
        }
        let sql = format!(
            "SELECT fencing_token FROM {}.leases WHERE schema_name = $1 AND table_name = $2{}",
            self.m,
            if hold { " FOR KEY SHARE" } else { "" }
        );
        let current: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .fetch_optional(conn)
            .await
            .context("check fencing token")?;
        let current = current.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
        Ok((current != token.0).then_some(current))
    }

    /// Writes `update` inside the data transaction.
    pub async fn write(
        &self,
        conn: &mut PgConnection,
        key: &TableKey,
        token: FencingToken,
        update: &CheckpointUpdate,
    ) -> Result<()> {
        let m = &self.m;
        let token = i64::try_from(token.0).unwrap_or(i64::MAX);
        match update {
            CheckpointUpdate::BeginSnapshot {
                start,
                chunks,
                recopy,
                shared,
            } => {
                self.clear_chunks(conn, key).await?;
                crate::chunk_claims::insert(conn, m, key, chunks).await?;
                let shape = (shared.as_ref())
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|e| SinkError::Invalid(e.to_string()))?;
                let row = Stored {
                    phase: "snapshot",
                    position: None,
                    start: Some(start.as_json()),
                    handover: &serde_json::json!([]),
                    source_ts: None,
                    recopy: *recopy,
                    shape,
                    recopy_chunks: None,
                };
                self.upsert(conn, key, &row, token).await
            }
            CheckpointUpdate::ChunkDone {
                index,
                position,
                rows,
            } => {
                let sql = format!(
                    "UPDATE {m}.snapshot_chunks SET done_position = $4, rows_copied = $5, updated_at = now()
                     WHERE schema_name = $1 AND table_name = $2 AND chunk_index = $3"
                );
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(&key.schema)
                    .bind(&key.table)
                    .bind(i32::try_from(*index).unwrap_or(i32::MAX))
                    .bind(position.as_json())
                    .bind(i64::try_from(*rows).unwrap_or(i64::MAX))
                    .execute(&mut *conn)
                    .await
                    .context("record chunk progress")?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(SinkError::Invalid(format!(
                        "{key}: chunk {index} is not in the snapshot plan"
                    )))
                }
            }
            CheckpointUpdate::ChunkCopied {
                index,
                position,
                rows,
                claim,
            } => {
                crate::chunk_claims::record_copied(conn, m, key, *index, position, *rows, *claim)
                    .await
            }
            CheckpointUpdate::Streaming {
                position,
                source_ts,
                handover,
                shape,
                recopy,
            } => {
                // A copy inside the stream keeps its shared chunks until it ends.
                if recopy.is_none() {
                    self.clear_chunks(conn, key).await?;
                }
                let recopy_chunks = (recopy.as_ref())
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|e| SinkError::Invalid(e.to_string()))?;
                let handover = serde_json::to_value(handover)
                    .map_err(|e| SinkError::Invalid(e.to_string()))?;
                let shape = (shape.as_ref())
                    .map(serde_json::to_value)
                    .transpose()
                    .map_err(|e| SinkError::Invalid(e.to_string()))?;
                let row = Stored {
                    phase: "streaming",
                    position: Some(position.as_json()),
                    start: None,
                    handover: &handover,
                    source_ts: *source_ts,
                    recopy: false,
                    shape,
                    recopy_chunks,
                };
                self.upsert(conn, key, &row, token).await
            }
        }
    }

    async fn clear_chunks(&self, conn: &mut PgConnection, key: &TableKey) -> Result<()> {
        let sql = format!(
            "DELETE FROM {}.snapshot_chunks WHERE schema_name = $1 AND table_name = $2",
            self.m
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .execute(conn)
            .await
            .context("clear snapshot progress")?;
        Ok(())
    }

    async fn upsert(
        &self,
        conn: &mut PgConnection,
        key: &TableKey,
        row: &Stored<'_>,
        token: i64,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO {}.checkpoints AS c
                (schema_name, table_name, phase, position, snapshot_start, handover, source_ts, fencing_token, recopy, shape, recopy_chunks, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
             ON CONFLICT (schema_name, table_name, stream) DO UPDATE SET
                phase = EXCLUDED.phase, position = EXCLUDED.position, snapshot_start = EXCLUDED.snapshot_start,
                handover = EXCLUDED.handover, source_ts = COALESCE(EXCLUDED.source_ts, c.source_ts),
                fencing_token = EXCLUDED.fencing_token, recopy = EXCLUDED.recopy,
                shape = CASE WHEN EXCLUDED.phase = 'snapshot' THEN EXCLUDED.shape ELSE COALESCE(EXCLUDED.shape, c.shape) END,
                recopy_chunks = EXCLUDED.recopy_chunks,
                updated_at = now()",
            self.m
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .bind(row.phase)
            .bind(row.position)
            .bind(row.start)
            .bind(row.handover)
            .bind(row.source_ts)
            .bind(token)
            .bind(row.recopy)
            .bind(&row.shape)
            .bind(&row.recopy_chunks)
            .execute(conn)
            .await
            .context("write checkpoint")?;
        Ok(())
    }

    /// Records `update` in a transaction of its own, if `token` is still current: the
    /// checkpoint of data another destination committed (this database as its control
    /// store). `Some(current token)` when fenced.
    pub async fn save(
        &self,
        pool: &PgPool,
        key: &TableKey,
        token: FencingToken,
        update: &CheckpointUpdate,
    ) -> Result<Option<u64>> {
        let mut tx = pool.begin().await.context("begin checkpoint")?;
        if let Some(current) = self.check_fence(&mut tx, key, token, true).await? {
            return Ok(Some(current));
        }
        self.write(&mut tx, key, token, update).await?;
        tx.commit().await.context("commit checkpoint")?;
        Ok(None)
    }

    /// A transaction holding the table's lease row until it ends, if `token` is still
    /// current; `Err(current token)` when fenced.
    pub async fn begin_fenced(
        &self,
        pool: &PgPool,
        key: &TableKey,
        token: FencingToken,
    ) -> Result<std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, u64>> {
        let mut tx = pool.begin().await.context("begin")?;
        Ok(match self.check_fence(&mut tx, key, token, true).await? {
            Some(current) => Err(current),
            None => Ok(tx),
        })
    }

    /// Forgets progress (full resync), if `token` is still current.
    pub async fn reset(
        &self,
        pool: &PgPool,
        key: &TableKey,
        token: FencingToken,
    ) -> Result<Option<u64>> {
        let mut tx = pool.begin().await.context("begin reset")?;
        if let Some(current) = self.check_fence(&mut tx, key, token, true).await? {
            return Ok(Some(current));
        }
        self.clear_chunks(&mut tx, key).await?;
        let sql = format!(
            "DELETE FROM {}.checkpoints WHERE schema_name = $1 AND table_name = $2",
            self.m
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .execute(&mut *tx)
            .await
            .context("reset checkpoint")?;
        tx.commit().await.context("commit reset")?;
        Ok(None)
    }
}
