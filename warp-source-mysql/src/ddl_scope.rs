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
    Dropped,
}

/// The tables of `database` that `sql` touches (names as written), with the effect on
/// each. `None`: the parser does not read this statement.
pub fn effects(sql: &str, default_db: &str, database: &str) -> Option<Vec<(String, Effect)>> {
    let statements = Parser::parse_sql(&MySqlDialect {}, sql).ok()?;
    let mut out = Vec::new();
    let mut add = |name: &ObjectName, effect: Effect| {
        if let Some(table) = ours(name, default_db, database) {
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

/// The table's name when `name` resolves into `database` (database names compare
/// without case, as the reader's other lookups do).
fn ours(name: &ObjectName, default_db: &str, database: &str) -> Option<String> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.as_str()))
        .collect::<Option<_>>()?;
    let (db, table) = match parts.as_slice() {
        [table] => (default_db, *table),
        [db, table] => (*db, *table),
        _ => return None,
    };
    db.eq_ignore_ascii_case(database).then(|| table.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str, default_db: &str) -> Vec<(String, Effect)> {
        effects(sql, default_db, "shop").expect("parsed")
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
        assert_eq!(
            of("TRUNCATE TABLE SHOP.orders", "mysql"),
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
    fn a_statement_the_parser_does_not_read_is_none() {
        assert_eq!(effects("THIS IS NOT SQL", "shop", "shop"), None);
    }
}
