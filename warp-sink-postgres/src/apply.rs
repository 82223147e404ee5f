//! Writing rows: COPY into the landing table (snapshots) or into the session's staging
//! table followed by set-based upsert/delete statements (changes). When a bulk write
//! fails on a data error, it is retried row by row so only the poison rows go to the
//! dead-letter table.

use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::config::DeletionStrategy;

use crate::error::{Context, Result};
use crate::ident::quote;
use crate::landed::{Landed, DELETED_AT, IS_DELETED, OP, SOURCE_TS, UPDATED_AT, VERSION};
use crate::types::pg_type;

/// Extra staging columns after the data columns.
pub const STAGE_EXTRA: &str = "\"_cartridge_source_ts\", \"_cartridge_op\", \"_cw_image\"";

/// How staged rows are merged into the landing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Snapshot rows: overwrite without counting a version (a re-copy is not a change).
    Snapshot,
    /// Change events: upserts bump the version when the row really changes; deletes per
    /// strategy.
    Changes(DeletionStrategy),
}

/// A session's staging table for landing tables of up to `width` columns. Its data
/// columns (`c1`, `c2`, …) are text, read by casts in the merge statements (the same
/// input functions a typed column would run at COPY), so a few widths serve every table.
/// It is created once per session — a temporary table lives as long as its connection —
/// and emptied at each commit: a batch writes no catalog rows. (A typed table created
/// and dropped per batch cost PostgreSQL more CPU than applying the rows: catalog rows
/// for the table, each column and its type, written and deleted every batch.)
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    width: usize,
}

impl Stage {
    /// The staging table for `landed`, created in this session if it is not there yet.
    pub async fn of(conn: &mut PgConnection, landed: &Landed) -> Result<Self> {
        // Widths of 8, 16, 32, …: a session holds a handful of staging tables, and
        // `ON COMMIT DELETE ROWS` empties all of them at each commit that used one.
        let width = landed.columns.len().max(8).next_power_of_two();
        let name = quote(&format!("_cw_stage_{width}"));
        let mut defs: Vec<String> = (1..=width).map(|i| format!("c{i} text")).collect();
        defs.push(format!("{} timestamp with time zone", quote(SOURCE_TS)));
        defs.push(format!("{} text", quote(OP)));
        defs.push("\"_cw_image\" boolean".into());
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {name} ({}) ON COMMIT DELETE ROWS",
            defs.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(conn)
            .await
            .context("create staging table")?;
        Ok(Self { name, width })
    }

    /// `COPY` of `landed`'s rows (its columns in order, then [`STAGE_EXTRA`]).
    pub fn copy_statement(&self, landed: &Landed) -> String {
        debug_assert!(landed.columns.len() <= self.width);
        let data: Vec<String> = (1..=landed.columns.len())
            .map(|i| format!("c{i}"))
            .collect();
        format!(
            "COPY {} ({}, {STAGE_EXTRA}) FROM STDIN",
            self.name,
            data.join(", ")
        )
    }

    /// The staged value of `landed`'s column `index`, typed (`s.c3::numeric`).
    pub fn value(&self, landed: &Landed, index: usize, alias: &str) -> String {
        let prefix = if alias.is_empty() {
            String::new()
        } else {
            format!("{alias}.")
        };
        format!(
            "{prefix}c{}::{}",
            index + 1,
            unconstrained(&pg_type(&landed.columns[index].ty))
        )
    }

    /// Every staged column of `landed`, typed, in order.
    pub fn values(&self, landed: &Landed, alias: &str) -> String {
        (0..landed.columns.len())
            .map(|i| self.value(landed, i, alias))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `t.k = s.c1::integer AND …` over the key.
    pub fn key_match(&self, landed: &Landed) -> String {
        landed
            .key
            .iter()
            .map(|&i| {
                format!(
                    "t.{} = {}",
                    landed.columns[i].ident,
                    self.value(landed, i, "s")
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Empties the table inside the transaction. (`TRUNCATE` of a table created in an
    /// earlier transaction writes a new file and a catalog row; the commit empties it
    /// in place.)
    pub fn clear(&self) -> String {
        format!("DELETE FROM {}", self.name)
    }
}

/// A type without its modifiers (`character varying(20)` → `character varying`): an
/// explicit cast to a length-limited type would cut an overlong value silently, where
/// the insert's own assignment to the column refuses it (and the row is dead-lettered).
fn unconstrained(ty: &str) -> String {
    let mut out = String::with_capacity(ty.len());
    let mut depth = 0;
    for ch in ty.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The statements that merge a filled staging table into the landing table.
pub fn merge_statements(landed: &Landed, stage: &Stage, merge: Merge) -> Vec<String> {
    let t = &landed.table;
    let values = stage.values(landed, "");
    let key_match = stage.key_match(landed);
    let stage = &stage.name;
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
    match merge {
        Merge::Snapshot => vec![format!(
            "INSERT INTO {t} AS t ({cols}, {op}) SELECT {values}, 'r' FROM {stage}
             ON CONFLICT ({key}) DO UPDATE SET {}, {op} = 'r', {updated} = now(), {deleted} = false, {deleted_at} = NULL
             WHERE {changed}",
            set_cols.join(", ")
        )],
        Merge::Changes(strategy) => {
            let upsert = format!(
                "INSERT INTO {t} AS t ({cols}, {ts}, {op}) SELECT {values}, {ts}, {op} FROM {stage} WHERE {op} <> 'd'
                 ON CONFLICT ({key}) DO UPDATE SET {}, {ts} = EXCLUDED.{ts}, {op} = EXCLUDED.{op},
                    {updated} = now(), {version} = t.{version} + 1, {deleted} = false, {deleted_at} = NULL
                 WHERE {changed}",
                set_cols.join(", ")
            );
            match strategy {
                DeletionStrategy::Hard => vec![
                    upsert,
                    format!("DELETE FROM {t} AS t USING {stage} AS s WHERE s.{op} = 'd' AND {key_match}"),
                ],
                DeletionStrategy::Soft => vec![
                    upsert,
                    format!(
                        "UPDATE {t} AS t SET {deleted} = true, {deleted_at} = now(), {op} = 'd', {ts} = s.{ts},
                            {updated} = now(), {version} = t.{version} + 1
                         FROM {stage} AS s WHERE s.{op} = 'd' AND {key_match} AND NOT t.{deleted}"
                    ),
                    // A delete of a row we never had still leaves a tombstone when the
                    // source sent its image.
                    format!(
                        "INSERT INTO {t} ({cols}, {ts}, {op}, {deleted}, {deleted_at})
                         SELECT {values}, {ts}, 'd', true, now() FROM {stage} WHERE {op} = 'd' AND \"_cw_image\"
                         ON CONFLICT ({key}) DO NOTHING"
                    ),
                ],
            }
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

/// Runs `statements` (and the COPY before them) as one unit under a savepoint. Returns
/// `Ok(Err(e))` for a row-level data error after rolling the unit back, so the caller can
/// retry row by row; other errors abort.
pub async fn unit(
    conn: &mut PgConnection,
    copy_statement: &str,
    data: &[u8],
    statements: &[String],
) -> Result<Result<(), crate::error::SinkError>> {
    run(conn, "SAVEPOINT cw_unit").await?;
    let result = async {
        copy(conn, copy_statement, data).await?;
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

#[cfg(test)]
mod tests {
    use super::unconstrained;

    #[test]
    fn casts_drop_type_modifiers_so_the_column_checks_lengths() {
        for (ty, cast) in [
            ("character varying(20)", "character varying"),
            ("numeric(10,2)", "numeric"),
            ("timestamp(3) with time zone", "timestamp with time zone"),
            ("bit varying(8)", "bit varying"),
            ("character varying(20)[]", "character varying[]"),
            ("jsonb", "jsonb"),
            ("double precision", "double precision"),
        ] {
            assert_eq!(unconstrained(ty), cast, "{ty}");
        }
    }
}
