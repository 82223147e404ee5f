//! What a landing table looks like: the source's columns (in the engine's row order)
//! with their PostgreSQL names and types, plus the bookkeeping columns.

use warp_core::{Column, ColumnType, TableSchema, Target};

use crate::error::{Result, SinkError};
use crate::ident::{fit, qualified, quote};

pub const CREATED_AT: &str = "_cartridge_created_at";
pub const UPDATED_AT: &str = "_cartridge_updated_at";
pub const VERSION: &str = "_cartridge_version";
pub const SOURCE_TS: &str = "_cartridge_source_ts";
pub const OP: &str = "_cartridge_op";
/// Bookkeeping columns of fixed names and their definitions, added to every landing
/// table (with the two soft-delete columns, whose names are configurable).
pub const BOOKKEEPING: &[(&str, &str)] = &[
    (
        CREATED_AT,
        "timestamp with time zone NOT NULL DEFAULT now()",
    ),
    (
        UPDATED_AT,
        "timestamp with time zone NOT NULL DEFAULT now()",
    ),
    (VERSION, "bigint NOT NULL DEFAULT 1"),
    (SOURCE_TS, "timestamp with time zone"),
    (OP, "text NOT NULL DEFAULT 'r'"),
];
const IS_DELETED_DEF: &str = "boolean NOT NULL DEFAULT false";
const DELETED_AT_DEF: &str = "timestamp with time zone";

/// One replicated column.
#[derive(Debug, Clone, PartialEq)]
pub struct LandedColumn {
    /// Source name.
    pub name: String,
    /// Quoted PostgreSQL identifier (shortened when over 63 bytes).
    pub ident: String,
    pub ty: ColumnType,
}

/// A landing table as the sink writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    /// `"schema"."table"`.
    pub table: String,
    pub schema_ident: String,
    pub table_name: String,
    pub columns: Vec<LandedColumn>,
    /// Indexes into `columns`.
    pub key: Vec<usize>,
    /// The soft-delete columns' PostgreSQL names (`soft_delete_column`,
    /// `deleted_at_column`).
    pub is_deleted_name: String,
    pub deleted_at_name: String,
}

impl Landed {
    /// The landing shape of `schema` at `target`, with name checks: a column that
    /// collides with a bookkeeping column, or two columns that shorten to the same name,
    /// are errors, never silent merges.
    pub fn new(target: &Target, schema: &TableSchema) -> Result<Self> {
        let mut landed = Self::location(target);
        landed.key = schema
            .key_indexes()
            .map_err(|m| SinkError::Invalid(format!("{}: {m}", schema.id)))?;
        for c in &schema.columns {
            landed.push(c)?;
        }
        Ok(landed)
    }

    /// Where `target` lands, without columns (for catalog lookups).
    pub fn location(target: &Target) -> Self {
        let table_name = fit(&target.table);
        let dest_schema = fit(&target.destination_schema);
        Self {
            table: qualified(&dest_schema, &table_name),
            schema_ident: quote(&dest_schema),
            table_name,
            columns: Vec::new(),
            key: Vec::new(),
            is_deleted_name: fit(&target.soft_delete_column),
            deleted_at_name: fit(&target.deleted_at_column),
        }
    }

    /// The soft-delete flag column, quoted.
    pub fn is_deleted(&self) -> String {
        quote(&self.is_deleted_name)
    }

    /// The soft-delete time column, quoted.
    pub fn deleted_at(&self) -> String {
        quote(&self.deleted_at_name)
    }

    /// Every bookkeeping column with its definition.
    pub fn bookkeeping(&self) -> Vec<(&str, &'static str)> {
        let mut all: Vec<(&str, &'static str)> = BOOKKEEPING.to_vec();
        all.push((&self.is_deleted_name, IS_DELETED_DEF));
        all.push((&self.deleted_at_name, DELETED_AT_DEF));
        all
    }

    /// Whether `name` (a PostgreSQL column name) is one of the bookkeeping columns.
    pub fn is_bookkeeping(&self, name: &str) -> bool {
        self.bookkeeping().iter().any(|(b, _)| *b == name)
    }

    pub fn push(&mut self, c: &Column) -> Result<()> {
        let name = fit(&c.name);
        if name == self.is_deleted_name || name == self.deleted_at_name {
            let key = if name == self.is_deleted_name {
                "soft_delete_column"
            } else {
                "deleted_at_column"
            };
            return Err(SinkError::Invalid(format!(
                "{}: source column `{}` collides with the soft-delete column of the same name; set {key} (under destination, the schema or the table) to a name the source does not use",
                self.table, c.name
            )));
        }
        if BOOKKEEPING.iter().any(|(b, _)| *b == name) {
            return Err(SinkError::Invalid(format!(
                "{}: source column `{}` collides with the bookkeeping column of the same name",
                self.table, c.name
            )));
        }
        if let Some(other) = self.columns.iter().find(|o| fit(&o.name) == name) {
            return Err(SinkError::Invalid(format!(
                "{}: columns `{}` and `{}` both land as `{name}` (names over 63 bytes are shortened)",
                self.table, other.name, c.name
            )));
        }
        self.columns.push(LandedColumn {
            name: c.name.clone(),
            ident: quote(&name),
            ty: c.column_type.clone(),
        });
        Ok(())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `"a", "b", …` of every data column.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.ident.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &LandedColumn> {
        self.key.iter().map(|&i| &self.columns[i])
    }

    /// `"a", "b"` of the key columns.
    pub fn key_list(&self) -> String {
        self.key_columns()
            .map(|c| c.ident.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Column names and types, for encoding rows.
    pub fn types(&self) -> Vec<(&str, &ColumnType)> {
        self.columns
            .iter()
            .map(|c| (c.name.as_str(), &c.ty))
            .collect()
    }

    /// The destination shape as a `TableSchema` (recorded in the schema registry).
    pub fn describe(&self, source: &TableSchema) -> serde_json::Value {
        serde_json::json!({
            "table": self.table,
            "source": source.id,
            "columns": self.columns.iter().map(|c| serde_json::json!({
                "name": c.name,
                "type": crate::types::pg_type(&c.ty),
            })).collect::<Vec<_>>(),
            "primary_key": self.key_columns().map(|c| c.name.clone()).collect::<Vec<_>>(),
        })
    }
}
