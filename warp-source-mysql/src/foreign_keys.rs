//! Foreign-key actions. InnoDB performs `ON DELETE CASCADE / SET NULL` and `ON UPDATE
//! CASCADE / SET NULL` itself and logs only the parent's row event, so the binlog never
//! shows the children's changes. The feed reproduces them: after a parent row's delete or
//! key change it emits, for each child table it serves, a [`Cascade`] in the same
//! transaction, in log order with the child's own changes.
//!
//! A parent the replica does not replicate is read too, for its children alone. A chain
//! (`customers → orders → order_items`: the server deletes the items of the orders it
//! deleted) reaches the last table through the middle ones: the reader does not know
//! which middle rows were deleted, so the action names them by the parent's values
//! through each middle table ([`Hop`]), and the engine applies it once the middle tables
//! have (docs/mysql.md). What cannot be followed is named when the feed opens.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use warp_core::{
    Cascade, CascadeAction, Change, ChangeEvent, ColumnType, Hop, Operation, TableChange, Value,
};

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

/// A foreign key of a table (the child) on a parent table.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    /// The parent's database: the reader reads only its own.
    pub parent_database: String,
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

/// What `validate --check-connections` and `run --dry-run` say about `table`'s foreign
/// keys that cannot be reproduced (a parent in another database).
pub fn notes(table: &MysqlTable, database: &str) -> Vec<String> {
    table
        .foreign_keys
        .iter()
        .filter(|k| k.acts() && k.parent_database != database)
        .map(|k| {
            format!(
                "foreign key {}: its parent {}.{} is in another database, so the rows the \
                 server changes for it will not change at the destination (run verify)",
                k.name, k.parent_database, k.parent
            )
        })
        .collect()
}

/// Whether the server writes the rows its foreign-key actions change to the binlog
/// itself: MySQL 9.6+ handles foreign keys in the SQL layer by default
/// (`innodb_native_foreign_keys=OFF`) and logs the children's row events before the
/// parent's. InnoDB's own handling (MariaDB, MySQL before 9.6, or the variable ON) logs
/// only the parent's.
pub async fn server_logs_actions(conn: &mut Conn) -> Result<bool> {
    let native: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL VARIABLES LIKE 'innodb_native_foreign_keys'")
        .await
        .context("read innodb_native_foreign_keys")?;
    Ok(native.is_some_and(|(_, v)| v.eq_ignore_ascii_case("OFF") || v == "0"))
}

type FkRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// The foreign keys of `database`'s tables (or only `only`'s), by child table.
pub async fn read(
    conn: &mut Conn,
    database: &str,
    only: Option<&str>,
) -> Result<HashMap<String, Vec<ForeignKey>>> {
    let rows: Vec<FkRow> = conn
        .exec(
            "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA,
                    k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, rc.DELETE_RULE, rc.UPDATE_RULE
             FROM information_schema.KEY_COLUMN_USAGE k
             JOIN information_schema.REFERENTIAL_CONSTRAINTS rc
               ON rc.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND rc.CONSTRAINT_NAME = k.CONSTRAINT_NAME
              AND rc.TABLE_NAME = k.TABLE_NAME
             WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL
               AND (? IS NULL OR k.TABLE_NAME = ?)
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (database, only, only),
        )
        .await
        .context("read foreign keys")?;
    let mut out: HashMap<String, Vec<ForeignKey>> = HashMap::new();
    for (table, name, column, parent_database, parent, parent_column, on_delete, on_update) in rows
    {
        let keys = out.entry(table).or_default();
        match keys.last_mut().filter(|k| k.name == name) {
            Some(k) => {
                k.columns.push(column);
                k.parent_columns.push(parent_column);
            }
            None => keys.push(ForeignKey {
                name,
                columns: vec![column],
                parent_database,
                parent,
                parent_columns: vec![parent_column],
                on_delete: Action::parse(&on_delete),
                on_update: Action::parse(&on_update),
            }),
        }
    }
    Ok(out)
}

/// One foreign key the feed reproduces: a child of a parent the feed reads.
#[derive(Debug, Clone)]
struct Rule {
    child: usize,
    key: ForeignKey,
    /// Positions of the referenced columns in the parent's shape.
    parent_columns: Vec<usize>,
}

/// Tables a chain may pass through before the reader stops following it.
const MAX_CHAIN: usize = 8;

/// The rules of the tables one feed reads, by parent index.
#[derive(Debug, Default)]
pub struct Cascades {
    by_parent: HashMap<usize, Vec<Rule>>,
    /// Tables from this index on are parents read for their children alone: actions on
    /// them are not handed out, but chains go on through them.
    served_count: usize,
    names: Vec<String>,
    /// Each table's columns and types, by name.
    types: Vec<HashMap<String, ColumnType>>,
}

impl Cascades {
    /// The rules among `tables` (a feed's, by index; the first `served_count` served);
    /// what cannot be reproduced is logged, once per feed. None when the server logs the
    /// actions' rows itself (`logged`).
    pub fn among(tables: &[Option<MysqlTable>], served_count: usize, logged: bool) -> Self {
        if logged {
            return Self::default();
        }
        let index_of = |name: &str| {
            tables
                .iter()
                .position(|t| t.as_ref().is_some_and(|t| t.schema.id.name == name))
        };
        let mut by_parent: HashMap<usize, Vec<Rule>> = HashMap::new();
        // Parents read only for their children act too: a served child's rows deleted
        // through one (a chain) are found through its landing table once it streams;
        // leaving them out lost those actions while the middle table was copying.
        for (child, t) in tables.iter().enumerate() {
            let Some(t) = t else { continue };
            for key in t.foreign_keys.iter().filter(|k| k.acts()) {
                let same_database = key.parent_database == t.schema.id.database;
                let Some(parent) = index_of(&key.parent).filter(|_| same_database) else {
                    if child >= served_count {
                        continue;
                    }
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
        let names = tables
            .iter()
            .map(|t| {
                t.as_ref()
                    .map_or_else(String::new, |t| t.schema.id.name.clone())
            })
            .collect();
        let types = tables
            .iter()
            .map(|t| {
                t.iter()
                    .flat_map(|t| &t.schema.columns)
                    .map(|c| (c.name.clone(), c.column_type.clone()))
                    .collect()
            })
            .collect();
        let cascades = Self {
            by_parent,
            served_count,
            names,
            types,
        };
        cascades.name_unfollowed(tables);
        cascades
    }

    /// Chains the reader does not follow: through a table that references itself (its
    /// subtree is deleted too, by another key), or through a table it does not serve
    /// (no landing table to find the deleted rows in).
    fn name_unfollowed(&self, tables: &[Option<MysqlTable>]) {
        let name = |i: usize| tables[i].as_ref().map(|t| t.schema.id.to_string());
        for rules in self.by_parent.values() {
            for first in rules.iter().filter(|r| r.key.on_delete == Action::Cascade) {
                let next = self.by_parent.get(&first.child).into_iter().flatten();
                for second in next.filter(|r| r.key.on_delete != Action::None) {
                    if second.child == first.child && first.key.parent != second.key.parent {
                        tracing::warn!(
                            table = ?name(first.child), constraint = %second.key.name,
                            "rows deleted through {} are not followed down {}'s own tree \
                             (verify finds them)",
                            first.key.name, second.key.name
                        );
                    }
                }
            }
        }
    }

    /// The children's changes the server made for `change` of the table at `parent`:
    /// the direct children's, then, for deleted children, theirs (a chain), and so on.
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
            let self_referencing = rule.child == parent;
            let deletes = action == CascadeAction::Delete;
            let recursive_on =
                (self_referencing && deletes).then(|| rule.key.parent_columns.clone());
            let cascade = Cascade {
                constraint: rule.key.name.clone(),
                columns: rule.key.columns.clone(),
                matching: old,
                action,
                recursive_on,
                via: Vec::new(),
                source_ts: change.source_ts,
            };
            if deletes && !self_referencing {
                self.chain(rule, &cascade, &mut out);
            }
            if rule.child < self.served_count {
                out.push(TableChange {
                    table: rule.child,
                    change: Change::Cascade(cascade),
                });
            }
        }
        out
    }

    /// The types of `columns` of the table at `table` (foreign-key columns: they exist).
    fn types_of(&self, table: usize, columns: &[String]) -> Option<Vec<ColumnType>> {
        columns
            .iter()
            .map(|c| self.types[table].get(c).cloned())
            .collect()
    }

    /// The actions on the children of the rows `reached` deletes in `rule.child`, which
    /// the server performs through them: their rows are found through `rule.child`'s.
    fn chain(&self, rule: &Rule, reached: &Cascade, out: &mut Vec<TableChange>) {
        let middle = rule.child;
        if reached.via.len() >= MAX_CHAIN {
            return;
        }
        for next in self.by_parent.get(&middle).into_iter().flatten() {
            let action = match next.key.on_delete {
                Action::Cascade => CascadeAction::Delete,
                Action::SetNull => CascadeAction::SetNull,
                Action::None => continue,
            };
            let visited =
                |i: usize| i == middle || reached.via.iter().any(|h| h.table == self.names[i]);
            if visited(next.child) {
                continue;
            }
            let Some(types) = self.types_of(middle, &reached.columns) else {
                continue;
            };
            let mut via = reached.via.clone();
            via.push(Hop {
                table: self.names[middle].clone(),
                landed: None,
                columns: reached.columns.clone(),
                types,
                referenced: next.key.parent_columns.clone(),
            });
            let deletes = action == CascadeAction::Delete;
            let cascade = Cascade {
                constraint: next.key.name.clone(),
                columns: next.key.columns.clone(),
                matching: reached.matching.clone(),
                action,
                recursive_on: None,
                via,
                source_ts: reached.source_ts,
            };
            if deletes {
                self.chain(next, &cascade, out);
            }
            if next.child < self.served_count {
                out.push(TableChange {
                    table: next.child,
                    change: Change::Cascade(cascade),
                });
            }
        }
    }
}
