//! Control signals (`cartridge-warp resync`) in the metadata schema.

use sqlx::{AssertSqlSafe, PgPool};
use warp_core::{Signal, SignalKind};

use crate::error::{Context, Result, SinkError};
use crate::ident::quote;

/// Leaves a signal for the replicator running `schema`.
pub async fn send(
    pool: &PgPool,
    metadata: &str,
    schema: &str,
    table: Option<&str>,
    kind: &SignalKind,
) -> Result<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.signals", quote(metadata)))
        .fetch_one(pool)
        .await
        .context("find metadata schema")?;
    if !exists {
        return Err(SinkError::Invalid(format!(
            "the metadata schema {metadata} does not exist: no replicator has run against this destination yet"
        )));
    }
    let sql = format!(
        "INSERT INTO {}.signals (schema_name, table_name, signal) VALUES ($1, $2, $3) RETURNING id",
        quote(metadata)
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(schema)
        .bind(table)
        .bind(kind.as_str())
        .fetch_one(pool)
        .await
        .context("send signal")
}

/// Marks the pending signals of `schema` for `tables` (or for no table) processed and
/// returns them; signals for other replicas' tables stay pending for them.
pub async fn take(
    pool: &PgPool,
    metadata: &str,
    schema: &str,
    tables: &[String],
) -> Result<Vec<Signal>> {
    let sql = format!(
        "UPDATE {}.signals SET processed_at = now() WHERE schema_name = $1 AND processed_at IS NULL
         AND (table_name IS NULL OR table_name = ANY($2))
         RETURNING id, table_name, signal",
        quote(metadata)
    );
    let rows: Vec<(i64, Option<String>, String)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(schema)
        .bind(tables)
        .fetch_all(pool)
        .await
        .context("take signals")?;
    Ok(rows
        .into_iter()
        .map(|(id, table, kind)| Signal {
            id,
            table,
            kind: SignalKind::parse(&kind),
        })
        .collect())
}
