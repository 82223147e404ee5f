//! Landing-table DDL: create, bring an existing table to shape, and apply schema
//! changes from the stream (docs/postgres.md, Schema evolution). Every change is recorded in `schema_registry`.

use sqlx::{AssertSqlSafe, PgConnection};
use warp_core::config::SchemaChangePolicy;
use warp_core::{Column, ColumnType, SchemaChange, TableSchema, Target, Value};

use crate::encode::pg_text;
use crate::error::{Context, Result, SinkError};
use crate::ident::{fit, literal, quote};
use crate::landed::Landed;
use crate::types::{parse_pg_type, pg_type};
use warp_core::schema::{type_change, TypeChange};

/// A column as it exists in the catalog.
#[derive(Debug, Clone)]
pub struct Existing {
    pub name: String,
    pub pg_type: String,
    pub not_null: bool,
}

/// One DDL statement and what it means (for the registry and dry runs).
#[derive(Debug, Clone)]
pub struct Ddl {
    pub sql: String,
    pub change: serde_json::Value,
}

/// Columns of `schema.table` in the catalog, or `None` when the table does not exist.
pub async fn existing_columns(
    conn: &mut PgConnection,
    landed: &Landed,
) -> Result<Option<Vec<Existing>>> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(unquote(&landed.schema_ident))
    .bind(&landed.table_name)
    .fetch_all(conn)
    .await
    .context("read the catalog")?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|(name, pg_type, not_null)| Existing {
                name,
                pg_type,
                not_null,
            })
            .collect(),
    ))
}

pub(crate) fn unquote(ident: &str) -> String {
    ident[1..ident.len() - 1].replace("\"\"", "\"")
}

/// `"col" type [DEFAULT literal]`.
fn column_def(c: &Column) -> Result<String> {
    let mut def = format!("{} {}", quote(&fit(&c.name)), pg_type(&c.column_type));
    if let Some(default) = c.default.as_ref().filter(|d| !d.is_null()) {
        def.push_str(&format!(
            " DEFAULT {}",
            default_literal(default, &c.column_type)?
        ));
    }
    Ok(def)
}

/// A typed SQL literal for a default value, built from its text form and quoted.
fn default_literal(value: &Value, ty: &ColumnType) -> Result<String> {
    let text = pg_text(value, ty).map_err(|e| SinkError::Invalid(format!("default value: {e}")))?;
    Ok(format!("{}::{}", literal(&text), pg_type(ty)))
}

/// What it takes to bring the table to `schema`'s shape. Pure: used by `ensure_table`
/// and by dry runs.
pub fn plan(
    target: &Target,
    landed: &Landed,
    schema: &TableSchema,
    existing: Option<&[Existing]>,
) -> Result<Vec<Ddl>> {
    let Some(existing) = existing else {
        let mut defs = schema
            .columns
            .iter()
            .map(column_def)
            .collect::<Result<Vec<_>>>()?;
        defs.extend(
            landed
                .bookkeeping()
                .iter()
                .map(|(name, def)| format!("{} {def}", quote(name))),
        );
        defs.push(format!("PRIMARY KEY ({})", landed.key_list()));
        return Ok(vec![
            Ddl {
                sql: format!("CREATE SCHEMA IF NOT EXISTS {}", landed.schema_ident),
                change: serde_json::Value::Null,
            },
            Ddl {
                sql: format!("CREATE TABLE {} ({})", landed.table, defs.join(", ")),
                change: serde_json::json!({ "change": "create_table" }),
            },
        ]);
    };
    let mut out = Vec::new();
    for (c, lc) in schema.columns.iter().zip(&landed.columns) {
        let pg_name = unquote(&lc.ident);
        match existing.iter().find(|e| e.name == pg_name) {
            None => out.push(Ddl {
                sql: format!("ALTER TABLE {} ADD COLUMN {}", landed.table, column_def(c)?),
                change: serde_json::json!({ "change": "add_column", "column": c.name }),
            }),
            Some(e) => {
                let current =
                    parse_pg_type(&e.pg_type).unwrap_or(ColumnType::Text { max_len: None });
                if let Some(ddl) =
                    alter_type(target, landed, &lc.ident, &c.name, &current, &c.column_type)?
                {
                    out.push(ddl);
                }
            }
        }
    }
    // Columns the source no longer has (or no longer sends) must accept NULL.
    for e in existing {
        let ours = landed.columns.iter().any(|c| unquote(&c.ident) == e.name);
        let bookkeeping = landed.is_bookkeeping(&e.name);
        if !ours && !bookkeeping && e.not_null {
            out.push(Ddl {
                sql: format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                    landed.table,
                    quote(&e.name)
                ),
                change: serde_json::json!({ "change": "drop_column", "column": e.name }),
            });
        }
    }
    for (name, def) in landed.bookkeeping() {
        if !existing.iter().any(|e| e.name == *name) {
            out.push(Ddl {
                sql: format!(
                    "ALTER TABLE {} ADD COLUMN {} {def}",
                    landed.table,
                    quote(name)
                ),
                change: serde_json::json!({ "change": "add_column", "column": name }),
            });
        }
    }
    Ok(out)
}

/// The DDL for a column whose type changes from `current` to `wanted`, per docs/postgres.md, Schema evolution.
fn alter_type(
    target: &Target,
    landed: &Landed,
    ident: &str,
    name: &str,
    current: &ColumnType,
    wanted: &ColumnType,
) -> Result<Option<Ddl>> {
    let to = match type_change(current, wanted) {
        TypeChange::Keep => return Ok(None),
        TypeChange::Widen(to) => to,
        TypeChange::Incompatible => match target.schema_change_policy {
            SchemaChangePolicy::WidenToText => ColumnType::Text { max_len: None },
            // Keep the column; rows whose values do not fit go to the dead-letter table.
            SchemaChangePolicy::DeadLetter => return Ok(None),
            SchemaChangePolicy::PauseTable => {
                return Err(SinkError::Invalid(format!(
                    "{}: column `{name}` changes from {} to {}, which would lose data; \
                     the table is paused (schema_change_policy: pause_table)",
                    landed.table,
                    pg_type(current),
                    pg_type(wanted)
                )))
            }
        },
    };
    let using = match (current, &to) {
        (_, ColumnType::Json) => format!("to_jsonb({ident})"),
        // PostgreSQL's float-to-numeric cast keeps 15 digits; its text form is the
        // shortest that reads back as the same double.
        (ColumnType::Float32 | ColumnType::Float64, ColumnType::Numeric { .. }) => {
            format!("{ident}::text::{}", pg_type(&to))
        }
        _ => format!("{ident}::{}", pg_type(&to)),
    };
    Ok(Some(Ddl {
        sql: format!(
            "ALTER TABLE {} ALTER COLUMN {ident} TYPE {} USING {using}",
            landed.table,
            pg_type(&to)
        ),
        change: serde_json::json!({ "change": "alter_type", "column": name, "from": pg_type(current), "to": pg_type(&to) }),
    }))
}

/// Applies one schema change from the stream to `landed` (and the database), returning
/// the DDL it ran.
pub fn change_ddl(target: &Target, landed: &mut Landed, change: &SchemaChange) -> Result<Vec<Ddl>> {
    let table = landed.table.clone();
    let missing =
        |n: &str| SinkError::Invalid(format!("{table}: schema change names unknown column `{n}`"));
    Ok(match change {
        SchemaChange::AddColumn(c) => {
            if landed.index_of(&c.name).is_some() {
                return Ok(Vec::new());
            }
            landed.push(c)?;
            vec![Ddl {
                sql: format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {}",
                    column_def(c)?
                ),
                change: serde_json::to_value(change).unwrap_or_default(),
            }]
        }
        SchemaChange::AlterColumnType { name, to } => {
            let i = landed.index_of(name).ok_or_else(|| missing(name))?;
            let col = landed.columns[i].clone();
            match alter_type(target, landed, &col.ident, name, &col.ty, to)? {
                Some(ddl) => {
                    if let Some(to) = ddl
                        .change
                        .get("to")
                        .and_then(|t| t.as_str())
                        .and_then(parse_pg_type)
                    {
                        landed.columns[i].ty = to;
                    }
                    vec![ddl]
                }
                None => Vec::new(),
            }
        }
        SchemaChange::RenameColumn { from, to } => {
            let i = landed.index_of(from).ok_or_else(|| missing(from))?;
            let new_ident = quote(&fit(to));
            let sql = format!(
                "ALTER TABLE {table} RENAME COLUMN {} TO {new_ident}",
                landed.columns[i].ident
            );
            landed.columns[i].name.clone_from(to);
            landed.columns[i].ident = new_ident;
            vec![Ddl {
                sql,
                change: serde_json::to_value(change).unwrap_or_default(),
            }]
        }
        SchemaChange::DropColumn { name } => {
            let i = landed.index_of(name).ok_or_else(|| missing(name))?;
            if landed.key.contains(&i) {
                return Err(SinkError::Invalid(format!(
                    "{table}: the source dropped key column `{name}`"
                )));
            }
            vec![Ddl {
                sql: format!(
                    "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
                    landed.columns[i].ident
                ),
                change: serde_json::to_value(change).unwrap_or_default(),
            }]
        }
    })
}

/// Runs `ddl` and records each change in the schema registry (same transaction).
pub async fn execute(
    conn: &mut PgConnection,
    metadata: &str,
    target: &Target,
    landed: &Landed,
    source: &TableSchema,
    ddl: &[Ddl],
) -> Result<()> {
    for d in ddl {
        sqlx::raw_sql(AssertSqlSafe(d.sql.clone()))
            .execute(&mut *conn)
            .await
            .context("schema change")?;
        if d.change.is_null() {
            continue;
        }
        // A change applied, its registry entry not yet written.
        warp_core::failpoint::hit(warp_core::failpoint::Point::InsideDdl);
        let sql = format!(
            "INSERT INTO {m}.schema_registry (schema_name, table_name, version, change, table_schema)
             SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4 FROM {m}.schema_registry
             WHERE schema_name = $1 AND table_name = $2",
            m = quote(metadata)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&target.schema)
            .bind(&target.source.name)
            .bind(&d.change)
            .bind(landed.describe(source))
            .execute(&mut *conn)
            .await
            .context("record schema change")?;
        metrics::counter!(warp_core::metrics::SCHEMA_CHANGES_TOTAL,
            "schema" => target.schema.clone(), "table" => target.source.name.clone(),
            "change_type" => d.change.get("change").and_then(|c| c.as_str()).unwrap_or("other").to_owned())
        .increment(1);
    }
    Ok(())
}
