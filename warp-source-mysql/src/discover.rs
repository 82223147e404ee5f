//! Tables, columns, keys, enum/set labels and defaults from `information_schema`.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use warp_core::{Column, ColumnType, TableId, TableSchema, Value};

use crate::charset::Charset;
use crate::decode::{decode, Decoded};
use crate::error::{Context, Result};
use crate::foreign_keys::ForeignKey;
use crate::types::{map, Kind, MysqlColumn};

/// A table as the source reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlTable {
    pub schema: TableSchema,
    /// Same order as `schema.columns`.
    pub columns: Vec<MysqlColumn>,
    /// Its foreign keys on tables of the same database.
    pub foreign_keys: Vec<ForeignKey>,
    /// Its engine undoes a rolled-back transaction's rows (InnoDB); MyISAM, Aria, MEMORY
    /// and the like keep them.
    pub transactional: bool,
}

impl MysqlTable {
    /// Whether the server orders this table's keys as warp orders their values: only then
    /// can a key be placed in a snapshot chunk without asking the server.
    pub fn keys_sort_like_values(&self) -> bool {
        self.schema.primary_key.iter().all(|k| {
            self.columns
                .iter()
                .find(|c| c.name == *k)
                .is_some_and(|c| c.kind.sorts_like_values())
        })
    }

    /// Whether `key` lies in `chunk` as the server orders keys. A `_bin` collation that pads
    /// with spaces (utf8mb4_bin, MariaDB's and MySQL's default `_bin`) compares 'a' with
    /// 'a\x01' as 'a ' with 'a\x01', so a text key or bound holding a character below the
    /// space is never placed by its bytes; without one, padded and byte order agree (equal
    /// keys up to trailing spaces cannot both exist).
    pub fn chunk_holds(&self, chunk: &warp_core::KeyRange, key: &[Value]) -> bool {
        let pads_like_bytes = |k: &[Value]| {
            k.iter().all(|v| match v {
                Value::Text(t) => !t.chars().any(|c| c < ' '),
                _ => true,
            })
        };
        self.keys_sort_like_values()
            && pads_like_bytes(key)
            && [&chunk.start, &chunk.end]
                .into_iter()
                .flatten()
                .all(|b| pads_like_bytes(b))
            && chunk.contains(key)
    }
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Every base table of `database` (or only `only`).
pub async fn tables(
    conn: &mut Conn,
    database: &str,
    only: Option<&str>,
) -> Result<Vec<MysqlTable>> {
    let cols: Vec<ColumnRow> = conn
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, c.COLUMN_DEFAULT,
                    c.CHARACTER_SET_NAME, c.COLLATION_NAME, t.ENGINE
             FROM information_schema.COLUMNS c
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' AND (? IS NULL OR c.TABLE_NAME = ?)
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (database, only, only),
        )
        .await
        .context("read columns")?;
    let keys: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' AND (? IS NULL OR TABLE_NAME = ?)
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database, only, only),
        )
        .await
        .context("read primary keys")?;
    // MariaDB's JSON is LONGTEXT with a json_valid() check; MySQL < 8.0.16 has no such view.
    let checks: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?",
            (database,),
        )
        .await
        .unwrap_or_default();

    let mut by_table: BTreeMap<String, MysqlTable> = BTreeMap::new();
    for (table, name, column_type, nullable, default, charset, collation, engine) in cols {
        let kind_of = KindOf {
            table: &table,
            name: &name,
            checks: &checks,
        };
        let (kind, ty) = kind_of.resolve(&column_type, charset.as_deref(), collation);
        let entry = by_table.entry(table.clone()).or_insert_with(|| MysqlTable {
            schema: TableSchema {
                id: TableId::new(database, &table),
                columns: Vec::new(),
                primary_key: Vec::new(),
            },
            columns: Vec::new(),
            foreign_keys: Vec::new(),
            transactional: transactional(engine.as_deref()),
        });
        let mut column = Column::new(&name, ty.clone());
        column.nullable = nullable == "YES";
        column.default = default.as_deref().and_then(|d| default_value(d, &kind));
        entry.schema.columns.push(column);
        entry.columns.push(MysqlColumn {
            name,
            kind,
            column_type: ty,
        });
    }
    for (table, column) in keys {
        if let Some(t) = by_table.get_mut(&table) {
            t.schema.primary_key.push(column);
        }
    }
    for (table, keys) in crate::foreign_keys::read(conn, database, only).await? {
        if let Some(t) = by_table.get_mut(&table) {
            t.foreign_keys = keys;
        }
    }
    Ok(by_table.into_values().collect())
}

/// What a column is read and landed as.
struct KindOf<'a> {
    table: &'a str,
    name: &'a str,
    /// The schema's CHECK constraints: MariaDB's JSON is LONGTEXT with `json_valid()`.
    checks: &'a [(String, String)],
}

impl KindOf<'_> {
    fn resolve(
        &self,
        column_type: &str,
        charset: Option<&str>,
        collation: Option<String>,
    ) -> (Kind, ColumnType) {
        let (table, name) = (self.table, self.name);
        let json_check = format!("json_valid(`{}`)", name.to_ascii_lowercase());
        let is_json = self.checks.iter().any(|(t, clause)| {
            t == table && (clause.to_ascii_lowercase().replace(' ', "")).contains(&json_check)
        });
        if is_json {
            return (Kind::Json, ColumnType::Json);
        }
        let (mut kind, ty) = map(column_type).unwrap_or_else(|e| {
            tracing::warn!(table = %table, column = %name, "{e}; copied as raw bytes");
            (Kind::bytes(), ColumnType::Bytes)
        });
        if let (
            Kind::Text {
                charset: c,
                sorts_by_bytes,
                named: names,
            },
            Some(named),
        ) = (&mut kind, charset)
        {
            *c = Charset::named(named);
            *sorts_by_bytes = *c == Charset::Utf8
                && (collation.as_deref()).is_some_and(|name| name.ends_with("_bin"));
            *names = collation.map(|coll| (named.to_owned(), coll));
            if let Charset::Unsupported(set) = c {
                tracing::warn!(table = %table, column = %name, charset = %set, "the binlog's values of this character set cannot be decoded exactly: rows streamed with one are dead-lettered (the snapshot copies them)");
            }
        }
        (kind, ty)
    }
}

/// Engines whose rolled-back rows never took effect. An unknown engine counts as
/// transactional: the engines that keep rolled-back rows are few and named here.
fn transactional(engine: Option<&str>) -> bool {
    let engine = engine.unwrap_or("InnoDB").to_ascii_lowercase();
    !matches!(
        engine.as_str(),
        "myisam"
            | "aria"
            | "memory"
            | "heap"
            | "csv"
            | "archive"
            | "mrg_myisam"
            | "merge"
            | "blackhole"
            | "federated"
            | "federatedx"
            | "connect"
            | "sequence"
            | "s3"
    )
}

/// A declared default as a value: quoted literals and numbers; expressions such as
/// `current_timestamp()` cannot be carried and are dropped.
fn default_value(text: &str, kind: &Kind) -> Option<Value> {
    if text.eq_ignore_ascii_case("NULL") {
        return None;
    }
    let literal = match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'").replace("\\\\", "\\"),
        None if text.contains('(') => return None,
        None => text.to_owned(),
    };
    match decode(mysql_async::Value::Bytes(literal.into_bytes()), kind) {
        Ok(Decoded::Value(v)) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(
            default_value("'it''s'", &Kind::text()),
            Some(Value::Text("it's".into()))
        );
        assert_eq!(
            default_value(
                "42",
                &Kind::Int {
                    unsigned: false,
                    bits: 32
                }
            ),
            Some(Value::Int(42))
        );
        assert_eq!(default_value("NULL", &Kind::text()), None);
        assert_eq!(default_value("current_timestamp()", &Kind::Timestamp), None);
    }
}
