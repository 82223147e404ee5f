//! `exclude_columns`: the destination shape is the source shape minus excluded columns.
//! Rows and schema changes are projected as they arrive, before batching.

use crate::event::Change;
use crate::schema::{SchemaChange, TableSchema};
use crate::value::Row;

#[derive(Debug, Clone)]
pub(crate) struct Projection {
    excluded: Vec<String>,
    /// Source column indexes kept, in order; `None` keeps every column.
    keep: Option<Vec<usize>>,
    /// Source shape, evolved by the stream (rows arrive positional against it).
    source: TableSchema,
}

impl Projection {
    pub fn new(source: TableSchema, excluded: Vec<String>) -> Self {
        let keep = (!excluded.is_empty()).then(|| {
            (0..source.columns.len())
                .filter(|&i| !excluded.contains(&source.columns[i].name))
                .collect()
        });
        Self {
            excluded,
            keep,
            source,
        }
    }

    pub fn source_schema(&self) -> &TableSchema {
        &self.source
    }

    /// The destination shape.
    pub fn destination_schema(&self) -> TableSchema {
        let mut s = self.source.clone();
        if let Some(keep) = &self.keep {
            s.columns = keep
                .iter()
                .map(|&i| self.source.columns[i].clone())
                .collect();
        }
        s
    }

    pub fn row(&self, row: Row) -> Row {
        match &self.keep {
            None => row,
            Some(keep) => Row::new(
                keep.iter()
                    .map(|&i| {
                        row.values
                            .get(i)
                            .cloned()
                            .unwrap_or(crate::value::Value::Null)
                    })
                    .collect(),
            ),
        }
    }

    pub fn rows(&self, rows: Vec<Row>) -> Vec<Row> {
        if self.keep.is_none() {
            return rows;
        }
        rows.into_iter().map(|r| self.row(r)).collect()
    }

    /// Projects one change; applies schema changes to the source shape. Returns `None`
    /// for changes to excluded columns.
    pub fn change(&mut self, change: Change) -> Result<Option<Change>, String> {
        match change {
            Change::Row(mut e) => {
                if self.keep.is_some() {
                    e.before = e.before.map(|r| self.row(r));
                    e.after = e.after.map(|r| self.row(r));
                }
                Ok(Some(Change::Row(e)))
            }
            Change::Schema(sc) => {
                self.source.apply(&sc)?;
                let touches_excluded = match &sc {
                    SchemaChange::AddColumn(c) => self.excluded.contains(&c.name),
                    SchemaChange::AlterColumnType { name, .. }
                    | SchemaChange::DropColumn { name } => self.excluded.contains(name),
                    SchemaChange::RenameColumn { from, .. } => self.excluded.contains(from),
                };
                if let (Some(keep), SchemaChange::AddColumn(_)) = (&mut self.keep, &sc) {
                    if !touches_excluded {
                        keep.push(self.source.columns.len() - 1);
                    }
                }
                Ok((!touches_excluded).then_some(Change::Schema(sc)))
            }
            Change::Truncate => Ok(Some(Change::Truncate)),
        }
    }
}
