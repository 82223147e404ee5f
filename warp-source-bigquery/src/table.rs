//! A BigQuery table as the source reads it: its fields, aligned to the engine's view.

use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use warp_core::{Column, Row, TableId, TableSchema, Value};

use crate::query::{quote, Cells};
use crate::types;

#[derive(Debug, Clone)]
pub struct BqTable {
    /// `project.dataset.table`, quoted for SQL.
    pub path: String,
    pub schema: TableSchema,
    /// One per column of `schema`, in its order; `None` for a column the source has
    /// dropped since (it reads NULL).
    pub fields: Vec<Option<TableFieldSchema>>,
}

impl BqTable {
    pub fn new(
        project: &str,
        id: TableId,
        fields: Vec<TableFieldSchema>,
        key: Vec<String>,
    ) -> Self {
        let columns = fields
            .iter()
            .map(|f| {
                let c = Column::new(f.name.clone(), types::column_type(f));
                if f.mode.as_deref() == Some("REQUIRED") {
                    c.not_null()
                } else {
                    c
                }
            })
            .collect();
        let fields = fields.into_iter().map(Some).collect();
        Self {
            path: quote(&format!("{project}.{}.{}", id.database, id.name)),
            schema: TableSchema {
                id,
                columns,
                primary_key: key,
            },
            fields,
        }
    }

    /// This table seen through the engine's view (its key and column order win).
    pub fn aligned(&self, view: &TableSchema) -> Self {
        let fields = view
            .columns
            .iter()
            .map(|c| {
                self.fields
                    .iter()
                    .flatten()
                    .find(|f| f.name == c.name)
                    .cloned()
            })
            .collect();
        Self {
            path: self.path.clone(),
            schema: view.clone(),
            fields,
        }
    }

    /// The select list (columns dropped at the source read NULL).
    pub fn select_list(&self) -> String {
        self.fields
            .iter()
            .zip(&self.schema.columns)
            .map(|(f, c)| match f {
                Some(_) => quote(&c.name),
                None => format!("NULL AS {}", quote(&c.name)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn key_columns(&self) -> Vec<usize> {
        self.schema.key_indexes().unwrap_or_default()
    }

    pub fn key_list(&self) -> String {
        self.key_columns()
            .iter()
            .map(|&i| quote(&self.schema.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn cell(cells: &Cells, i: usize, field: Option<&TableFieldSchema>) -> Value {
        match (cells.get(i), field) {
            (Some(c), Some(f)) => types::value(c, f),
            _ => Value::Null,
        }
    }

    pub fn row(&self, cells: &Cells) -> Row {
        Row::new(
            self.fields
                .iter()
                .enumerate()
                .map(|(i, f)| Self::cell(cells, i, f.as_ref()))
                .collect(),
        )
    }

    /// A key read by a query selecting only the key columns.
    pub fn key(&self, cells: &Cells) -> Vec<Value> {
        self.key_columns()
            .iter()
            .enumerate()
            .map(|(i, &k)| Self::cell(cells, i, self.fields[k].as_ref()))
            .collect()
    }
}
