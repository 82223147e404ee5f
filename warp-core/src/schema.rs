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

/// Logical column types; each source maps its types here (SPEC §5.1) and the sink maps
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
    pub fn key_indexes(&self) -> Result<Vec<usize>, String> {
        if self.primary_key.is_empty() {
            return Err(
                "has no primary key; set `primary_key` for this table in the config".into(),
            );
        }
        self.primary_key
            .iter()
            .map(|k| {
                self.column_index(k)
                    .ok_or_else(|| format!("primary key column `{k}` does not exist"))
            })
            .collect()
    }

    /// Applies a schema change to this in-memory shape (the sink applies it as DDL).
    pub fn apply(&mut self, change: &SchemaChange) -> Result<(), String> {
        match change {
            SchemaChange::AddColumn(col) => {
                if self.column_index(&col.name).is_some() {
                    return Err(format!("column `{}` already exists", col.name));
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
                    return Err(format!("cannot rename `{from}` to `{to}`: `{to}` exists"));
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

    fn existing(&self, name: &str) -> Result<usize, String> {
        self.column_index(name)
            .ok_or_else(|| format!("column `{name}` does not exist"))
    }
}

/// A change of shape seen in the stream (SPEC §6). Applied in order with the rows
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
