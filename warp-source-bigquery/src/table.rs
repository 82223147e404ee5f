//! A BigQuery table as the source reads it: its fields, aligned to the engine's view.

use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use warp_core::schema::{type_change, TypeChange};
use warp_core::{Column, ColumnType, Row, SchemaChange, TableId, TableSchema, Value};

use crate::metadata::Described;
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
    /// A condition every partition meets, for tables that refuse queries without a
    /// filter on their partitioning column (`requirePartitionFilter`).
    pub partition_filter: Option<String>,
    /// Columns of types the client library cannot decode (RANGE, and types BigQuery adds
    /// later), selected as `TO_JSON_STRING(…)` and typed JSON.
    pub json_columns: Vec<String>,
    /// The table's first clustering column: a query over a range of it reads only the
    /// blocks holding the range (and is billed for those).
    pub clustered_by: Option<String>,
    /// The table's logical bytes as its metadata states them (0 when it does not).
    pub bytes: u64,
}

/// The condition, true for every row, that a table requiring a partition filter gets in
/// each query: BigQuery accepts a filter when at least one of its `AND`ed predicates
/// references only the partitioning column, and this one spans every partition — rows
/// whose value is NULL (`__NULL__`) and, for integer ranges, values outside the range
/// (`__UNPARTITIONED__`), and for ingestion-time tables the streaming buffer, whose
/// `_PARTITIONTIME` is NULL. `None` when the table does not require a filter.
fn partition_filter(meta: &Table) -> Option<String> {
    let time = meta.time_partitioning.as_ref();
    let required = meta.require_partition_filter == Some(true)
        || time.and_then(|t| t.require_partition_filter) == Some(true);
    if !required {
        return None;
    }
    let fields = meta.schema.fields.as_deref().unwrap_or_default();
    let type_of = |name: &str| fields.iter().find(|f| f.name == name).map(|f| &f.r#type);
    let (column, ceiling) = match (time, meta.range_partitioning.as_ref()) {
        (Some(t), _) => match t.field.as_deref() {
            // Ingestion-time partitioning: the pseudocolumn.
            None => ("_PARTITIONTIME".to_owned(), TIMESTAMP_CEILING),
            Some(f) => (
                quote(f),
                match type_of(f) {
                    Some(FieldType::Date) => "DATE '9999-12-31'",
                    Some(FieldType::Datetime) => "DATETIME '9999-12-31 23:59:59.999999'",
                    _ => TIMESTAMP_CEILING,
                },
            ),
        },
        (None, Some(r)) => (
            quote(r.field.as_deref().unwrap_or_default()),
            "9223372036854775807",
        ),
        // Required without a partitioning the API describes: nothing to filter on.
        (None, None) => return None,
    };
    Some(format!("({column} IS NULL OR {column} <= {ceiling})"))
}

const TIMESTAMP_CEILING: &str = "TIMESTAMP '9999-12-31 23:59:59.999999+00'";

impl BqTable {
    /// The table `tables.get` described, keyed by `key`.
    pub fn new(project: &str, id: TableId, described: Described, key: Vec<String>) -> Self {
        let partition_filter = partition_filter(&described.table);
        let clustered_by = described
            .table
            .clustering
            .as_ref()
            .and_then(|c| c.fields.as_ref()?.first().cloned());
        let bytes = described
            .table
            .num_bytes
            .as_deref()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        let fields = described.table.schema.fields.unwrap_or_default();
        let json_columns = described.as_json.into_iter().map(|(c, _)| c).collect();
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
            partition_filter,
            json_columns,
            clustered_by,
            bytes,
        }
    }

    /// `FROM` the table `WHERE` every one of `conditions` holds (and the partition filter
    /// where the table requires one).
    pub fn scan_where<S: AsRef<str>>(&self, conditions: &[S]) -> String {
        let all: Vec<String> = conditions
            .iter()
            .map(|c| format!("({})", c.as_ref()))
            .chain(self.partition_filter.clone())
            .collect();
        if all.is_empty() {
            format!("FROM {}", self.path)
        } else {
            format!("FROM {} WHERE {}", self.path, all.join(" AND "))
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
            partition_filter: self.partition_filter.clone(),
            json_columns: self.json_columns.clone(),
            clustered_by: self.clustered_by.clone(),
            bytes: self.bytes,
        }
    }

    /// This table (the engine's view) followed to the shape `described` has now: columns
    /// added at the source are appended, columns dropped read NULL from now on (kept at
    /// the destination), a changed type widens as the other sources' do (to text where
    /// no type holds both). The changes are what the destination must apply, in order.
    pub fn follow(&self, described: Described) -> (Self, Vec<SchemaChange>) {
        let now = Self::new("", self.schema.id.clone(), described, Vec::new());
        let field = |name: &str| {
            now.fields
                .iter()
                .flatten()
                .find(|f| f.name == name)
                .cloned()
        };
        let mut next = self.clone();
        next.partition_filter = now.partition_filter.clone();
        next.json_columns = now.json_columns.clone();
        next.clustered_by = now.clustered_by.clone();
        next.bytes = now.bytes;
        let mut changes = Vec::new();
        for (i, column) in self.schema.columns.iter().enumerate() {
            let found = field(&column.name);
            match (&self.fields[i], &found) {
                (Some(_), None) => changes.push(SchemaChange::DropColumn {
                    name: column.name.clone(),
                }),
                (_, Some(f)) => {
                    let to = types::column_type(f);
                    let change = match type_change(&column.column_type, &to) {
                        TypeChange::Keep => None,
                        TypeChange::Widen(to) => Some(to),
                        TypeChange::Incompatible => Some(ColumnType::Text { max_len: None }),
                    };
                    if let Some(to) = change {
                        next.schema.columns[i].column_type = to.clone();
                        changes.push(SchemaChange::AlterColumnType {
                            name: column.name.clone(),
                            to,
                        });
                    }
                }
                (None, None) => {}
            }
            next.fields[i] = found;
        }
        for (f, c) in now.fields.iter().zip(&now.schema.columns) {
            if self.schema.column_index(&c.name).is_none() {
                // Nullable at the destination whatever the source says: rows landed
                // before it existed have no value.
                let added = Column::new(c.name.clone(), c.column_type.clone());
                next.schema.columns.push(added.clone());
                next.fields.push(f.clone());
                changes.push(SchemaChange::AddColumn(added));
            }
        }
        (next, changes)
    }

    /// The select list (columns dropped at the source read NULL).
    pub fn select_list(&self) -> String {
        self.fields
            .iter()
            .zip(&self.schema.columns)
            .map(|(f, c)| match f {
                Some(_) if self.json_columns.contains(&c.name) => {
                    format!("TO_JSON_STRING({0}) AS {0}", quote(&c.name))
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `tables.get` answer in the API's shape, with `extra` fields merged in.
    fn meta(extra: serde_json::Value) -> Table {
        let mut t = serde_json::json!({
            "kind": "bigquery#table",
            "tableReference": { "projectId": "p", "datasetId": "d", "tableId": "t" },
            "schema": { "fields": [
                { "name": "id", "type": "INTEGER", "mode": "REQUIRED" },
                { "name": "day", "type": "DATE" },
                { "name": "seen", "type": "DATETIME" },
                { "name": "at", "type": "TIMESTAMP" }
            ] },
            "type": "TABLE"
        });
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(t).unwrap()
    }

    #[test]
    fn a_required_partition_filter_spans_every_partition_of_each_kind() {
        let cases = [
            (
                serde_json::json!({ "requirePartitionFilter": true,
                    "rangePartitioning": { "field": "id", "range": { "start": "0", "end": "100", "interval": "10" } } }),
                "(`id` IS NULL OR `id` <= 9223372036854775807)",
            ),
            // The flag where older tables keep it.
            (
                serde_json::json!({ "timePartitioning": { "type": "DAY", "field": "day", "requirePartitionFilter": true } }),
                "(`day` IS NULL OR `day` <= DATE '9999-12-31')",
            ),
            (
                serde_json::json!({ "requirePartitionFilter": true, "timePartitioning": { "type": "HOUR", "field": "seen" } }),
                "(`seen` IS NULL OR `seen` <= DATETIME '9999-12-31 23:59:59.999999')",
            ),
            (
                serde_json::json!({ "requirePartitionFilter": true, "timePartitioning": { "type": "MONTH", "field": "at" } }),
                "(`at` IS NULL OR `at` <= TIMESTAMP '9999-12-31 23:59:59.999999+00')",
            ),
            // Ingestion time: the pseudocolumn (NULL for rows in the streaming buffer).
            (
                serde_json::json!({ "requirePartitionFilter": true, "timePartitioning": { "type": "DAY" } }),
                "(_PARTITIONTIME IS NULL OR _PARTITIONTIME <= TIMESTAMP '9999-12-31 23:59:59.999999+00')",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(
                partition_filter(&meta(extra.clone())).as_deref(),
                Some(want),
                "{extra}"
            );
        }
        let optional = serde_json::json!({ "timePartitioning": { "type": "DAY", "field": "day" } });
        assert_eq!(partition_filter(&meta(optional)), None);
        assert_eq!(partition_filter(&meta(serde_json::json!({}))), None);
    }

    #[test]
    fn every_query_gets_the_partition_filter_beside_its_own_conditions() {
        let m = meta(serde_json::json!({ "requirePartitionFilter": true,
            "timePartitioning": { "type": "DAY", "field": "day" } }));
        let described = Described {
            table: m,
            as_json: Vec::new(),
        };
        let t = BqTable::new("p", TableId::new("d", "t"), described, vec!["id".into()]);
        assert_eq!(
            t.scan_where::<&str>(&[]),
            "FROM `p.d.t` WHERE (`day` IS NULL OR `day` <= DATE '9999-12-31')"
        );
        // A condition with its own OR stays whole.
        assert_eq!(
            t.scan_where(&["a > 1 OR b"]),
            "FROM `p.d.t` WHERE (a > 1 OR b) AND (`day` IS NULL OR `day` <= DATE '9999-12-31')"
        );
        let aligned = t.aligned(&t.schema);
        assert_eq!(aligned.partition_filter, t.partition_filter);
    }

    fn described(fields: serde_json::Value) -> Described {
        Described {
            table: meta(serde_json::json!({ "schema": { "fields": fields } })),
            as_json: Vec::new(),
        }
    }

    #[test]
    fn following_the_metadata_adds_drops_and_widens_columns() {
        let t = BqTable::new(
            "p",
            TableId::new("d", "t"),
            described(serde_json::json!([
                { "name": "id", "type": "INTEGER", "mode": "REQUIRED" },
                { "name": "gone", "type": "STRING" },
                { "name": "n", "type": "INTEGER" }
            ])),
            vec!["id".into()],
        );
        let (next, changes) = t.follow(described(serde_json::json!([
            { "name": "id", "type": "INTEGER", "mode": "REQUIRED" },
            { "name": "n", "type": "NUMERIC" },
            { "name": "added", "type": "STRING", "mode": "REQUIRED" }
        ])));
        assert_eq!(
            changes,
            [
                SchemaChange::DropColumn {
                    name: "gone".into()
                },
                SchemaChange::AlterColumnType {
                    name: "n".into(),
                    to: next.schema.columns[2].column_type.clone()
                },
                SchemaChange::AddColumn(Column::new("added", ColumnType::Text { max_len: None })),
            ]
        );
        assert_eq!(
            next.select_list(),
            "`id`, NULL AS `gone`, `n`, `added`",
            "a dropped column reads NULL"
        );
        assert_eq!(next.path, t.path);
        assert!(next
            .follow(described(serde_json::json!([
                { "name": "id", "type": "INTEGER", "mode": "REQUIRED" },
                { "name": "n", "type": "NUMERIC" },
                { "name": "added", "type": "STRING", "mode": "REQUIRED" }
            ])))
            .1
            .is_empty());
    }
}
