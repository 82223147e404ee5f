//! The benchmark table: 12 realistic columns, generated deterministically from the key.

use chrono::{DateTime, NaiveDate, Utc};
use warp_core::{Column, ColumnType, Decimal, Row, TableId, TableSchema, Value};

pub fn schema(name: &str) -> TableSchema {
    use ColumnType as T;
    let cols = [
        ("id", T::Int64),
        ("customer_id", T::Int32),
        ("status", T::Int16),
        ("sku", T::Text { max_len: Some(32) }),
        ("title", T::Text { max_len: Some(200) }),
        (
            "amount",
            T::Numeric {
                precision: Some(12),
                scale: Some(2),
            },
        ),
        ("quantity", T::Int32),
        ("created_at", T::Timestamp { precision: Some(6) }),
        ("updated_at", T::TimestampTz { precision: Some(6) }),
        ("attributes", T::Json),
        ("note", T::Text { max_len: None }),
        ("priority", T::Int16),
    ];
    TableSchema {
        id: TableId::new("bench", name),
        columns: cols.into_iter().map(|(n, t)| Column::new(n, t)).collect(),
        primary_key: vec!["id".into()],
    }
}

const CHANNELS: [&str; 3] = ["web", "app", "store"];

/// `--json heavy`: every row's `attributes` also carries 1–4 line items (the issue's
/// heavy-JSON table); light otherwise.
static HEAVY_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn use_heavy_json(heavy: bool) {
    HEAVY_JSON.store(heavy, std::sync::atomic::Ordering::Relaxed);
}

fn attributes(id: i64) -> serde_json::Value {
    let mut a = serde_json::json!({ "channel": CHANNELS[(id % 3) as usize], "gift": id % 11 == 0, "tags": [id % 5, id % 13] });
    if HEAVY_JSON.load(std::sync::atomic::Ordering::Relaxed) {
        let items: Vec<serde_json::Value> = (0..=id % 4)
            .map(|k| {
                let sku = (id * 7 + k) % 100_000;
                let size = ["S", "M", "L"][((id + k) % 3) as usize];
                serde_json::json!({
                    "sku": format!("SKU-{sku:08}"),
                    "name": format!("Item {sku}, assorted colours"),
                    "quantity": (id + k) % 9 + 1,
                    "unit_price": format!("{}.{:02}", sku % 500, (id + k) % 100),
                    "options": { "size": size, "gift_wrap": k % 2 == 0 },
                })
            })
            .collect();
        a["items"] = serde_json::Value::Array(items);
    }
    a
}

/// Row `id` (same every run).
pub fn row(id: i64) -> Row {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let created = base + chrono::Duration::microseconds(id * 1_234_567);
    let updated: DateTime<Utc> =
        DateTime::from_naive_utc_and_offset(created + chrono::Duration::minutes(id % 600), Utc);
    Row::new(vec![
        Value::Int(id),
        Value::Int(id % 50_000),
        Value::Int(id % 7),
        Value::Text(format!("SKU-{:08}", id % 100_000)),
        Value::Text(format!(
            "Order {id} for customer {} — assorted items",
            id % 50_000
        )),
        Value::Decimal(Decimal::parse(&format!("{}.{:02}", id % 100_000, id % 100)).unwrap()),
        Value::Int(id % 20 + 1),
        Value::Timestamp(created),
        Value::TimestampTz(updated),
        Value::Json(attributes(id)),
        if id % 4 == 0 {
            Value::Null
        } else {
            Value::Text(format!("note {id}"))
        },
        Value::Int(id % 3),
    ])
}
