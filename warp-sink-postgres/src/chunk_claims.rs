//! Snapshot chunks as work items any replica of a schema may claim (docs/guarantees.md,
//! "Copies shared between replicas"). A claim is a row lock's worth of state on the
//! chunk: its holder (a replica's process), a token from one sequence and an expiry by
//! this server's clock. A chunk is recorded as copied only in the transaction of its rows,
//! and only while the claim that copied it is the chunk's latest.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use warp_core::{
    ChunkClaim, ChunkScope, CopiedChunk, FencingToken, KeyRange, Position, TableKey, TableSchema,
};

use crate::error::{Context, Result, SinkError};

type Claimed = (
    String,
    i32,
    serde_json::Value,
    i64,
    Option<serde_json::Value>,
);

/// Claims the first chunk of `scope` not copied and not held (see
/// [`warp_core::CheckpointStore::claim_chunk`]). `SKIP LOCKED`: replicas claiming at
/// once take different chunks instead of queueing on one.
pub async fn claim(
    pool: &PgPool,
    m: &str,
    schema: &str,
    scope: ChunkScope<'_>,
    holder: &str,
    validity: Duration,
) -> Result<Option<ChunkClaim>> {
    let (table, others): (Option<&str>, &[String]) = match scope {
        ChunkScope::Table(t) => (Some(t), &[]),
        ChunkScope::OthersThan(others) => (None, others),
    };
    // A helper takes chunks of shared plans only (their checkpoint records the shape to
    // copy in), never one handed back as needing the owner. A streaming table's chunks
    // are offered only while its copy window is open and not draining.
    let sql = format!(
        "WITH pick AS (
            SELECT c.table_name, c.chunk_index, k.copy_window FROM {m}.snapshot_chunks c
            JOIN {m}.checkpoints k ON k.schema_name = c.schema_name AND k.table_name = c.table_name
                AND k.stream = 'main'
                AND (k.phase = 'snapshot' OR (k.copy_window IS NOT NULL AND k.copy_window_claimable))
            WHERE c.schema_name = $1 AND c.done_position IS NULL
              AND (c.claimed_until IS NULL OR c.claimed_until < now())
              AND CASE WHEN $2::text IS NOT NULL THEN c.table_name = $2
                       ELSE k.shape IS NOT NULL AND NOT c.owner_only AND c.table_name <> ALL($3::text[]) END
            ORDER BY c.table_name, c.chunk_index
            LIMIT 1
            FOR UPDATE OF c SKIP LOCKED)
         UPDATE {m}.snapshot_chunks c
            SET holder = $4, claim_token = nextval('{m}.chunk_claims'),
                claimed_until = now() + make_interval(secs => $5), claim_epoch = pick.copy_window,
                updated_at = now()
           FROM pick
          WHERE c.schema_name = $1 AND c.table_name = pick.table_name AND c.chunk_index = pick.chunk_index
         RETURNING c.table_name, c.chunk_index, c.key_range, c.claim_token,
            (SELECT k.shape FROM {m}.checkpoints k
              WHERE k.schema_name = $1 AND k.table_name = c.table_name AND k.stream = 'main')"
    );
    let row: Option<Claimed> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(schema)
        .bind(table)
        .bind(others)
        .bind(holder)
        .bind(validity.as_secs_f64())
        .fetch_optional(pool)
        .await
        .context("claim a snapshot chunk")?;
    let Some((table, index, range, token, shape)) = row else {
        return Ok(None);
    };
    let range: KeyRange = decode("chunk key range", range)?;
    let shape: Option<TableSchema> = shape.map(|s| decode("source shape", s)).transpose()?;
    Ok(Some(ChunkClaim {
        table,
        index: usize::try_from(index).unwrap_or(0),
        range,
        claim: FencingToken(u64::try_from(token).unwrap_or(0)),
        shape,
    }))
}

/// Extends `holder`'s claims on chunks not copied yet.
pub async fn renew(
    pool: &PgPool,
    m: &str,
    schema: &str,
    holder: &str,
    validity: Duration,
) -> Result<()> {
    let sql = format!(
        "UPDATE {m}.snapshot_chunks SET claimed_until = now() + make_interval(secs => $3)
          WHERE schema_name = $1 AND holder = $2 AND done_position IS NULL AND claimed_until > now()"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(schema)
        .bind(holder)
        .bind(validity.as_secs_f64())
        .execute(pool)
        .await
        .context("renew chunk claims")?;
    Ok(())
}

/// Ends a claim that copied nothing, if it is still the chunk's latest.
pub async fn release(
    pool: &PgPool,
    m: &str,
    table: &TableKey,
    index: usize,
    claim: FencingToken,
    owner_only: bool,
) -> Result<()> {
    let sql = format!(
        "UPDATE {m}.snapshot_chunks SET claimed_until = NULL, owner_only = owner_only OR $5
          WHERE schema_name = $1 AND table_name = $2 AND chunk_index = $3 AND claim_token = $4"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&table.schema)
        .bind(&table.table)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .bind(i64::try_from(claim.0).unwrap_or(i64::MAX))
        .bind(owner_only)
        .execute(pool)
        .await
        .context("hand a chunk claim back")?;
    Ok(())
}

/// Inside the transaction of the chunk's rows: records the chunk as copied at
/// `position` if `claim` is still its latest claim, no one recorded it first, and — for
/// a streaming table — the copy window it was claimed in is still open; otherwise the
/// transaction must not commit (its rows would overwrite a newer copy, or changes the
/// stream committed after the chunk's read). The row locks taken here make a concurrent
/// claim wait for this commit and then see the chunk copied, and the owner's closing of
/// the window wait for it and then see it recorded.
pub async fn record_copied(
    conn: &mut PgConnection,
    m: &str,
    key: &TableKey,
    index: usize,
    position: &Position,
    rows: u64,
    claim: FencingToken,
) -> Result<()> {
    let sql = format!(
        "UPDATE {m}.snapshot_chunks SET done_position = $4, rows_copied = $5, claimed_until = NULL, updated_at = now()
          WHERE schema_name = $1 AND table_name = $2 AND chunk_index = $3
            AND claim_token = $6 AND done_position IS NULL
            AND EXISTS (SELECT 1 FROM {m}.checkpoints k
                         WHERE k.schema_name = $1 AND k.table_name = $2 AND k.stream = 'main'
                           AND (k.phase = 'snapshot' OR k.copy_window = claim_epoch)
                         FOR SHARE)"
    );
    let recorded = sqlx::query(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(&key.table)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .bind(position.as_json())
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .bind(i64::try_from(claim.0).unwrap_or(i64::MAX))
        .execute(conn)
        .await
        .context("record a chunk copied for its owner")?;
    if recorded.rows_affected() == 1 {
        Ok(())
    } else {
        Err(SinkError::ClaimLost {
            table: key.to_string(),
            index,
        })
    }
}

/// A streaming table's copy to share: its chunks replace whatever the table had, all
/// uncopied, and no window is open.
pub async fn plan(
    conn: &mut PgConnection,
    m: &str,
    key: &TableKey,
    chunks: &[KeyRange],
) -> Result<()> {
    for sql in [
        format!("DELETE FROM {m}.snapshot_chunks WHERE schema_name = $1 AND table_name = $2"),
        format!("UPDATE {m}.checkpoints SET copy_window = NULL, copy_window_claimable = false WHERE schema_name = $1 AND table_name = $2"),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .bind(&key.schema)
            .bind(&key.table)
            .execute(&mut *conn)
            .await
            .context("plan a shared copy")?;
    }
    insert(conn, m, key, chunks).await
}

/// Records `chunks` as the table's plan, none copied or claimed.
pub async fn insert(
    conn: &mut PgConnection,
    m: &str,
    key: &TableKey,
    chunks: &[KeyRange],
) -> Result<()> {
    let ranges = serde_json::to_value(chunks).map_err(|e| SinkError::Invalid(e.to_string()))?;
    let insert = format!(
        "INSERT INTO {m}.snapshot_chunks (schema_name, table_name, chunk_index, key_range)
         SELECT $1, $2, (e.ord - 1)::integer, e.range FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(range, ord)"
    );
    sqlx::query(AssertSqlSafe(insert))
        .bind(&key.schema)
        .bind(&key.table)
        .bind(ranges)
        .execute(conn)
        .await
        .context("record the chunks of a copy")?;
    Ok(())
}

/// Opens the table's copy window; returns its number.
pub async fn open_window(conn: &mut PgConnection, m: &str, key: &TableKey) -> Result<u64> {
    let sql = format!(
        "UPDATE {m}.checkpoints SET copy_window = nextval('{m}.chunk_claims'), copy_window_claimable = true
          WHERE schema_name = $1 AND table_name = $2 AND stream = 'main' RETURNING copy_window"
    );
    let epoch: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(&key.table)
        .fetch_one(conn)
        .await
        .context("open a copy window")?;
    Ok(u64::try_from(epoch).unwrap_or(0))
}

/// Closes the table's copy window — after every chunk commit in flight under it — and
/// returns the chunks of the plan copied so far, with the positions of their reads.
pub async fn close_window(
    conn: &mut PgConnection,
    m: &str,
    key: &TableKey,
) -> Result<Vec<CopiedChunk>> {
    let close = format!(
        "UPDATE {m}.checkpoints SET copy_window = NULL, copy_window_claimable = false
          WHERE schema_name = $1 AND table_name = $2 AND stream = 'main'"
    );
    sqlx::query(AssertSqlSafe(close))
        .bind(&key.schema)
        .bind(&key.table)
        .execute(&mut *conn)
        .await
        .context("close a copy window")?;
    let copied = format!(
        "SELECT key_range, done_position, rows_copied FROM {m}.snapshot_chunks
          WHERE schema_name = $1 AND table_name = $2 AND done_position IS NOT NULL ORDER BY chunk_index"
    );
    let rows: Vec<(serde_json::Value, serde_json::Value, i64)> =
        sqlx::query_as(AssertSqlSafe(copied))
            .bind(&key.schema)
            .bind(&key.table)
            .fetch_all(conn)
            .await
            .context("read the chunks copied")?;
    rows.into_iter()
        .map(|(range, position, rows)| {
            Ok(CopiedChunk {
                range: decode("chunk key range", range)?,
                position: Position::from_json(position),
                rows: u64::try_from(rows).unwrap_or(0),
            })
        })
        .collect()
}

/// Stops claims in window `epoch`; returns the claims made in it still copying.
pub async fn drain(pool: &PgPool, m: &str, key: &TableKey, epoch: u64) -> Result<usize> {
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let stop = format!(
        "UPDATE {m}.checkpoints SET copy_window_claimable = false
          WHERE schema_name = $1 AND table_name = $2 AND stream = 'main' AND copy_window = $3
            AND copy_window_claimable"
    );
    sqlx::query(AssertSqlSafe(stop))
        .bind(&key.schema)
        .bind(&key.table)
        .bind(epoch)
        .execute(pool)
        .await
        .context("drain a copy window")?;
    let sql = format!(
        "SELECT count(*) FROM {m}.snapshot_chunks
          WHERE schema_name = $1 AND table_name = $2 AND claim_epoch = $3
            AND done_position IS NULL AND claimed_until > now()"
    );
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&key.schema)
        .bind(&key.table)
        .bind(epoch)
        .fetch_one(pool)
        .await
        .context("count the chunks being copied")?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| SinkError::Invalid(format!("stored {what} is unreadable: {e}")))
}
