//! Reading landed rows back as values (tests, `verify`). Each column is decoded by its
//! logical type, so a round trip compares values, not text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row as _};
use warp_core::{ColumnType, Decimal, Interval, Key, Row, TableSchema, Target, Value};

use crate::encode::literal_of;
use crate::error::{Context, Result, SinkError};
use crate::ident::quote;
use crate::landed::{Landed, OP, VERSION};

pub use warp_core::LandedRow;

/// Every row of the landing table of `target`, in key order.
pub async fn rows(pool: &PgPool, target: &Target, schema: &TableSchema) -> Result<Vec<LandedRow>> {
    select_rows(pool, target, schema, None).await
}

/// The rows (live or soft-deleted) of `target` whose keys are among `keys`: one range of a
/// comparison, whatever the table's size.
pub async fn rows_with_keys(
    pool: &PgPool,
    target: &Target,
    schema: &TableSchema,
    keys: &[Key],
) -> Result<Vec<LandedRow>> {
    let landed = Landed::new(target, schema)?;
    let mut out = Vec::with_capacity(keys.len());
    // Statements stay a few hundred kilobytes at most, whatever the range's size.
    for part in keys.chunks(KEYS_PER_STATEMENT) {
        let filter = format!(
            "({}) IN ({})",
            landed.key_list(),
            key_tuples(&landed, part)?
        );
        out.extend(select_rows(pool, target, schema, Some(filter)).await?);
    }
    Ok(out)
}

const KEYS_PER_STATEMENT: usize = 1000;

/// `(l1, l2), (l1, l2), …` for `keys`, as literals of the key columns' types.
fn key_tuples(landed: &Landed, keys: &[Key]) -> Result<String> {
    let tuple = |key: &Key| -> Result<String> {
        let parts = landed
            .key
            .iter()
            .zip(key)
            .map(|(&i, v)| literal_of(v, &landed.columns[i].ty))
            .collect::<Result<Vec<_>>>()?;
        Ok(format!("({})", parts.join(", ")))
    };
    Ok(keys
        .iter()
        .map(tuple)
        .collect::<Result<Vec<_>>>()?
        .join(", "))
}

/// Up to `limit` keys of live rows after `after` in the destination's key order, with
/// their versions: the destination's side of a comparison read page by page.
pub async fn live_key_page(
    pool: &PgPool,
    target: &Target,
    schema: &TableSchema,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<(Key, i64)>> {
    let landed = Landed::new(target, schema)?;
    let key: Vec<_> = landed.key.iter().map(|&i| &landed.columns[i]).collect();
    let exprs: Vec<String> = key.iter().map(|c| select_expr(&c.ident, &c.ty)).collect();
    let resume = match after {
        Some(k) => format!(
            " AND ({}) > {}",
            landed.key_list(),
            key_tuples(&landed, std::slice::from_ref(k))?
        ),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {}, {} FROM {} WHERE NOT {}{resume} ORDER BY {} LIMIT {limit}",
        exprs.join(", "),
        quote(VERSION),
        landed.table,
        landed.is_deleted(),
        landed.key_list()
    );
    // Not prepared and cached: a text carrying keys as literals is never used again.
    let fetched = sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .fetch_all(pool)
        .await
        .context("read key page")?;
    fetched
        .iter()
        .map(|r| {
            let k = key
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    decode(r, i, &c.ty)
                        .map_err(|e| SinkError::Invalid(format!("column {}: {e}", c.name)))
                })
                .collect::<Result<Key>>()?;
            Ok((k, r.try_get(key.len()).context("version")?))
        })
        .collect()
}

async fn select_rows(
    pool: &PgPool,
    target: &Target,
    schema: &TableSchema,
    filter: Option<String>,
) -> Result<Vec<LandedRow>> {
    let landed = Landed::new(target, schema)?;
    let exprs: Vec<String> = landed
        .columns
        .iter()
        .map(|c| select_expr(&c.ident, &c.ty))
        .collect();
    let sql = format!(
        "SELECT {}, {}, {}, {} FROM {}{} ORDER BY {}",
        exprs.join(", "),
        quote(VERSION),
        landed.is_deleted(),
        quote(OP),
        landed.table,
        filter.map(|f| format!(" WHERE {f}")).unwrap_or_default(),
        landed.key_list()
    );
    // Not prepared and cached: a text carrying keys as literals is never used again.
    let fetched = sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .fetch_all(pool)
        .await
        .context("read rows")?;
    fetched
        .iter()
        .map(|r| {
            let n = landed.columns.len();
            let values = landed
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    decode(r, i, &c.ty)
                        .map_err(|e| SinkError::Invalid(format!("column {}: {e}", c.name)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(LandedRow {
                row: Row::new(values),
                version: r.try_get(n).context("version")?,
                deleted: r.try_get(n + 1).context("is_deleted")?,
                op: r.try_get(n + 2).context("op")?,
            })
        })
        .collect()
}

/// The keys of the live (not soft-deleted) rows of `target`, for delete detection.
pub async fn live_keys(pool: &PgPool, target: &Target, schema: &TableSchema) -> Result<Vec<Key>> {
    let landed = Landed::new(target, schema)?;
    let key: Vec<_> = landed.key.iter().map(|&i| &landed.columns[i]).collect();
    let exprs: Vec<String> = key.iter().map(|c| select_expr(&c.ident, &c.ty)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE NOT {}",
        exprs.join(", "),
        landed.table,
        landed.is_deleted()
    );
    let fetched = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .context("read live keys")?;
    fetched
        .iter()
        .map(|r| {
            key.iter()
                .enumerate()
                .map(|(i, c)| {
                    decode(r, i, &c.ty)
                        .map_err(|e| SinkError::Invalid(format!("column {}: {e}", c.name)))
                })
                .collect()
        })
        .collect()
}

/// How a column is selected so that [`decode`] can read it exactly.
fn select_expr(ident: &str, ty: &ColumnType) -> String {
    match ty {
        ColumnType::UInt64 | ColumnType::Numeric { .. } | ColumnType::Bits { .. } => {
            format!("{ident}::text")
        }
        ColumnType::Array { .. } => format!("to_jsonb({ident})"),
        _ => ident.to_owned(),
    }
}

fn decode(r: &PgRow, i: usize, ty: &ColumnType) -> std::result::Result<Value, String> {
    macro_rules! get {
        ($t:ty) => {
            r.try_get::<Option<$t>, _>(i).map_err(|e| e.to_string())?
        };
    }
    Ok(match ty {
        ColumnType::Bool => get!(bool).map(Value::Bool),
        ColumnType::Int16 => get!(i16).map(|v| Value::Int(v.into())),
        ColumnType::Int32 => get!(i32).map(|v| Value::Int(v.into())),
        ColumnType::Int64 => get!(i64).map(Value::Int),
        ColumnType::UInt64 => get!(String)
            .map(|s| s.parse().map(Value::UInt).map_err(|e| format!("{s}: {e}")))
            .transpose()?,
        // A numeric's NaN and ±Infinity are no decimal: they read back as the float
        // specials sources send for them (MongoDB's decimal128 NaN, say).
        ColumnType::Numeric { .. } => get!(String)
            .map(|s| match s.as_str() {
                "NaN" => Ok(Value::Float64(f64::NAN)),
                "Infinity" => Ok(Value::Float64(f64::INFINITY)),
                "-Infinity" => Ok(Value::Float64(f64::NEG_INFINITY)),
                _ => Decimal::parse(&s)
                    .map(Value::Decimal)
                    .ok_or(format!("not a decimal: {s}")),
            })
            .transpose()?,
        ColumnType::Float32 => get!(f32).map(Value::Float32),
        ColumnType::Float64 => get!(f64).map(Value::Float64),
        ColumnType::Text { .. } => get!(String).map(Value::Text),
        ColumnType::Bytes => get!(Vec<u8>).map(Value::Bytes),
        ColumnType::Bits { .. } => {
            get!(String).map(|s| Value::Bits(s.chars().map(|c| c == '1').collect()))
        }
        ColumnType::Date => get!(NaiveDate).map(Value::Date),
        ColumnType::Time { .. } => get!(NaiveTime).map(Value::Time),
        ColumnType::Timestamp { .. } => get!(NaiveDateTime).map(Value::Timestamp),
        ColumnType::TimestampTz { .. } => get!(DateTime<Utc>).map(Value::TimestampTz),
        ColumnType::Interval => get!(PgInterval).map(|v| {
            Value::Interval(Interval {
                months: v.months,
                days: v.days,
                micros: v.microseconds,
            })
        }),
        ColumnType::Json => get!(serde_json::Value).map(Value::Json),
        ColumnType::Uuid => get!(uuid::Uuid).map(Value::Uuid),
        ColumnType::Array { .. } => get!(serde_json::Value)
            .map(|j| from_json(&j, ty))
            .transpose()?,
    }
    .unwrap_or(Value::Null))
}

/// An array element from `to_jsonb` output, by element type.
fn from_json(j: &serde_json::Value, ty: &ColumnType) -> std::result::Result<Value, String> {
    use serde_json::Value as J;
    let bad = || format!("unexpected {j} for {ty:?}");
    Ok(match (ty, j) {
        (_, J::Null) => Value::Null,
        (ColumnType::Array { element }, J::Array(items)) => Value::Array(
            items
                .iter()
                .map(|i| from_json(i, element))
                .collect::<std::result::Result<_, _>>()?,
        ),
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64, J::Number(n)) => {
            Value::Int(n.as_i64().ok_or_else(bad)?)
        }
        (ColumnType::UInt64, J::Number(n)) => Value::UInt(n.as_u64().ok_or_else(bad)?),
        (ColumnType::Numeric { .. }, J::Number(n)) => {
            Value::Decimal(Decimal::parse(&n.to_string()).ok_or_else(bad)?)
        }
        (ColumnType::Float64, J::Number(n)) => Value::Float64(n.as_f64().ok_or_else(bad)?),
        (ColumnType::Text { .. }, J::String(s)) => Value::Text(s.clone()),
        (ColumnType::Date, J::String(s)) => Value::Date(s.parse().map_err(|_| bad())?),
        (ColumnType::Uuid, J::String(s)) => Value::Uuid(s.parse().map_err(|_| bad())?),
        (ColumnType::Json, other) => Value::Json(other.clone()),
        _ => return Err(bad()),
    })
}
