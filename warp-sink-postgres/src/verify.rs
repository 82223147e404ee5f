//! What `cartridge-warp verify` needs from the destination: landed rows with their
//! versions, a canonical encoding shared with the source side, and repairs that never
//! overwrite a row the replicator changed meanwhile.

use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::config::DeletionStrategy;
use warp_core::{ColumnType, Fix, Key, Repaired, Row, TableSchema, Target};

use crate::connection::TxConnection;
use crate::encode::{literal_of, pg_text};
use crate::error::{Context, Result};
use crate::ident::quote;
use crate::landed::{Landed, OP, UPDATED_AT};
use crate::PostgresSink;

/// A row as PostgreSQL text input for the landed column types: equal texts mean equal
/// rows as the destination stores them, whichever side decoded the values.
pub fn canonical(row: &Row, types: &[ColumnType]) -> std::result::Result<String, String> {
    let mut out = String::new();
    for (i, ty) in types.iter().enumerate() {
        let value = row.values.get(i).unwrap_or(&warp_core::Value::Null);
        if value.is_null() {
            out.push_str("\u{0}N");
        } else if *ty == ColumnType::Json {
            out.push_str(&canonical_json(&pg_text(value, ty)?)?);
        } else {
            out.push_str(&pg_text(value, ty)?);
        }
        out.push('\u{1}');
    }
    Ok(out)
}

/// JSON as `jsonb` compares it: object keys in one order and insignificant whitespace
/// gone (the source keeps the text it was given; `jsonb` reorders keys).
fn canonical_json(text: &str) -> std::result::Result<String, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    v.sort_all_objects();
    Ok(v.to_string())
}

impl PostgresSink {
    /// Writes `fixes` into `target` in one transaction. Versions are not bumped (these are
    /// not source changes), and a row whose version moved since it was compared is left
    /// alone, so a repair can never undo a change the replicator applied meanwhile.
    pub async fn repair(
        &self,
        target: &Target,
        schema: &TableSchema,
        fixes: &[Fix],
    ) -> Result<Repaired> {
        let landed = Landed::new(target, schema)?;
        let mut tx = TxConnection::begin(self.pool()).await?;
        let mut done = Repaired::default();
        for fix in fixes {
            let changed = match &fix.source {
                Some(row) => write(&mut tx, &landed, fix, row).await?,
                None => remove(&mut tx, &landed, target.deletion_strategy, fix).await?,
            };
            match (changed, &fix.source) {
                (false, _) => done.skipped += 1,
                (true, Some(_)) => done.written += 1,
                (true, None) => done.deleted += 1,
            }
        }
        tx.commit().await?;
        Ok(done)
    }
}

fn key_match(landed: &Landed, key: &Key) -> Result<String> {
    landed
        .key
        .iter()
        .zip(key)
        .map(|(&i, v)| {
            let c = &landed.columns[i];
            Ok(format!("{} = {}", c.ident, literal_of(v, &c.ty)?))
        })
        .collect::<Result<Vec<_>>>()
        .map(|parts| parts.join(" AND "))
}

fn version_guard(seen: Option<i64>) -> String {
    match seen {
        Some(v) => format!("{} = {v}", quote(crate::landed::VERSION)),
        None => "true".into(),
    }
}

async fn run(conn: &mut PgConnection, sql: String) -> Result<u64> {
    // Literal keys and values: never the same text twice, so never cached.
    Ok(sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .execute(conn)
        .await
        .context("repair row")?
        .rows_affected())
}

/// Inserts the row if absent (unless a row appeared meanwhile), else overwrites it at the
/// version it was compared at.
async fn write(conn: &mut PgConnection, landed: &Landed, fix: &Fix, row: &Row) -> Result<bool> {
    let values = landed
        .columns
        .iter()
        .zip(&row.values)
        .map(|(c, v)| literal_of(v, &c.ty))
        .collect::<Result<Vec<_>>>()?;
    let sql = match fix.seen_version {
        None => format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            landed.table,
            landed.column_list(),
            values.join(", ")
        ),
        Some(_) => {
            let sets: Vec<String> = landed
                .columns
                .iter()
                .zip(&values)
                .map(|(c, v)| format!("{} = {v}", c.ident))
                .collect();
            format!(
                "UPDATE {} SET {}, {} = 'r', {} = now(), {} = false, {} = NULL WHERE {} AND {}",
                landed.table,
                sets.join(", "),
                quote(OP),
                quote(UPDATED_AT),
                landed.is_deleted(),
                landed.deleted_at(),
                key_match(landed, &fix.key)?,
                version_guard(fix.seen_version)
            )
        }
    };
    Ok(run(conn, sql).await? == 1)
}

/// Deletes (or soft-deletes) a row the source no longer has, at the version compared.
async fn remove(
    conn: &mut PgConnection,
    landed: &Landed,
    strategy: DeletionStrategy,
    fix: &Fix,
) -> Result<bool> {
    let guard = format!(
        "{} AND {}",
        key_match(landed, &fix.key)?,
        version_guard(fix.seen_version)
    );
    let sql = match strategy {
        DeletionStrategy::Hard => format!("DELETE FROM {} WHERE {guard}", landed.table),
        DeletionStrategy::Soft => format!(
            "UPDATE {} SET {} = true, {} = now(), {} = 'd', {} = now() WHERE {guard} AND NOT {}",
            landed.table,
            landed.is_deleted(),
            landed.deleted_at(),
            quote(OP),
            quote(UPDATED_AT),
            landed.is_deleted()
        ),
    };
    Ok(run(conn, sql).await? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp_core::Value;

    #[test]
    fn json_compares_as_jsonb_does_whatever_its_key_order_and_spacing() {
        let source = Row::new(vec![Value::JsonText(
            r#"{"b": 1, "a": [1, {"d": 2, "c": 3}]}"#.into(),
        )]);
        // How the destination reads the same document back from `jsonb`.
        let landed = Row::new(vec![Value::Json(
            serde_json::from_str(r#"{"a": [1, {"c": 3, "d": 2}], "b": 1}"#).unwrap(),
        )]);
        let types = [ColumnType::Json];
        assert_eq!(
            canonical(&source, &types).unwrap(),
            canonical(&landed, &types).unwrap()
        );
        let other = Row::new(vec![Value::JsonText(r#"{"a": [1], "b": 1}"#.into())]);
        assert_ne!(
            canonical(&source, &types).unwrap(),
            canonical(&other, &types).unwrap()
        );
    }
}
