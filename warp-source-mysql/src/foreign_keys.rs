//! Foreign-key actions. InnoDB performs `ON DELETE CASCADE / SET NULL` and `ON UPDATE
//! CASCADE / SET NULL` itself and logs only the parent's row event, so the binlog never
//! shows the children's changes. The feed reproduces them: after a parent row's delete or
//! key change it emits, for each child table it serves, a [`Cascade`] in the same
//! transaction, in log order with the child's own changes.
//!
//! A parent the replica does not replicate is read too, for its children alone. What
//! cannot be reproduced is named when the feed opens: a parent the reader cannot read,
//! and rows a cascade reaches through another table (a chain: the rows of the middle
//! table that were deleted are not known to the binlog reader). `verify` finds what
//! either leaves behind.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use warp_core::{Cascade, CascadeAction, Change, ChangeEvent, Operation, TableChange, Value};

use crate::discover::MysqlTable;
use crate::error::{Context, Result};

/// What a foreign key does to the child's rows when the parent row changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cascade,
    SetNull,
    /// `RESTRICT` / `NO ACTION` (and `SET DEFAULT`, which InnoDB refuses to create):
    /// the server changes no child row.
    None,
}

impl Action {
    fn parse(rule: &str) -> Self {
        match rule.to_ascii_uppercase().as_str() {
            "CASCADE" => Self::Cascade,
            "SET NULL" => Self::SetNull,
            _ => Self::None,
        }
    }
}

/// A foreign key of a table (the child) on a parent table of the same database.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    pub on_delete: Action,
    pub on_update: Action,
}

impl ForeignKey {
    /// Whether the server changes child rows for it.
    pub fn acts(&self) -> bool {
        self.on_delete != Action::None || self.on_update != Action::None
    }
}

type FkRow = (String, String, String, String, String, String, String);

/// The foreign keys of `database`'s tables (or only `only`'s) on tables of the same
/// database, by child table.
pub async fn read(
    conn: &mut Conn,
    database: &str,
    only: Option<&str>,
) -> Result<HashMap<String, Vec<ForeignKey>>> {
    let rows: Vec<FkRow> = conn
        .exec(
            "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME,
                    k.REFERENCED_COLUMN_NAME, rc.DELETE_RULE, rc.UPDATE_RULE
             FROM information_schema.KEY_COLUMN_USAGE k
             JOIN information_schema.REFERENTIAL_CONSTRAINTS rc
               ON rc.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND rc.CONSTRAINT_NAME = k.CONSTRAINT_NAME
              AND rc.TABLE_NAME = k.TABLE_NAME
             WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_SCHEMA = ?
               AND (? IS NULL OR k.TABLE_NAME = ?)
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (database, database, only, only),
        )
        .await
        .context("read foreign keys")?;
    let mut out: HashMap<String, Vec<ForeignKey>> = HashMap::new();
    for (table, name, column, parent, parent_column, on_delete, on_update) in rows {
        let keys = out.entry(table).or_default();
        match keys.last_mut().filter(|k| k.name == name) {
            Some(k) => {
                k.columns.push(column);
                k.parent_columns.push(parent_column);
            }
            None => keys.push(ForeignKey {
                name,
                columns: vec![column],
                parent,
                parent_columns: vec![parent_column],
                on_delete: Action::parse(&on_delete),
                on_update: Action::parse(&on_update),
            }),
        }
    }
    Ok(out)
}

/// One foreign key the feed reproduces: a served child of a served parent.
#[derive(Debug, Clone)]
struct Rule {
    child: usize,
    key: ForeignKey,
    /// Positions of the referenced columns in the parent's shape.
    parent_columns: Vec<usize>,
}

/// The rules of the tables one feed serves, by parent index.
#[derive(Debug, Default)]
pub struct Cascades {
    by_parent: HashMap<usize, Vec<Rule>>,
}

impl Cascades {
    /// The rules among `tables` (a feed's, by index); what cannot be reproduced is
    /// logged, once per feed.
    pub fn among(tables: &[Option<MysqlTable>]) -> Self {
        let served = |name: &str| {
            tables
                .iter()
                .position(|t| t.as_ref().is_some_and(|t| t.schema.id.name == name))
        };
        let mut by_parent: HashMap<usize, Vec<Rule>> = HashMap::new();
        for (child, t) in tables.iter().enumerate() {
            let Some(t) = t else { continue };
            for key in t.foreign_keys.iter().filter(|k| k.acts()) {
                let Some(parent) = served(&key.parent) else {
                    tracing::warn!(
                        table = %t.schema.id, constraint = %key.name, parent = %key.parent,
                        "foreign key with ON DELETE/UPDATE actions on a table the reader cannot \
                         read: the rows the server changes for it will not change at the \
                         destination (run verify)"
                    );
                    continue;
                };
                let Some(parent_columns) = tables[parent].as_ref().and_then(|p| {
                    key.parent_columns
                        .iter()
                        .map(|c| p.schema.column_index(c))
                        .collect::<Option<Vec<_>>>()
                }) else {
                    continue;
                };
                by_parent.entry(parent).or_default().push(Rule {
                    child,
                    key: key.clone(),
                    parent_columns,
                });
            }
        }
        let cascades = Self { by_parent };
        cascades.name_chains(tables);
        cascades
    }

    /// Rows deleted in a middle table by a cascade are unknown to the reader, so their
    /// own children are not reached.
    fn name_chains(&self, tables: &[Option<MysqlTable>]) {
        let name = |i: usize| tables[i].as_ref().map(|t| t.schema.id.to_string());
        for (parent, rules) in &self.by_parent {
            for first in rules.iter().filter(|r| r.child != *parent) {
                let next = self.by_parent.get(&first.child).into_iter().flatten();
                for second in next.filter(|r| r.child != first.child) {
                    if first.key.on_delete == Action::Cascade
                        && second.key.on_delete != Action::None
                    {
                        tracing::warn!(
                            from = ?name(*parent), through = ?name(first.child), to = ?name(second.child),
                            "a chain of ON DELETE actions: rows of the last table reached through the \
                             middle one are not changed at the destination (verify finds them)"
                        );
                    }
                }
            }
        }
    }

    /// The children's changes the server made for `change` of the table at `parent`.
    pub fn of(&self, parent: usize, change: &ChangeEvent) -> Vec<TableChange> {
        let Some(rules) = self.by_parent.get(&parent) else {
            return Vec::new();
        };
        let Some(before) = &change.before else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for rule in rules {
            let old: Vec<Value> = rule
                .parent_columns
                .iter()
                .map(|&i| before.values[i].clone())
                .collect();
            // A null referenced value has no children.
            if old.iter().any(Value::is_null) {
                continue;
            }
            let action = match (change.op, &change.after) {
                (Operation::Delete, _) => match rule.key.on_delete {
                    Action::Cascade => CascadeAction::Delete,
                    Action::SetNull => CascadeAction::SetNull,
                    Action::None => continue,
                },
                (Operation::Update, Some(after)) => {
                    let new: Vec<Value> = rule
                        .parent_columns
                        .iter()
                        .map(|&i| after.values[i].clone())
                        .collect();
                    if new == old {
                        continue;
                    }
                    match rule.key.on_update {
                        Action::Cascade => CascadeAction::Set(new),
                        Action::SetNull => CascadeAction::SetNull,
                        Action::None => continue,
                    }
                }
                _ => continue,
            };
            let recursive_on = (rule.child == parent && action == CascadeAction::Delete)
                .then(|| rule.key.parent_columns.clone());
            out.push(TableChange {
                table: rule.child,
                change: Change::Cascade(Cascade {
                    constraint: rule.key.name.clone(),
                    columns: rule.key.columns.clone(),
                    matching: old,
                    action,
                    recursive_on,
                    source_ts: change.source_ts,
                }),
            });
        }
        out
    }
}
