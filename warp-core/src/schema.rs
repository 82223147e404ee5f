//! Table identity and shape, as discovered at the source and evolved by the stream.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A source table: the source database (MySQL schema, MongoDB database, BigQuery dataset)
/// and the table or collection name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    pub database: String,
    pub name: String,
}

impl TableId {
    pub fn new(database: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.name)
    }
}

/// Logical column types; each source maps its types here (docs/postgres.md, Types) and the sink maps
/// these to its DDL, so no source type ever reaches the sink unmapped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    /// Unsigned 64-bit: lands as `numeric(20,0)`.
    UInt64,
    /// `numeric(p,s)`, or unconstrained `numeric` when `precision` is `None`.
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Float32,
    Float64,
    /// `varchar(n)`, or `text` when `max_len` is `None`.
    Text {
        max_len: Option<u32>,
    },
    Bytes,
    /// `bit varying(n)`.
    Bits {
        len: u32,
    },
    Date,
    Time {
        precision: Option<u32>,
    },
    Timestamp {
        precision: Option<u32>,
    },
    TimestampTz {
        precision: Option<u32>,
    },
    Interval,
    Json,
    Uuid,
    Array {
        element: Box<ColumnType>,
    },
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// The source's declared default, so an added column reads the same for old rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

impl Column {
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        Self {
            name: name.into(),
            column_type,
            nullable: true,
            default: None,
        }
    }

    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// The version of its source's landing conventions a landing table was created with
/// (docs/architecture.md, "Landing versions"). A source that changes how it lands values
/// (MongoDB's `_id` text) lands tables created before the change the old way, so the rows
/// already there keep their keys; the destination records the version when it creates a
/// table, and the engine hands it back to the source in each table's read settings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LandingVersion(pub u32);

impl LandingVersion {
    /// Tables created before versions were recorded, and sources that never changed.
    pub const UNRECORDED: Self = Self(0);
}

impl std::fmt::Display for LandingVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A table's shape. Rows are positional against `columns`; columns are only ever
/// appended (a dropped source column stays, nullable), so positions are stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub id: TableId,
    pub columns: Vec<Column>,
    /// Names of the key columns, in key order. Empty means "no key": such a table is
    /// rejected unless the config names a `primary_key`.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indexes of the key columns, or an error naming what is missing.
    pub fn key_indexes(&self) -> Result<Vec<usize>, ShapeError> {
        if self.primary_key.is_empty() {
            return Err(ShapeError::NoPrimaryKey);
        }
        self.primary_key
            .iter()
            .map(|k| {
                self.column_index(k)
                    .ok_or_else(|| ShapeError::NoKeyColumn(k.clone()))
            })
            .collect()
    }

    /// Applies a schema change to this in-memory shape (the sink applies it as DDL).
    pub fn apply(&mut self, change: &SchemaChange) -> Result<(), ShapeError> {
        match change {
            SchemaChange::AddColumn(col) => {
                if self.column_index(&col.name).is_some() {
                    return Err(ShapeError::ColumnExists(col.name.clone()));
                }
                self.columns.push(col.clone());
            }
            SchemaChange::AlterColumnType { name, to } => {
                let i = self.existing(name)?;
                self.columns[i].column_type = to.clone();
            }
            SchemaChange::RenameColumn { from, to } => {
                let i = self.existing(from)?;
                if self.column_index(to).is_some() {
                    return Err(ShapeError::RenameOnto {
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                self.columns[i].name = to.clone();
                for k in &mut self.primary_key {
                    if k == from {
                        k.clone_from(to);
                    }
                }
            }
            SchemaChange::DropColumn { name } => {
                let i = self.existing(name)?;
                self.columns[i].nullable = true;
            }
        }
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<usize, ShapeError> {
        self.column_index(name)
            .ok_or_else(|| ShapeError::NoColumn(name.to_owned()))
    }
}

/// Why a table's shape cannot serve, or a change cannot apply to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("has no primary key; set `primary_key` for this table in the config")]
    NoPrimaryKey,
    #[error("primary key column `{0}` does not exist")]
    NoKeyColumn(String),
    #[error("column `{0}` already exists")]
    ColumnExists(String),
    #[error("column `{0}` does not exist")]
    NoColumn(String),
    #[error("cannot rename `{from}` to `{to}`: `{to}` exists")]
    RenameOnto { from: String, to: String },
}

/// A change of shape seen in the stream (docs/postgres.md, Schema evolution). Applied in order with the rows
/// around it, inside the same destination transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SchemaChange {
    AddColumn(Column),
    /// Widening (or, by policy, a change to text).
    AlterColumnType {
        name: String,
        to: ColumnType,
    },
    RenameColumn {
        from: String,
        to: String,
    },
    /// The source dropped it: kept at the destination, nullable, new rows get NULL.
    DropColumn {
        name: String,
    },
}

impl SchemaChange {
    /// Label for the `change_type` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AddColumn(_) => "add_column",
            Self::AlterColumnType { .. } => "alter_type",
            Self::RenameColumn { .. } => "rename_column",
            Self::DropColumn { .. } => "drop_column",
        }
    }
}

/// What to do when a column's type changes from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeChange {
    /// Same type, or the destination is already wider: nothing to do.
    Keep,
    /// Widen the destination column to this type.
    Widen(ColumnType),
    /// Neither contains the other: the table's `schema_change_policy` decides.
    Incompatible,
}

/// The widening rules (docs/postgres.md, Schema evolution).
pub fn type_change(from: &ColumnType, to: &ColumnType) -> TypeChange {
    use ColumnType as T;
    if from == to || contains(from, to) {
        return TypeChange::Keep;
    }
    if contains(to, from) {
        return TypeChange::Widen(to.clone());
    }
    // Widen to a common type when one exists. A double holds every int16 and int32
    // exactly, but not an int64 above 2^53: int64 and floats meet in an unconstrained
    // numeric, which holds both exactly (a double rounded there would change the values
    // copied before, too).
    let common = match (from, to) {
        (T::Float32 | T::Float64, T::Int64 | T::UInt64)
        | (T::Int64 | T::UInt64, T::Float32 | T::Float64) => Some(T::Numeric {
            precision: None,
            scale: None,
        }),
        (T::Float32 | T::Float64, T::Int16 | T::Int32)
        | (T::Int16 | T::Int32, T::Float32 | T::Float64) => Some(T::Float64),
        (T::Text { .. }, _) | (_, T::Text { .. }) => Some(T::Text { max_len: None }),
        _ => None,
    };
    common.map_or(TypeChange::Incompatible, TypeChange::Widen)
}

/// Whether every value of `inner` is exactly representable in `outer`.
fn contains(outer: &ColumnType, inner: &ColumnType) -> bool {
    use ColumnType as T;
    let int_rank = |t: &T| match t {
        T::Int16 => Some(1),
        T::Int32 => Some(2),
        T::Int64 => Some(3),
        _ => None,
    };
    match (outer, inner) {
        (a, b) if a == b => true,
        // Text holds JSON as text, but jsonb keeps its structure (docs/postgres.md, Schema evolution: anything →
        // jsonb for document sources), so text widens to jsonb rather than absorbing it.
        (T::Text { .. }, T::Json) => false,
        (T::Text { max_len: None }, _) => true,
        (T::Json, _) => true,
        (T::Text { max_len: Some(m) }, T::Text { max_len: Some(n) }) => m >= n,
        (
            T::Numeric {
                precision: None, ..
            },
            T::Int16
            | T::Int32
            | T::Int64
            | T::UInt64
            | T::Numeric { .. }
            | T::Float32
            | T::Float64,
        ) => true,
        (
            T::Numeric {
                precision: Some(p),
                scale,
            },
            T::Numeric {
                precision: Some(q),
                scale: s2,
            },
        ) => {
            let (s, s2) = (scale.unwrap_or(0), s2.unwrap_or(0));
            s >= s2 && p - s >= q - s2
        }
        (
            T::Numeric {
                precision: Some(p),
                scale,
            },
            other,
        ) => {
            let digits = match other {
                T::Int16 => 5,
                T::Int32 => 10,
                T::Int64 => 19,
                T::UInt64 => 20,
                _ => return false,
            };
            p - scale.unwrap_or(0) >= digits
        }
        (T::UInt64, T::Int16 | T::Int32) => false,
        (T::Float64, T::Float32 | T::Int16 | T::Int32) => true,
        (T::Float32, T::Int16) => true,
        (
            T::Timestamp { precision: a } | T::TimestampTz { precision: a },
            T::Timestamp { precision: b },
        ) if matches!(outer, T::Timestamp { .. }) => a.unwrap_or(6) >= b.unwrap_or(6),
        (T::TimestampTz { precision: a }, T::TimestampTz { precision: b }) => {
            a.unwrap_or(6) >= b.unwrap_or(6)
        }
        (T::Time { precision: a }, T::Time { precision: b }) => a.unwrap_or(6) >= b.unwrap_or(6),
        (T::Bits { len: a }, T::Bits { len: b }) => a >= b,
        (T::Array { element: a }, T::Array { element: b }) => contains(a, b),
        (a, b) => matches!((int_rank(a), int_rank(b)), (Some(x), Some(y)) if x >= y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_rules() {
        use ColumnType as T;
        assert_eq!(
            type_change(&T::Int32, &T::Int64),
            TypeChange::Widen(T::Int64)
        );
        assert_eq!(
            type_change(&T::Int64, &T::Int32),
            TypeChange::Keep,
            "narrowing keeps the wider column"
        );
        assert_eq!(
            type_change(
                &T::Int32,
                &T::Numeric {
                    precision: Some(12),
                    scale: Some(2)
                }
            ),
            TypeChange::Widen(T::Numeric {
                precision: Some(12),
                scale: Some(2)
            })
        );
        assert_eq!(
            type_change(&T::Float32, &T::Float64),
            TypeChange::Widen(T::Float64)
        );
        assert_eq!(
            type_change(
                &T::Text { max_len: Some(10) },
                &T::Text { max_len: Some(20) }
            ),
            TypeChange::Widen(T::Text { max_len: Some(20) })
        );
        assert_eq!(
            type_change(&T::Int64, &T::Text { max_len: Some(5) }),
            TypeChange::Widen(T::Text { max_len: None })
        );
        assert_eq!(type_change(&T::Bool, &T::Json), TypeChange::Widen(T::Json));
        assert_eq!(
            type_change(&T::Text { max_len: None }, &T::Json),
            TypeChange::Widen(T::Json)
        );
        assert_eq!(
            type_change(&T::Json, &T::Text { max_len: None }),
            TypeChange::Keep
        );
        assert_eq!(type_change(&T::Date, &T::Uuid), TypeChange::Incompatible);
        let numeric = T::Numeric {
            precision: None,
            scale: None,
        };
        assert_eq!(
            type_change(&T::Int64, &T::Float64),
            TypeChange::Widen(numeric.clone()),
            "a double cannot hold every int64 (2^53 + 1)"
        );
        assert_eq!(
            type_change(&T::Float64, &T::Int64),
            TypeChange::Widen(numeric)
        );
        assert_eq!(
            type_change(&T::Int32, &T::Float64),
            TypeChange::Widen(T::Float64),
            "a double holds every int32"
        );
        assert_eq!(
            type_change(
                &T::Float64,
                &T::Numeric {
                    precision: None,
                    scale: None
                }
            ),
            TypeChange::Widen(T::Numeric {
                precision: None,
                scale: None
            }),
            "an unconstrained numeric holds every finite double exactly"
        );
    }
}
