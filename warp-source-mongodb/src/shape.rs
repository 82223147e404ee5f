//! A collection's table shape, inferred from its documents (docs/postgres.md): `_id` is the
//! key, each top-level field a typed column (sub-document fields flattened to
//! `parent_child` columns up to `flatten_depth`), an optional `_doc` column with the
//! whole document. Every document read may grow the shape: a new field adds a column,
//! a value that does not fit its column widens it (docs/postgres.md, Schema evolution; documents always widen,
//! to text or jsonb at worst, so nothing is refused).

use std::collections::HashMap;

use bson::{Bson, Document};
use warp_core::schema::{type_change, TypeChange};
use warp_core::{Column, ColumnType, Row, SchemaChange, TableId, TableSchema, Value};

use crate::convert;
use crate::ids::IdForm;
use crate::options::UuidRepresentation;

pub const ID: &str = "_id";
pub const DOC: &str = "_doc";
/// The jsonb column that holds, per row, the fields beyond [`MAX_FIELD_COLUMNS`].
pub const OVERFLOW: &str = "_overflow";

/// The most field columns a collection's table gets. PostgreSQL allows 1,600 columns
/// (dropped ones included) and a row of at most one 8 KB page for values it cannot move
/// out of line: 800 eight-byte columns leave room for the bookkeeping columns and row
/// header. Fields first seen after the budget is spent land in [`OVERFLOW`] instead of
/// failing the table (SQLSTATE 54011).
pub const MAX_FIELD_COLUMNS: usize = 800;

/// Per-collection shape settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub flatten_depth: u32,
    pub document_column: bool,
    pub uuids: UuidRepresentation,
    /// How `_id`s become keys: the landing table's form.
    pub ids: IdForm,
}

impl Rules {
    /// A collection's rules from its read settings and the source's UUID representation.
    pub fn of(read: &warp_core::ReadSettings, uuids: UuidRepresentation) -> Self {
        Self {
            flatten_depth: read.flatten_depth,
            document_column: read.document_column,
            uuids,
            ids: IdForm::of(read.landing),
        }
    }

    /// The document's fields as (column name, value), `_id` excluded.
    pub fn fields<'d>(&self, doc: &'d Document) -> Vec<(String, &'d Bson)> {
        let mut out = Vec::with_capacity(doc.len());
        collect(doc, "", self.flatten_depth, &mut out);
        out
    }

    /// A shape from sampled documents.
    pub fn infer(&self, id: TableId, docs: &[Document]) -> TableSchema {
        let mut schema = TableSchema {
            id,
            columns: vec![Column::new(ID, ColumnType::Text { max_len: None }).not_null()],
            primary_key: vec![ID.to_owned()],
        };
        for doc in docs {
            self.evolve(&mut schema, doc);
        }
        if self.document_column {
            schema.columns.push(Column::new(DOC, ColumnType::Json));
        }
        schema
    }

    /// Grows `schema` to fit `doc`; returns the changes made, in order.
    pub fn evolve(&self, schema: &mut TableSchema, doc: &Document) -> Vec<SchemaChange> {
        let mut changes = Vec::new();
        // Counted once per document, when a field without a column first shows.
        let mut field_count = None;
        for (name, value) in self.fields(doc) {
            // A null types nothing: the column appears with the first typed value.
            let Some(ty) = convert::column_type(value, self.uuids) else {
                continue;
            };
            let change = match schema.column_index(&name) {
                None => {
                    let count = field_count.get_or_insert_with(|| field_columns(schema));
                    if *count < MAX_FIELD_COLUMNS {
                        *count += 1;
                        SchemaChange::AddColumn(Column::new(name, ty))
                    } else if schema.column_index(OVERFLOW).is_none() {
                        SchemaChange::AddColumn(Column::new(OVERFLOW, ColumnType::Json))
                    } else {
                        continue;
                    }
                }
                Some(i) => match type_change(&schema.columns[i].column_type, &ty) {
                    TypeChange::Keep => continue,
                    TypeChange::Widen(to) => SchemaChange::AlterColumnType { name, to },
                    TypeChange::Incompatible => SchemaChange::AlterColumnType {
                        name,
                        to: ColumnType::Text { max_len: None },
                    },
                },
            };
            // Cannot fail: the column's presence was just checked.
            let _ = schema.apply(&change);
            changes.push(change);
        }
        changes
    }
}

/// Columns that hold one field each: all but `_id`, `_doc` and `_overflow`.
fn field_columns(schema: &TableSchema) -> usize {
    schema
        .columns
        .iter()
        .filter(|c| ![ID, DOC, OVERFLOW].contains(&c.name.as_str()))
        .count()
}

fn collect<'d>(doc: &'d Document, prefix: &str, depth: u32, out: &mut Vec<(String, &'d Bson)>) {
    for (k, v) in doc {
        if prefix.is_empty() && k == ID {
            continue;
        }
        let name = format!("{prefix}{k}");
        match v {
            Bson::Document(sub) if depth > 0 => collect(sub, &format!("{name}_"), depth - 1, out),
            _ => out.push((name, v)),
        }
    }
}

/// Column positions of one shape, for building rows quickly.
pub struct Layout {
    rules: Rules,
    width: usize,
    index: HashMap<String, usize>,
    id: usize,
    doc: Option<usize>,
    overflow: Option<usize>,
}

impl Layout {
    pub fn new(rules: Rules, schema: &TableSchema) -> Self {
        let index: HashMap<String, usize> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Self {
            rules,
            width: schema.columns.len(),
            id: index.get(ID).copied().unwrap_or(0),
            doc: rules
                .document_column
                .then(|| index.get(DOC).copied())
                .flatten(),
            overflow: index.get(OVERFLOW).copied(),
            index,
        }
    }

    /// The row of `doc`; fields the shape lacks are not in it (callers evolve first),
    /// except that once the shape has an overflow column they are in it, by field name,
    /// each value as the `_doc` column writes it (NULL when none). A field absent from the document
    /// (never set, or `$unset`) is NULL.
    pub fn row(&self, doc: &Document) -> Row {
        let mut values = vec![Value::Null; self.width];
        if let Some(id) = doc.get(ID) {
            values[self.id] = Value::Text(self.rules.ids.text(id));
        }
        let mut overflow = serde_json::Map::new();
        for (name, v) in self.rules.fields(doc) {
            match self.index.get(&name) {
                Some(&i) => values[i] = convert::value(v, self.rules.uuids),
                None if self.overflow.is_some() => {
                    overflow.insert(name, convert::json(v));
                }
                None => {}
            }
        }
        if let (Some(i), false) = (self.overflow, overflow.is_empty()) {
            values[i] = Value::Json(serde_json::Value::Object(overflow));
        }
        if let Some(i) = self.doc {
            values[i] = Value::Json(convert::json(&Bson::Document(doc.clone())));
        }
        Row::new(values)
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    fn names(s: &TableSchema) -> Vec<&str> {
        s.columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn sampled_fields_become_typed_columns_and_nulls_wait_for_a_type() {
        let rules = Rules::default();
        let s = rules.infer(
            TableId::new("db", "c"),
            &[
                doc! {"_id": 1, "a": 1, "n": null},
                doc! {"_id": 2, "b": "x", "a": 2},
            ],
        );
        assert_eq!(names(&s), ["_id", "a", "b"]);
        assert_eq!(s.columns[1].column_type, ColumnType::Int32);
        assert_eq!(s.primary_key, ["_id"]);
    }

    #[test]
    fn later_documents_add_and_widen_columns() {
        let rules = Rules::default();
        let mut s = rules.infer(TableId::new("db", "c"), &[doc! {"_id": 1, "a": 1}]);
        let changes = rules.evolve(&mut s, &doc! {"_id": 2, "a": 1_i64 << 40, "z": true});
        assert_eq!(
            changes,
            [
                SchemaChange::AlterColumnType {
                    name: "a".into(),
                    to: ColumnType::Int64
                },
                SchemaChange::AddColumn(Column::new("z", ColumnType::Bool)),
            ]
        );
        // A string where integers were: text. An object: jsonb. Then nothing narrows.
        rules.evolve(&mut s, &doc! {"_id": 3, "a": "seven"});
        assert_eq!(s.columns[1].column_type, ColumnType::Text { max_len: None });
        rules.evolve(&mut s, &doc! {"_id": 4, "a": {"x": 1}});
        assert_eq!(s.columns[1].column_type, ColumnType::Json);
        assert!(rules.evolve(&mut s, &doc! {"_id": 5, "a": 3}).is_empty());
    }

    #[test]
    fn flattening_and_the_document_column() {
        let rules = Rules {
            flatten_depth: 1,
            document_column: true,
            ..Rules::default()
        };
        let d = doc! {"_id": "k", "addr": {"city": "Oslo", "geo": {"lat": 1.5}}, "tags": ["a"]};
        let s = rules.infer(TableId::new("db", "c"), std::slice::from_ref(&d));
        assert_eq!(names(&s), ["_id", "addr_city", "addr_geo", "tags", "_doc"]);
        let row = Layout::new(rules, &s).row(&d);
        assert_eq!(row.values[0], Value::Text("k".into()));
        assert_eq!(row.values[1], Value::Text("Oslo".into()));
        assert_eq!(row.values[2], Value::Json(serde_json::json!({"lat": 1.5})));
        assert_eq!(row.values[3], Value::Json(serde_json::json!(["a"])));
        assert!(matches!(&row.values[4], Value::Json(j) if j["addr"]["city"] == "Oslo"));
        // An unset field reads NULL.
        let row = Layout::new(rules, &s).row(&doc! {"_id": "k"});
        assert_eq!(row.values[1], Value::Null);
    }

    #[test]
    fn fields_beyond_the_column_budget_land_in_the_overflow_column() {
        let rules = Rules::default();
        let wide: Document = (0..MAX_FIELD_COLUMNS + 5)
            .map(|i| (format!("f{i:04}"), Bson::Int32(i as i32)))
            .collect();
        let mut first = doc! {"_id": 1};
        first.extend(wide);
        let mut s = rules.infer(TableId::new("db", "c"), std::slice::from_ref(&first));
        assert_eq!(
            s.columns.len(),
            1 + MAX_FIELD_COLUMNS + 1,
            "_id, the budget, overflow"
        );
        assert_eq!(s.columns.last().unwrap().name, OVERFLOW);
        let row = Layout::new(rules, &s).row(&first);
        assert_eq!(row.values[MAX_FIELD_COLUMNS], Value::Int(799));
        assert_eq!(
            row.values[MAX_FIELD_COLUMNS + 1],
            Value::Json(serde_json::json!({
                "f0800": 800, "f0801": 801, "f0802": 802, "f0803": 803, "f0804": 804
            }))
        );
        // A new field later joins the overflow without a schema change; a row without
        // overflowing fields has NULL there; known columns still widen.
        assert!(rules
            .evolve(&mut s, &doc! {"_id": 2, "new": "x"})
            .is_empty());
        let row = Layout::new(rules, &s).row(&doc! {"_id": 2, "new": "x", "f0000": 5});
        assert_eq!(
            row.values[MAX_FIELD_COLUMNS + 1],
            Value::Json(serde_json::json!({"new": "x"}))
        );
        let row = Layout::new(rules, &s).row(&doc! {"_id": 3, "f0000": 5});
        assert_eq!(row.values[MAX_FIELD_COLUMNS + 1], Value::Null);
        assert_eq!(
            rules
                .evolve(&mut s, &doc! {"_id": 4, "f0000": "text"})
                .len(),
            1
        );
    }
}
