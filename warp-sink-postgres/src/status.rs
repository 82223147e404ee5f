//! Table status in the metadata schema: written by running replicators, read by
//! `cartridge-warp status` from anywhere.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use warp_core::{
    CheckpointPhase, DeploymentStatus, ReplicaReport, TableReport, TableState, TableStatus,
};

use crate::error::{Context, Result};
use crate::ident::quote;

/// Upserts one row per table into `table_state`.
pub async fn record(
    pool: &PgPool,
    metadata: &str,
    owner: &str,
    tables: &[TableStatus],
) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "schema_name": t.schema, "table_name": t.table, "state": t.state.as_str(),
                "rows_copied": t.rows_copied, "last_error": t.last_error, "hint": t.hint,
                "last_source_ts": t.last_source_ts,
                "chunks_done": t.chunks_done, "chunks_total": t.chunks_total,
                "source_bytes": t.source_bytes, "verification": t.verification,
            })
        })
        .collect();
    let sql = format!(
        "INSERT INTO {m}.table_state AS s (schema_name, table_name, state, rows_copied, last_error, hint, last_source_ts, chunks_done, chunks_total, source_bytes, verification, owner, updated_at)
         SELECT r.schema_name, r.table_name, r.state, r.rows_copied, r.last_error, r.hint, r.last_source_ts, r.chunks_done, r.chunks_total, r.source_bytes, r.verification, $2, now()
         FROM jsonb_to_recordset($1::jsonb)
            AS r(schema_name text, table_name text, state text, rows_copied bigint, last_error text, hint text, last_source_ts timestamptz,
                 chunks_done integer, chunks_total integer, source_bytes bigint, verification jsonb)
         ON CONFLICT (schema_name, table_name) DO UPDATE SET state = EXCLUDED.state, rows_copied = EXCLUDED.rows_copied,
            last_error = EXCLUDED.last_error, hint = EXCLUDED.hint, owner = EXCLUDED.owner,
            chunks_done = EXCLUDED.chunks_done, chunks_total = EXCLUDED.chunks_total,
            source_bytes = COALESCE(EXCLUDED.source_bytes, s.source_bytes),
            verification = COALESCE(EXCLUDED.verification, s.verification),
            last_source_ts = COALESCE(EXCLUDED.last_source_ts, s.last_source_ts), updated_at = now()",
        m = quote(metadata)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows))
        .bind(owner)
        .execute(pool)
        .await
        .context("record status")?;
    Ok(())
}

/// The metadata schema's migration level, `None` when it does not exist yet. `status`
/// may run against a schema an older replica created, so columns added later are read
/// only where they exist.
async fn level(pool: &PgPool, metadata: &str) -> Result<Option<i32>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.checkpoints", quote(metadata)))
        .fetch_one(pool)
        .await
        .context("find metadata schema")?;
    if !exists {
        return Ok(None);
    }
    let sql = format!(
        "SELECT COALESCE(max(version), 0) FROM {}.schema_migrations",
        quote(metadata)
    );
    Ok(Some(
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .context("read metadata level")?,
    ))
}

/// Every table the metadata schema knows, with its checkpoint, state, owner and dead
/// letters. Returns nothing when the metadata schema does not exist yet.
pub async fn read(pool: &PgPool, metadata: &str) -> Result<Vec<TableReport>> {
    let Some(level) = level(pool, metadata).await? else {
        return Ok(Vec::new());
    };
    tables(pool, metadata, level).await
}

/// Tables and replicas, for the status page.
pub async fn deployment(pool: &PgPool, metadata: &str) -> Result<DeploymentStatus> {
    let Some(level) = level(pool, metadata).await? else {
        return Ok(DeploymentStatus::default());
    };
    Ok(DeploymentStatus {
        tables: tables(pool, metadata, level).await?,
        replicas: if level >= 3 {
            replicas(pool, metadata).await?
        } else {
            Vec::new()
        },
    })
}

/// (schema, owner, started, heartbeat, alive, tables held).
type RawReplica = (
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    bool,
    Vec<String>,
);

async fn replicas(pool: &PgPool, metadata: &str) -> Result<Vec<ReplicaReport>> {
    let sql = format!(
        "SELECT r.schema_name, r.owner, r.started_at, r.heartbeat_at, r.expires_at > now(),
                COALESCE(array_agg(l.table_name ORDER BY l.table_name) FILTER (WHERE l.table_name IS NOT NULL), '{{}}')
         FROM {m}.members r
         LEFT JOIN {m}.leases l ON l.schema_name = r.schema_name AND l.owner = r.owner AND l.expires_at > now()
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2",
        m = quote(metadata)
    );
    let rows: Vec<RawReplica> = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .context("read replicas")?;
    Ok(rows
        .into_iter()
        .map(
            |(schema, owner, started_at, heartbeat_at, alive, tables)| ReplicaReport {
                schema,
                owner,
                started_at,
                heartbeat_at,
                alive,
                tables,
            },
        )
        .collect())
}

async fn tables(pool: &PgPool, metadata: &str, level: i32) -> Result<Vec<TableReport>> {
    let chunks = if level >= 4 {
        "s.chunks_done, s.chunks_total"
    } else {
        "NULL::integer, NULL::integer"
    };
    let source_bytes = if level >= 5 {
        "s.source_bytes"
    } else {
        "NULL::bigint"
    };
    let verification = if level >= 6 {
        "s.verification"
    } else {
        "NULL::jsonb"
    };
    let sql = format!(
        "WITH t AS (
            SELECT schema_name, table_name FROM {m}.checkpoints
            UNION SELECT schema_name, table_name FROM {m}.table_state
            UNION SELECT schema_name, table_name FROM {m}.leases),
         v AS (SELECT schema_name, table_name, max(version) AS version FROM {m}.schema_registry GROUP BY 1, 2),
         d AS (SELECT schema_name, table_name, count(*) AS n FROM {m}.dead_letter_queue WHERE status = 'pending' GROUP BY 1, 2)
         SELECT t.schema_name, t.table_name, s.state, c.phase, s.rows_copied, c.position,
                GREATEST(c.source_ts, s.last_source_ts),
                -- Only a live lease names an owner (a handed-back or lapsed one does not).
                CASE WHEN l.owner <> '' AND l.expires_at > now() THEN l.owner END, s.updated_at, s.last_error, s.hint,
                COALESCE(d.n, 0), {chunks}, v.version, {source_bytes}, {verification}
         FROM t
         LEFT JOIN {m}.checkpoints c ON c.schema_name = t.schema_name AND c.table_name = t.table_name AND c.stream = 'main'
         LEFT JOIN {m}.table_state s ON s.schema_name = t.schema_name AND s.table_name = t.table_name
         LEFT JOIN {m}.leases l ON l.schema_name = t.schema_name AND l.table_name = t.table_name
         LEFT JOIN v ON v.schema_name = t.schema_name AND v.table_name = t.table_name
         LEFT JOIN d ON d.schema_name = t.schema_name AND d.table_name = t.table_name
         ORDER BY 1, 2",
        m = quote(metadata)
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .context("read status")?;
    let now = Utc::now();
    rows.iter().map(|r| report(r, now)).collect()
}

/// One row of the status query (columns in its order).
fn report(r: &sqlx::postgres::PgRow, now: DateTime<Utc>) -> Result<TableReport> {
    use sqlx::Row as _;
    let get = |i: usize| -> Result<Option<String>> { r.try_get(i).context("read status") };
    let ts: Option<DateTime<Utc>> = r.try_get(6).context("read status")?;
    let int = |i: usize| -> Result<Option<i32>> { r.try_get(i).context("read status") };
    let verification: Option<serde_json::Value> = r.try_get(16).context("read status")?;
    Ok(TableReport {
        schema: r.try_get(0).context("read status")?,
        table: r.try_get(1).context("read status")?,
        state: get(2)?.as_deref().and_then(TableState::parse),
        phase: get(3)?.as_deref().and_then(CheckpointPhase::parse),
        rows_copied: r.try_get(4).context("read status")?,
        position: r.try_get(5).context("read status")?,
        lag_seconds: ts.map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)),
        last_source_ts: ts,
        owner: get(7)?,
        status_updated_at: r.try_get(8).context("read status")?,
        last_error: get(9)?.map(|e| warp_core::mask_secrets(&e).into_owned()),
        hint: get(10)?,
        dead_letters: r.try_get(11).context("read status")?,
        chunks_done: int(12)?.map(i64::from),
        chunks_total: int(13)?.map(i64::from).filter(|n| *n > 0),
        schema_version: int(14)?,
        source_bytes: r.try_get(15).context("read status")?,
        // A shape this version cannot read (a newer replica's) is left out.
        verification: verification.and_then(|v| serde_json::from_value(v).ok()),
    })
}
