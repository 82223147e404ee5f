//! DDL read from the binlog: what a statement does to the served tables it names, learnt
//! from the catalog, becomes schema changes, truncates, or a stop with the reason.

use std::sync::PoisonError;

use warp_core::{Change, TableChange};

use super::Reader;
use crate::ddl::{self as shape, Scope};
use crate::ddl_scope::{self, Effect};
use crate::discover::{self, MysqlTable};
use crate::error::Context;

impl Reader {
    /// A DDL statement: the changes it makes to the served tables it names, from the
    /// catalog; true when it touched one (the statement is then a commit of its own).
    pub(super) async fn ddl(&mut self, default_db: &str, sql: &str) -> warp_core::Result<bool> {
        let names = self.served.names;
        let effects: Vec<(usize, Effect)> = if ddl_scope::drops_database(sql, &self.database, names)
        {
            (self.served.live().into_iter())
                .map(|i| (i, Effect::Dropped))
                .collect()
        } else {
            match ddl_scope::effects(sql, default_db, &self.database, names) {
                Some(effects) => (effects.iter())
                    .filter_map(|(name, effect)| Some((self.served.find(name)?, *effect)))
                    .collect(),
                None => self.mentioned(default_db, sql),
            }
        };
        for &(index, effect) in &effects {
            self.apply_ddl(index, effect, sql).await?;
        }
        Ok(!effects.is_empty())
    }

    /// A statement the parser does not read: every served table it mentions is looked up
    /// in the catalog again (a guess never drops or truncates a table).
    fn mentioned(&self, default_db: &str, sql: &str) -> Vec<(usize, Effect)> {
        let lower = sql.to_ascii_lowercase();
        let db = self.database.to_ascii_lowercase();
        let right_db = self.served.names.same(default_db, &self.database)
            || lower.contains(&format!("{db}."))
            || lower.contains(&format!("`{db}`."));
        let verb = lower.split_whitespace().next().unwrap_or("");
        if !right_db || !matches!(verb, "truncate" | "drop" | "alter" | "rename" | "create") {
            return Vec::new();
        }
        tracing::debug!(statement = %sql, "DDL not parsed; looking up the tables it names");
        (self.served.tables.iter().enumerate())
            .filter_map(|(i, t)| Some((i, t.as_ref()?)))
            .filter(|(_, t)| mentions(&lower, &t.schema.id.name))
            .map(|(i, _)| (i, Effect::Reshaped))
            .collect()
    }

    /// Applies one statement's effect on the served table at `index`.
    async fn apply_ddl(
        &mut self,
        index: usize,
        effect: Effect,
        sql: &str,
    ) -> warp_core::Result<()> {
        let Some(table) = self.served.tables[index].clone() else {
            return Ok(());
        };
        let id = table.schema.id.to_string();
        let parent_only = self.served.is_parent_only(index);
        match effect {
            // (InnoDB refuses to truncate a table other tables reference.)
            Effect::Truncated if parent_only => {}
            Effect::Truncated => self.txn.pending.push(TableChange {
                table: index,
                change: Change::Truncate,
            }),
            Effect::RowsUnlogged => {
                let statement: String = sql.chars().take(200).collect();
                self.fail(
                    index,
                    warp_core::Error::source_permanent(
                        format!("{id}: `{statement}` added or removed rows without row events in the binlog; the copy can no longer follow it"),
                        Some("resync the table (cartridge-warp resync)".to_owned()),
                    ),
                )
            }
            Effect::Dropped if parent_only => self.fail(
                index,
                warp_core::Error::source_permanent(
                    format!("{id} was dropped at the source"),
                    Some("remove it from the whitelist, or re-create it and resync".to_owned()),
                ),
            ),
            // Its rows are gone: the landing table is emptied and the table copied again
            // once it exists (a reload's `CREATE TABLE`); until then the copy retries
            // (error 1146 is transient).
            Effect::Dropped => self.fail(
                index,
                warp_core::Error::Replaced {
                    table: id,
                    how: "dropped".to_owned(),
                },
            ),
            Effect::Reshaped | Effect::Replaced => {
                let scope = if effect == Effect::Replaced {
                    Scope::Whole
                } else {
                    Scope::Named
                };
                self.reshape(index, table, scope, sql).await?;
            }
        }
        self.served.refresh_cascades();
        Ok(())
    }

    /// A statement that may have changed the table at `index`: its shape is read from
    /// the catalog again and the difference becomes schema changes.
    async fn reshape(
        &mut self,
        index: usize,
        table: MysqlTable,
        scope: Scope,
        sql: &str,
    ) -> warp_core::Result<()> {
        let id = table.schema.id.to_string();
        let mut conn = self.pool.get_conn().await.context("connect")?;
        let fresh =
            discover::tables(&mut conn, &self.database, Some(&table.schema.id.name)).await?;
        let Some(fresh) = fresh.into_iter().next() else {
            self.fail(
                index,
                warp_core::Error::source_permanent(
                    format!("{id} no longer exists at the source (renamed or dropped)"),
                    Some(
                        "re-create it or add the new name to the configuration, then resync"
                            .to_owned(),
                    ),
                ),
            );
            return Ok(());
        };
        (self.learnt.lock().unwrap_or_else(PoisonError::into_inner))
            .insert(fresh.schema.id.name.clone(), fresh.clone());
        let foreign_keys = fresh.foreign_keys.clone();
        let fresh_key = fresh.schema.primary_key.clone();
        let (mut merged, changes) = shape::diff(&table, fresh, sql, scope);
        merged.foreign_keys = foreign_keys;
        // Checked only for a statement about keys (or a swap): when the reader is behind,
        // the catalog may hold a later statement's key.
        let about_keys = scope == Scope::Whole || sql.to_ascii_lowercase().contains("primary");
        if about_keys && !same_columns(&merged.schema.primary_key, &fresh_key) {
            let statement: String = sql.chars().take(200).collect();
            self.fail(
                index,
                warp_core::Error::source_permanent(
                    format!(
                        "{id}: `{statement}` changed the primary key from ({}) to ({}): rows can no longer be keyed as at the source",
                        merged.schema.primary_key.join(", "),
                        fresh_key.join(", ")
                    ),
                    Some("the landing table keeps its old key: drop it (or rename it away) at the destination, then resync the table (cartridge-warp resync)".to_owned()),
                ),
            );
            return Ok(());
        }
        self.served.tables[index] = Some(merged);
        if !self.served.is_parent_only(index) {
            (self.txn.pending).extend(changes.into_iter().map(|c| TableChange {
                table: index,
                change: Change::Schema(c),
            }));
        }
        Ok(())
    }
}

/// Whether a lowercased statement names `table` (quoted, or as a whole word).
fn mentions(lower: &str, table: &str) -> bool {
    let name = table.to_ascii_lowercase();
    lower.contains(&format!("`{name}`"))
        || lower
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|w| w == name)
}

/// Whether two column lists name the same columns in the same order (MySQL compares
/// column names without case).
fn same_columns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}
