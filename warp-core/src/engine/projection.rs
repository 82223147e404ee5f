//! `exclude_columns`: the destination shape is the source shape minus excluded columns.
//! Rows and schema changes are projected as they arrive, before batching.

use crate::event::Change;
use crate::schema::{type_change, SchemaChange, TableSchema, TypeChange};
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

    /// The same exclusions over another source shape (one recorded at a checkpoint).
    pub fn with_source(&self, source: TableSchema) -> Self {
        Self::new(source, self.excluded.clone())
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
                let Some(sc) = merge(&self.source, sc) else {
                    return Ok(None);
                };
                self.source.apply(&sc).map_err(|e| e.to_string())?;
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
            Change::Cascade(c) => {
                // The destination finds the rows by these columns.
                let needed = c.columns.iter().chain(c.recursive_on.iter().flatten());
                if let Some(missing) = needed.into_iter().find(|n| self.excluded.contains(n)) {
                    return Err(format!(
                        "foreign key {}: a parent row changed and this table's rows that reference it \
                         changed with it, but column {missing} is excluded, so they cannot be found",
                        c.constraint
                    ));
                }
                Ok(Some(Change::Cascade(c)))
            }
        }
    }
}

/// A schema change asked for by a reader that may have started from an older shape,
/// restated against the current one (`None` when the current shape already covers it).
fn merge(current: &TableSchema, change: SchemaChange) -> Option<SchemaChange> {
    let (name, to) = match change {
        SchemaChange::AddColumn(c) => match current.column_index(&c.name) {
            None => return Some(SchemaChange::AddColumn(c)),
            Some(_) => (c.name, c.column_type),
        },
        SchemaChange::AlterColumnType { name, to } => (name, to),
        other => return Some(other),
    };
    let i = current.column_index(&name)?;
    match type_change(&current.columns[i].column_type, &to) {
        TypeChange::Keep => None,
        TypeChange::Widen(to) => Some(SchemaChange::AlterColumnType { name, to }),
        // The table's schema_change_policy decides at the destination.
        TypeChange::Incompatible => Some(SchemaChange::AlterColumnType { name, to }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, ColumnType, TableId};

    #[test]
    fn stale_reshape_requests_are_restated_against_the_current_shape() {
        let current = TableSchema {
            id: TableId::new("db", "t"),
            columns: vec![
                Column::new("_id", ColumnType::Text { max_len: None }),
                Column::new("n", ColumnType::Json),
            ],
            primary_key: vec!["_id".into()],
        };
        // Another chunk already widened `n` to jsonb: a request for text is covered.
        let alter = SchemaChange::AlterColumnType {
            name: "n".into(),
            to: ColumnType::Text { max_len: None },
        };
        assert_eq!(merge(&current, alter), None);
        // A column another chunk added is not added twice; its type still merges.
        let add = SchemaChange::AddColumn(Column::new("n", ColumnType::Int32));
        assert_eq!(merge(&current, add), None);
        let add = SchemaChange::AddColumn(Column::new("m", ColumnType::Int32));
        assert_eq!(merge(&current, add.clone()), Some(add));
    }
}
