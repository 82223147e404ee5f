//! A table's metadata (`tables.get`), read past the client library's closed set of field
//! types: a column of a type it does not know (RANGE, or one BigQuery adds later) would
//! fail the whole answer, and with it discovery of every table in the dataset.

use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use serde::{Deserialize, Serialize};

use crate::client::Api;
use crate::error::{BigQueryError, Result};

/// The answer, its fields left undecoded until each is tried alone.
#[derive(Deserialize, Serialize)]
struct Raw {
    #[serde(default)]
    schema: RawSchema,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default, Deserialize, Serialize)]
struct RawSchema {
    #[serde(default)]
    fields: Vec<serde_json::Value>,
}

/// The type of a field the library cannot decode, as the service names it.
#[derive(Deserialize)]
struct Unknown {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

pub struct Described {
    pub table: Table,
    /// Columns read as JSON, with their type as BigQuery names it.
    pub as_json: Vec<(String, String)>,
}

pub async fn describe(api: &Api, project: &str, dataset: &str, table: &str) -> Result<Described> {
    let path = format!("projects/{project}/datasets/{dataset}/tables/{table}");
    decode(api.get("read table schema", &path).await?)
}

fn decode(answer: serde_json::Value) -> Result<Described> {
    let unreadable = |e: serde_json::Error| BigQueryError::Client {
        context: "read table schema".into(),
        message: format!("unreadable table metadata: {e}"),
        transient: false,
    };
    let mut raw: Raw = serde_json::from_value(answer).map_err(unreadable)?;
    let mut as_json = Vec::new();
    for field in &mut raw.schema.fields {
        if serde_json::from_value::<TableFieldSchema>(field.clone()).is_ok() {
            continue;
        }
        // Unknown here or in a nested field: the whole column travels as JSON text.
        let Unknown { name, kind } = serde_json::from_value(field.clone()).map_err(unreadable)?;
        *field = serde_json::json!({ "name": name, "type": "JSON", "mode": "NULLABLE" });
        as_json.push((name, kind));
    }
    let table = serde_json::to_value(raw)
        .and_then(serde_json::from_value)
        .map_err(unreadable)?;
    Ok(Described { table, as_json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_unknown_types_become_json_and_the_rest_decode() {
        // A `tables.get` answer in the service's shape with a RANGE column, and a record
        // holding one.
        let answer = serde_json::json!({
            "kind": "bigquery#table",
            "tableReference": { "projectId": "p", "datasetId": "d", "tableId": "t" },
            "schema": { "fields": [
                { "name": "id", "type": "INTEGER", "mode": "REQUIRED" },
                { "name": "valid", "type": "RANGE", "mode": "NULLABLE", "rangeElementType": { "type": "DATE" } },
                { "name": "periods", "type": "RECORD", "mode": "REPEATED", "fields": [
                    { "name": "p", "type": "RANGE", "rangeElementType": { "type": "TIMESTAMP" } } ] }
            ] },
            "numRows": "3",
            "requirePartitionFilter": true,
            "type": "TABLE"
        });
        let d = decode(answer).unwrap();
        assert_eq!(
            d.as_json,
            vec![
                ("valid".into(), "RANGE".into()),
                ("periods".into(), "RECORD".into())
            ]
        );
        let fields = d.table.schema.fields.unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[0].name, "id");
        assert!(matches!(
            fields[1].r#type,
            gcp_bigquery_client::model::field_type::FieldType::Json
        ));
        assert_eq!(d.table.num_rows.as_deref(), Some("3"));
        assert_eq!(d.table.require_partition_filter, Some(true));
    }
}
