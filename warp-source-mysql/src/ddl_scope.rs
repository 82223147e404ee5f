//! Which tables a DDL statement from the binlog touches, and how: parsed with
//! `sqlparser`'s MySQL dialect, names resolved against the statement's own default
//! database (the Query event's, as `USE` left it), so `ALTER TABLE other.t` from a
//! session in our schema is not taken for ours. A statement the parser does not read
//! falls back to naming any served table it mentions, which only makes the reader look
//! the table up in the catalog again (never drop or truncate it on a guess).

use sqlparser::ast::{AlterTableOperation, ObjectName, ObjectType, RenameTableNameKind, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// What a statement does to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Its shape may have changed, or it may be gone or new (renames, creation): the
    /// catalog says which, for the columns the statement names.
    Reshaped,
    /// Another table took its name (`RENAME TABLE x TO t`, an online schema change's
    /// swap): its whole shape is the other table's.
    Replaced,
    Truncated,
    /// Partition maintenance that removes or adds rows without logging them as row
    /// events (`DROP`/`TRUNCATE`/`EXCHANGE`/`CONVERT PARTITION`): the table cannot follow.
    RowsUnlogged,
    Dropped,
}

/// How the server compares database and table names (`lower_case_table_names`): 0
/// (Linux's default) keeps them case-sensitive, 1 and 2 compare them without case. The
/// row path and the DDL path both follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCase {
    Sensitive,
    Folded,
}

impl NameCase {
    /// From the server's `@@lower_case_table_names`.
    pub fn from_setting(value: u8) -> Self {
        if value == 0 {
            Self::Sensitive
        } else {
            Self::Folded
        }
    }

    /// The form names are compared in.
    pub fn key(self, name: &str) -> String {
        match self {
            Self::Sensitive => name.to_owned(),
            Self::Folded => name.to_lowercase(),
        }
    }

    pub fn same(self, a: &str, b: &str) -> bool {
        self.key(a) == self.key(b)
    }
}

/// The tables of `database` that `sql` touches (names as written), with the effect on
/// each. `None`: the parser does not read this statement.
pub fn effects(
    sql: &str,
    default_db: &str,
    database: &str,
    case: NameCase,
) -> Option<Vec<(String, Effect)>> {
    if let Some(effect) = partition_maintenance(sql) {
        return Some(
            tables_after_table_keywords(sql)
                .filter_map(|name| resolve(&name, default_db, database, case))
                .map(|table| (table, effect))
                .collect(),
        );
    }
    let statements = Parser::parse_sql(&MySqlDialect {}, sql).ok()?;
    let mut out = Vec::new();
    let mut add = |name: &ObjectName, effect: Effect| {
        if let Some(table) = ours(name, default_db, database, case) {
            out.push((table, effect));
        }
    };
    for statement in &statements {
        match statement {
            Statement::Truncate { table_names, .. } => {
                for t in table_names {
                    add(&t.name, Effect::Truncated);
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                temporary: false,
                ..
            } => {
                for name in names {
                    add(name, Effect::Dropped);
                }
            }
            Statement::Drop {
                object_type: ObjectType::Index,
                table: Some(table),
                ..
            } => add(table, Effect::Reshaped),
            Statement::AlterTable {
                name, operations, ..
            } => {
                add(name, Effect::Reshaped);
                for op in operations {
                    if let AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
                    } = op
                    {
                        add(to, Effect::Replaced);
                    }
                }
            }
            Statement::RenameTable(renames) => {
                for r in renames {
                    add(&r.old_name, Effect::Reshaped);
                    add(&r.new_name, Effect::Replaced);
                }
            }
            Statement::CreateTable(create) if !create.temporary => {
                add(&create.name, Effect::Reshaped)
            }
            Statement::CreateIndex(index) => add(&index.table_name, Effect::Reshaped),
            _ => {}
        }
    }
    // One effect per table, the strongest (the later variant): a table both renamed away
    // and replaced in one statement (a swap) is replaced.
    let mut merged: Vec<(String, Effect)> = Vec::new();
    for (table, effect) in out {
        match merged.iter_mut().find(|(t, _)| *t == table) {
            Some((_, e)) => *e = (*e).max(effect),
            None => merged.push((table, effect)),
        }
    }
    Some(merged)
}

/// The statement's words, split where SQL separates them.
fn tokens(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';'))
        .filter(|w| !w.is_empty())
}

/// Whether `sql` is `DROP DATABASE` (or `SCHEMA`) of `database`: every table in it is
/// gone, with no statement naming them.
pub fn drops_database(sql: &str, database: &str, case: NameCase) -> bool {
    let Ok(statements) = Parser::parse_sql(&MySqlDialect {}, sql) else {
        return false;
    };
    statements.iter().any(|statement| match statement {
        Statement::Drop {
            object_type: ObjectType::Database | ObjectType::Schema,
            names,
            ..
        } => names.iter().any(|name| {
            name.0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| case.same(&i.value, database))
        }),
        _ => false,
    })
}

/// What an `ALTER TABLE … PARTITION` statement does to rows the binlog does not show.
/// `REORGANIZE`, `COALESCE`, `ADD`, `REBUILD`, `REMOVE PARTITIONING` and the maintenance
/// verbs move rows between partitions only: a table that is not partitioned at the
/// destination sees no change, so they are left to the parser (nothing to do).
fn partition_maintenance(sql: &str) -> Option<Effect> {
    let words: Vec<String> = tokens(sql).map(str::to_ascii_lowercase).collect();
    if words.first().map(String::as_str) != Some("alter") {
        return None;
    }
    let pairs = || words.windows(2).map(|w| (w[0].as_str(), w[1].as_str()));
    // `TRUNCATE PARTITION ALL` empties the table: a truncate like any other.
    if words
        .windows(3)
        .any(|w| w[0] == "truncate" && w[1] == "partition" && w[2] == "all")
    {
        return Some(Effect::Truncated);
    }
    pairs()
        .any(|pair| {
            matches!(
                pair,
                (
                    "drop" | "truncate" | "exchange" | "convert" | "to",
                    "partition"
                )
            )
        })
        .then_some(Effect::RowsUnlogged)
}

/// Each name that follows a `TABLE` keyword (`ALTER TABLE a … WITH TABLE b`).
fn tables_after_table_keywords(sql: &str) -> impl Iterator<Item = String> {
    let words: Vec<&str> = tokens(sql).collect();
    let names: Vec<String> = words
        .windows(2)
        .filter(|w| w[0].eq_ignore_ascii_case("table"))
        .map(|w| w[1].to_owned())
        .collect();
    names.into_iter()
}

/// A written name (`t`, `db.t`, `` `db`.`t` ``) → the table's name when it is in `database`.
fn resolve(written: &str, default_db: &str, database: &str, case: NameCase) -> Option<String> {
    let parts: Vec<&str> = written.split('.').map(|p| p.trim_matches('`')).collect();
    in_database(&parts, default_db, database, case)
}

/// `[table]` or `[db, table]` → the table's name when it is in `database`.
fn in_database(parts: &[&str], default_db: &str, database: &str, case: NameCase) -> Option<String> {
    let (db, table) = match parts {
        [table] => (default_db, *table),
        [db, table] => (*db, *table),
        _ => return None,
    };
    case.same(db, database).then(|| (*table).to_owned())
}

/// The table's name when `name` resolves into `database`.
fn ours(name: &ObjectName, default_db: &str, database: &str, case: NameCase) -> Option<String> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.as_str()))
        .collect::<Option<_>>()?;
    in_database(&parts, default_db, database, case)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str, default_db: &str) -> Vec<(String, Effect)> {
        effects(sql, default_db, "shop", NameCase::Sensitive).expect("parsed")
    }

    fn one(table: &str, effect: Effect) -> Vec<(String, Effect)> {
        vec![(table.to_owned(), effect)]
    }

    #[test]
    fn names_resolve_against_the_statement_default_database() {
        assert_eq!(
            of("ALTER TABLE orders ADD COLUMN x INT", "shop"),
            one("orders", Effect::Reshaped)
        );
        // A session in our schema changing another schema's table of the same name.
        assert_eq!(of("DROP TABLE other.orders", "shop"), vec![]);
        assert_eq!(of("ALTER TABLE orders ADD COLUMN x INT", "other"), vec![]);
        assert_eq!(
            of("ALTER TABLE `shop`.`orders` DROP COLUMN x", "other"),
            one("orders", Effect::Reshaped)
        );
        // Under lower_case_table_names=0 `SHOP` is another database; under 1 or 2, ours.
        assert_eq!(of("TRUNCATE TABLE SHOP.orders", "mysql"), vec![]);
        assert_eq!(
            effects(
                "TRUNCATE TABLE SHOP.orders",
                "mysql",
                "shop",
                NameCase::Folded
            )
            .unwrap(),
            one("orders", Effect::Truncated)
        );
    }

    #[test]
    fn each_kind_of_statement_has_its_effect() {
        assert_eq!(
            of("DROP TABLE IF EXISTS orders, other.items, payments", "shop"),
            vec![
                ("orders".to_owned(), Effect::Dropped),
                ("payments".to_owned(), Effect::Dropped)
            ]
        );
        assert_eq!(of("DROP TEMPORARY TABLE orders", "shop"), vec![]);
        assert_eq!(of("DROP VIEW orders_view", "shop"), vec![]);
        assert_eq!(
            of("CREATE TABLE copy LIKE orders", "shop"),
            one("copy", Effect::Reshaped)
        );
        assert_eq!(
            of("CREATE INDEX ix ON orders (a)", "shop"),
            one("orders", Effect::Reshaped)
        );
        // gh-ost's cut-over swaps the ghost table in: both names are looked up again.
        assert_eq!(
            of("RENAME TABLE `shop`.`orders` TO `shop`.`_orders_del`, `shop`.`_orders_gho` TO `shop`.`orders`", "shop"),
            vec![
                ("orders".to_owned(), Effect::Replaced),
                ("_orders_del".to_owned(), Effect::Replaced),
                ("_orders_gho".to_owned(), Effect::Reshaped),
            ]
        );
        assert_eq!(
            of("ALTER TABLE orders RENAME TO orders_old", "shop"),
            vec![
                ("orders".to_owned(), Effect::Reshaped),
                ("orders_old".to_owned(), Effect::Replaced)
            ]
        );
        assert_eq!(of("GRANT SELECT ON shop.* TO u", "shop"), vec![]);
    }

    #[test]
    fn partition_maintenance_that_moves_rows_outside_the_log_is_told_apart() {
        for sql in [
            "ALTER TABLE orders DROP PARTITION p0",
            "ALTER TABLE `shop`.`orders` TRUNCATE PARTITION p0, p1",
            "alter table orders convert partition p0 to table archived",
            "ALTER TABLE orders CONVERT TABLE staged TO PARTITION p9 VALUES LESS THAN (90)",
        ] {
            assert!(
                of(sql, "shop").contains(&("orders".to_owned(), Effect::RowsUnlogged)),
                "{sql}"
            );
        }
        assert_eq!(
            of(
                "ALTER TABLE orders EXCHANGE PARTITION p0 WITH TABLE shop.swap",
                "shop"
            ),
            vec![
                ("orders".to_owned(), Effect::RowsUnlogged),
                ("swap".to_owned(), Effect::RowsUnlogged)
            ]
        );
        assert_eq!(
            of("ALTER TABLE orders TRUNCATE PARTITION ALL", "shop"),
            one("orders", Effect::Truncated)
        );
        assert_eq!(
            of("ALTER TABLE other.orders DROP PARTITION p0", "shop"),
            vec![]
        );
        // Rows stay where they are for a table that is not partitioned here.
        for sql in [
            "ALTER TABLE orders REORGANIZE PARTITION p0 INTO (PARTITION a VALUES LESS THAN (5), PARTITION b VALUES LESS THAN (10))",
            "ALTER TABLE orders COALESCE PARTITION 2",
            "ALTER TABLE orders REMOVE PARTITIONING",
            "ALTER TABLE orders ADD PARTITION (PARTITION p9 VALUES LESS THAN (100))",
        ] {
            assert!(
                effects(sql, "shop", "shop", NameCase::Sensitive)
                    .unwrap_or_default()
                    .iter()
                    .all(|(_, e)| *e != Effect::RowsUnlogged),
                "{sql}"
            );
        }
    }

    #[test]
    fn dropping_our_database_is_told_apart() {
        let drops = |sql: &str| drops_database(sql, "shop", NameCase::Sensitive);
        assert!(drops("DROP DATABASE shop"));
        assert!(drops("DROP SCHEMA IF EXISTS `shop`"));
        assert!(!drops("DROP DATABASE shop2"));
        assert!(!drops("DROP DATABASE SHOP"));
        assert!(!drops("DROP TABLE shop"));
    }

    #[test]
    fn a_statement_the_parser_does_not_read_is_none() {
        assert_eq!(
            effects("THIS IS NOT SQL", "shop", "shop", NameCase::Sensitive),
            None
        );
    }
}
