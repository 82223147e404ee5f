//! Turning a table's new catalog shape into schema changes, keeping row positions
//! stable: renamed columns keep their place, dropped ones stay (as NULL), new ones are
//! appended.

use warp_core::SchemaChange;

use crate::discover::MysqlTable;
use crate::types::{Kind, MysqlColumn};

/// `RENAME COLUMN a TO b` / `CHANGE [COLUMN] a b …` pairs in a DDL statement.
fn renames(sql: &str) -> Vec<(String, String)> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('`').to_owned())
        .collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for i in 0..words.len() {
        match lower[i].as_str() {
            "rename"
                if lower.get(i + 1).is_some_and(|w| w == "column")
                    && lower.get(i + 3).is_some_and(|w| w == "to") =>
            {
                if let (Some(a), Some(b)) = (words.get(i + 2), words.get(i + 4)) {
                    out.push((a.clone(), b.clone()));
                }
            }
            "change" => {
                let skip = usize::from(lower.get(i + 1).is_some_and(|w| w == "column"));
                if let (Some(a), Some(b)) = (words.get(i + 1 + skip), words.get(i + 2 + skip)) {
                    if a != b {
                        out.push((a.clone(), b.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether the statement names `column` (bare or backticked, any case).
fn mentions(sql: &str, column: &str) -> bool {
    let column = column.to_ascii_lowercase();
    sql.to_ascii_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .any(|w| w == column)
}

/// Which columns a statement may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the columns it names: the catalog may already reflect later statements when
    /// the reader is behind, and those are applied when their own events arrive.
    Named,
    /// Every column: another table took this one's name (an online schema change's
    /// swap), so its whole shape is new and the statement names none of its columns.
    Whole,
}

/// The merged shape (old positions kept) and the changes `sql` makes to `old`.
pub fn diff(
    old: &MysqlTable,
    fresh: MysqlTable,
    sql: &str,
    scope: Scope,
) -> (MysqlTable, Vec<SchemaChange>) {
    let renamed = renames(sql);
    let mentions = |sql: &str, column: &str| scope == Scope::Whole || mentions(sql, column);
    let mut merged = old.clone();
    let mut changes = Vec::new();
    let find = |name: &str| {
        fresh
            .schema
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    };
    for i in 0..old.columns.len() {
        let name = old.columns[i].name.clone();
        let new_name = renamed
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&name))
            .map(|(_, b)| b.clone())
            // The statement is the log's word for what happened at this position, even
            // when the catalog already holds a later statement's work (a second rename).
            .filter(|b| old.schema.column_index(b).is_none());
        let current = match &new_name {
            Some(b) => {
                changes.push(SchemaChange::RenameColumn {
                    from: name.clone(),
                    to: b.clone(),
                });
                b.clone()
            }
            None => name.clone(),
        };
        if new_name.is_none() && !mentions(sql, &name) {
            continue;
        }
        match find(&current) {
            Some(j) => {
                let (col, my) = (&fresh.schema.columns[j], &fresh.columns[j]);
                merged.schema.columns[i].name.clone_from(&col.name);
                merged.columns[i].name.clone_from(&col.name);
                if col.column_type != old.schema.columns[i].column_type {
                    changes.push(SchemaChange::AlterColumnType {
                        name: col.name.clone(),
                        to: col.column_type.clone(),
                    });
                    merged.schema.columns[i].column_type = col.column_type.clone();
                }
                merged.columns[i] = my.clone();
                merged.schema.columns[i].default.clone_from(&col.default);
            }
            // Renamed again by a later statement: that one says what it became.
            None if new_name.is_some() => {
                merged.schema.columns[i].name.clone_from(&current);
                merged.columns[i].name.clone_from(&current);
            }
            None if !is_ghost(&old.columns[i]) => {
                changes.push(SchemaChange::DropColumn { name: name.clone() });
                merged.schema.columns[i].nullable = true;
                merged.columns[i] = ghost(&name);
            }
            None => {}
        }
    }
    for (j, col) in fresh.schema.columns.iter().enumerate() {
        if merged.schema.column_index(&col.name).is_none() && mentions(sql, &col.name) {
            changes.push(SchemaChange::AddColumn(col.clone()));
            merged.schema.columns.push(col.clone());
            merged.columns.push(fresh.columns[j].clone());
        }
    }
    for change in &changes {
        if let SchemaChange::RenameColumn { from, to } = change {
            for k in &mut merged.schema.primary_key {
                if k == from {
                    k.clone_from(to);
                }
            }
        }
    }
    (merged, changes)
}

/// A column dropped at the source: kept at the destination, never sent again.
fn ghost(name: &str) -> MysqlColumn {
    MysqlColumn {
        name: name.to_owned(),
        kind: Kind::Dropped,
        column_type: warp_core::ColumnType::Bytes,
    }
}

fn is_ghost(c: &MysqlColumn) -> bool {
    c.kind == Kind::Dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp_core::{Column, ColumnType, TableId, TableSchema};

    fn table(cols: &[(&str, &str)]) -> MysqlTable {
        let mut t = MysqlTable {
            foreign_keys: Vec::new(),
            schema: TableSchema {
                id: TableId::new("d", "t"),
                columns: vec![],
                primary_key: vec!["id".into()],
            },
            columns: vec![],
            transactional: true,
        };
        for (name, ty) in cols {
            let (kind, column_type) = crate::types::map(ty).unwrap();
            t.schema
                .columns
                .push(Column::new(*name, column_type.clone()));
            t.columns.push(MysqlColumn {
                name: (*name).into(),
                kind,
                column_type,
            });
        }
        t
    }

    #[test]
    fn rename_add_drop_widen() {
        let old = table(&[
            ("id", "int(11)"),
            ("name", "varchar(10)"),
            ("legacy", "int(11)"),
        ]);
        let fresh = table(&[
            ("id", "bigint(20)"),
            ("title", "varchar(10)"),
            ("extra", "int(11)"),
        ]);
        let (merged, changes) = diff(&old, fresh, "ALTER TABLE t MODIFY id BIGINT, RENAME COLUMN `name` TO `title`, DROP legacy, ADD extra INT", Scope::Named);
        assert_eq!(
            changes,
            vec![
                SchemaChange::AlterColumnType {
                    name: "id".into(),
                    to: ColumnType::Int64
                },
                SchemaChange::RenameColumn {
                    from: "name".into(),
                    to: "title".into()
                },
                SchemaChange::DropColumn {
                    name: "legacy".into()
                },
                SchemaChange::AddColumn(Column::new("extra", ColumnType::Int32)),
            ]
        );
        let names: Vec<_> = merged
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["id", "title", "legacy", "extra"],
            "positions are stable"
        );
    }

    #[test]
    fn only_what_the_statement_names_changes() {
        // The catalog already has both the added and the renamed column.
        let old = table(&[("id", "int(11)"), ("name", "varchar(10)")]);
        let fresh = table(&[
            ("id", "int(11)"),
            ("title", "varchar(10)"),
            ("status", "varchar(8)"),
        ]);
        let (merged, changes) = diff(
            &old,
            fresh.clone(),
            "ALTER TABLE t ADD COLUMN status VARCHAR(8)",
            Scope::Named,
        );
        assert_eq!(
            changes,
            vec![SchemaChange::AddColumn(Column::new(
                "status",
                ColumnType::Text { max_len: Some(8) }
            ))]
        );
        let (_, changes) = diff(
            &merged,
            fresh,
            "ALTER TABLE t RENAME COLUMN name TO title",
            Scope::Named,
        );
        assert_eq!(
            changes,
            vec![SchemaChange::RenameColumn {
                from: "name".into(),
                to: "title".into()
            }]
        );
    }

    /// Replayed after a restart: the catalog already holds the second rename when the
    /// first one is read. Each statement renames what it names, in log order; nothing is
    /// dropped or added on the way.
    #[test]
    fn renames_replay_in_log_order_behind_the_catalog() {
        let old = table(&[("id", "int(11)"), ("email", "varchar(40)")]);
        let fresh = table(&[("id", "int(11)"), ("mail", "varchar(40)")]);
        let (merged, changes) = diff(
            &old,
            fresh.clone(),
            "ALTER TABLE t RENAME COLUMN email TO contact",
            Scope::Named,
        );
        let rename = |from: &str, to: &str| SchemaChange::RenameColumn {
            from: from.into(),
            to: to.into(),
        };
        assert_eq!(changes, vec![rename("email", "contact")]);
        assert_eq!(merged.columns[1].name, "contact");
        assert_eq!(merged.columns[1].kind, old.columns[1].kind, "kind kept");
        let (merged, changes) = diff(
            &merged,
            fresh,
            "ALTER TABLE t CHANGE contact mail VARCHAR(40)",
            Scope::Named,
        );
        assert_eq!(changes, vec![rename("contact", "mail")]);
        assert_eq!(merged.schema.columns[1].name, "mail");
    }

    #[test]
    fn change_column_syntax() {
        assert_eq!(
            renames("ALTER TABLE t CHANGE COLUMN a b INT"),
            [("a".to_owned(), "b".to_owned())]
        );
        assert_eq!(
            renames("alter table t change `x` `y` int"),
            [("x".to_owned(), "y".to_owned())]
        );
        assert!(renames("ALTER TABLE t CHANGE a a BIGINT").is_empty());
    }
}
