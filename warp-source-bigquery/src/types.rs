//! BigQuery field types → column types, and REST cells → values (docs/postgres.md, Types).

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use serde_json::Value as J;
use warp_core::{ColumnType, Decimal, Interval, Value};

fn repeated(f: &TableFieldSchema) -> bool {
    f.mode.as_deref() == Some("REPEATED")
}

pub fn column_type(f: &TableFieldSchema) -> ColumnType {
    if repeated(f) {
        return ColumnType::Json;
    }
    match f.r#type {
        FieldType::Integer | FieldType::Int64 => ColumnType::Int64,
        FieldType::Float | FieldType::Float64 => ColumnType::Float64,
        FieldType::Numeric => ColumnType::Numeric {
            precision: Some(38),
            scale: Some(9),
        },
        FieldType::Bignumeric => ColumnType::Numeric {
            precision: None,
            scale: None,
        },
        FieldType::Boolean | FieldType::Bool => ColumnType::Bool,
        FieldType::String | FieldType::Geography => ColumnType::Text { max_len: None },
        FieldType::Bytes => ColumnType::Bytes,
        FieldType::Date => ColumnType::Date,
        FieldType::Datetime => ColumnType::Timestamp { precision: Some(6) },
        FieldType::Time => ColumnType::Time { precision: Some(6) },
        FieldType::Timestamp => ColumnType::TimestampTz { precision: Some(6) },
        FieldType::Json | FieldType::Record | FieldType::Struct => ColumnType::Json,
        FieldType::Interval => ColumnType::Interval,
    }
}

/// One cell (`{"v": …}`'s content) of field `f`. A value that cannot be read becomes
/// [`Value::Unreadable`], which the destination dead-letters with the reason.
pub fn value(cell: &J, f: &TableFieldSchema) -> Value {
    if cell.is_null() {
        return Value::Null;
    }
    if repeated(f) || matches!(f.r#type, FieldType::Record | FieldType::Struct) {
        return match json(cell, f) {
            Ok(j) => Value::Json(j),
            Err(e) => Value::Unreadable(format!("{}: {e}", f.name)),
        };
    }
    let Some(text) = cell.as_str() else {
        return Value::Unreadable(format!("{}: unexpected cell {cell}", f.name));
    };
    scalar(text, &f.r#type).unwrap_or_else(|e| Value::Unreadable(format!("{}: {e}", f.name)))
}

fn scalar(text: &str, ty: &FieldType) -> Result<Value, String> {
    let bad = |what: &str| format!("{text:?} is not a {what}");
    Ok(match ty {
        FieldType::Integer | FieldType::Int64 => {
            Value::Int(text.parse().map_err(|_| bad("INT64"))?)
        }
        FieldType::Float | FieldType::Float64 => {
            Value::Float64(text.parse().map_err(|_| bad("FLOAT64"))?)
        }
        FieldType::Numeric | FieldType::Bignumeric => {
            Value::Decimal(Decimal::parse(text).ok_or_else(|| bad("NUMERIC"))?)
        }
        FieldType::Boolean | FieldType::Bool => match text {
            "true" | "TRUE" => Value::Bool(true),
            "false" | "FALSE" => Value::Bool(false),
            _ => return Err(bad("BOOL")),
        },
        FieldType::String | FieldType::Geography => Value::Text(text.to_owned()),
        FieldType::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad("base64 BYTES"))?,
        ),
        FieldType::Date => {
            Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad("DATE"))?)
        }
        FieldType::Datetime => Value::Timestamp(
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                .map_err(|_| bad("DATETIME"))?,
        ),
        FieldType::Time => {
            Value::Time(NaiveTime::parse_from_str(text, "%H:%M:%S%.f").map_err(|_| bad("TIME"))?)
        }
        FieldType::Timestamp => {
            Value::TimestampTz(timestamp(text).ok_or_else(|| bad("TIMESTAMP"))?)
        }
        FieldType::Json => Value::Json(serde_json::from_str(text).map_err(|_| bad("JSON"))?),
        FieldType::Interval => Value::Interval(interval(text).ok_or_else(|| bad("INTERVAL"))?),
        FieldType::Record | FieldType::Struct => return Err(bad("scalar")),
    })
}

/// Integer microseconds (`useInt64Timestamp`, and the emulator), or float seconds (the
/// REST API's default rendering, and what `getQueryResults` pages carry: the client
/// library cannot send `formatOptions` there).
pub fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(micros) = text.parse::<i64>() {
        return DateTime::from_timestamp_micros(micros);
    }
    DateTime::from_timestamp_micros(seconds_to_micros(text)?)
}

/// `1.704067210123456E9` (seconds) as exact microseconds: decimal digits scaled by
/// the exponent, not through a float.
fn seconds_to_micros(text: &str) -> Option<i64> {
    let (mantissa, exp) = match text.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = exp + 6 - i32::try_from(frac.len()).ok()?;
    let micros = if scale >= 0 {
        digits.checked_mul(10_i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        let div = 10_i128.checked_pow(scale.unsigned_abs())?;
        (digits + div / 2) / div
    };
    i64::try_from(if negative { -micros } else { micros }).ok()
}

/// BigQuery's canonical interval text `Y-M D H:M:S[.F]` (each part may be signed).
fn interval(text: &str) -> Option<Interval> {
    let mut parts = text.split_whitespace();
    let (ym, d, hms) = (parts.next()?, parts.next()?, parts.next()?);
    let (neg_ym, ym) = ym.strip_prefix('-').map_or((false, ym), |r| (true, r));
    let (y, m) = ym.split_once('-')?;
    let months = y.parse::<i32>().ok()? * 12 + m.parse::<i32>().ok()?;
    let (neg_t, hms) = hms.strip_prefix('-').map_or((false, hms), |r| (true, r));
    let mut t = hms.splitn(3, ':');
    let (h, mi, s) = (t.next()?, t.next()?, t.next()?);
    let seconds: f64 = s.parse().ok()?;
    let micros = (h.parse::<i64>().ok()? * 3600 + mi.parse::<i64>().ok()? * 60) * 1_000_000
        + (seconds * 1e6).round() as i64;
    Some(Interval {
        months: if neg_ym { -months } else { months },
        days: d.parse().ok()?,
        micros: if neg_t { -micros } else { micros },
    })
}

/// A cell as JSON: arrays as arrays, records as objects by field name, numbers exact.
fn json(cell: &J, f: &TableFieldSchema) -> Result<J, String> {
    if cell.is_null() {
        return Ok(J::Null);
    }
    if repeated(f) {
        let items = cell.as_array().ok_or("REPEATED cell is not an array")?;
        let element = TableFieldSchema {
            mode: None,
            ..f.clone()
        };
        return items
            .iter()
            .map(|i| json(i.get("v").unwrap_or(&J::Null), &element))
            .collect::<Result<Vec<_>, _>>()
            .map(J::Array);
    }
    if matches!(f.r#type, FieldType::Record | FieldType::Struct) {
        let cells = cell
            .get("f")
            .and_then(J::as_array)
            .ok_or("RECORD cell without fields")?;
        let fields = f.fields.as_deref().unwrap_or_default();
        let mut out = serde_json::Map::new();
        for (c, sub) in cells.iter().zip(fields) {
            out.insert(sub.name.clone(), json(c.get("v").unwrap_or(&J::Null), sub)?);
        }
        return Ok(J::Object(out));
    }
    let text = cell.as_str().ok_or("unexpected cell")?;
    Ok(match scalar(text, &f.r#type)? {
        Value::Int(i) => J::from(i),
        Value::Float64(x) => serde_json::Number::from_f64(x).map_or(J::from(text), J::Number),
        Value::Bool(b) => J::Bool(b),
        Value::Json(j) => j,
        Value::TimestampTz(t) => J::from(t.to_rfc3339()),
        // Exact decimals, dates, times, bytes (base64): their BigQuery text.
        _ => J::from(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, ty: FieldType) -> TableFieldSchema {
        TableFieldSchema::new(name, ty)
    }

    #[test]
    fn every_type_maps_and_decodes() {
        let cases: Vec<(FieldType, &str, ColumnType, Value)> = vec![
            (FieldType::Int64, "-7", ColumnType::Int64, Value::Int(-7)),
            (
                FieldType::Float64,
                "1.5",
                ColumnType::Float64,
                Value::Float64(1.5),
            ),
            (
                FieldType::Numeric,
                "1.230000000",
                ColumnType::Numeric {
                    precision: Some(38),
                    scale: Some(9),
                },
                Value::Decimal(Decimal::parse("1.230000000").unwrap()),
            ),
            (
                FieldType::Bignumeric,
                "12345678901234567890.5",
                ColumnType::Numeric {
                    precision: None,
                    scale: None,
                },
                Value::Decimal(Decimal::parse("12345678901234567890.5").unwrap()),
            ),
            (FieldType::Bool, "true", ColumnType::Bool, Value::Bool(true)),
            (
                FieldType::String,
                "x",
                ColumnType::Text { max_len: None },
                Value::Text("x".into()),
            ),
            (
                FieldType::Bytes,
                "YWI=",
                ColumnType::Bytes,
                Value::Bytes(b"ab".to_vec()),
            ),
            (
                FieldType::Date,
                "2024-02-03",
                ColumnType::Date,
                Value::Date(NaiveDate::from_ymd_opt(2024, 2, 3).unwrap()),
            ),
            (
                FieldType::Datetime,
                "2024-01-01T10:00:00.250000",
                ColumnType::Timestamp { precision: Some(6) },
                Value::Timestamp(
                    NaiveDate::from_ymd_opt(2024, 1, 1)
                        .unwrap()
                        .and_hms_milli_opt(10, 0, 0, 250)
                        .unwrap(),
                ),
            ),
            (
                FieldType::Time,
                "10:00:00.500000",
                ColumnType::Time { precision: Some(6) },
                Value::Time(NaiveTime::from_hms_milli_opt(10, 0, 0, 500).unwrap()),
            ),
            (
                FieldType::Timestamp,
                "1704067200000000",
                ColumnType::TimestampTz { precision: Some(6) },
                Value::TimestampTz(DateTime::from_timestamp(1_704_067_200, 0).unwrap()),
            ),
            (
                FieldType::Json,
                "{\"a\":1}",
                ColumnType::Json,
                Value::Json(serde_json::json!({"a": 1})),
            ),
            (
                FieldType::Geography,
                "POINT(1 2)",
                ColumnType::Text { max_len: None },
                Value::Text("POINT(1 2)".into()),
            ),
            (
                FieldType::Interval,
                "1-2 3 4:5:6.5",
                ColumnType::Interval,
                Value::Interval(Interval {
                    months: 14,
                    days: 3,
                    micros: 14_706_500_000,
                }),
            ),
        ];
        for (ty, text, col, v) in cases {
            let f = field("c", ty);
            assert_eq!(column_type(&f), col, "{text}");
            assert_eq!(value(&J::from(text), &f), v, "{text}");
        }
        assert_eq!(
            timestamp("1.7040672E9"),
            DateTime::from_timestamp(1_704_067_200, 0),
            "float seconds, the REST default"
        );
        // Sixteen significant digits, exact to the microsecond.
        assert_eq!(
            timestamp("1.704067210123457E9"),
            DateTime::from_timestamp_micros(1_704_067_210_123_457)
        );
        assert_eq!(
            timestamp("1704067210.5"),
            DateTime::from_timestamp_micros(1_704_067_210_500_000)
        );
        assert_eq!(
            timestamp("-1.5E-1"),
            DateTime::from_timestamp_micros(-150_000)
        );
        assert_eq!(timestamp("1.2.3"), None);
        assert!(matches!(
            value(&J::from("x"), &field("c", FieldType::Int64)),
            Value::Unreadable(_)
        ));
    }

    #[test]
    fn arrays_and_records_become_json() {
        let mut tags = field("tags", FieldType::String);
        tags.mode = Some("REPEATED".into());
        assert_eq!(column_type(&tags), ColumnType::Json);
        let cell = serde_json::json!([{"v": "x"}, {"v": "y"}]);
        assert_eq!(
            value(&cell, &tags),
            Value::Json(serde_json::json!(["x", "y"]))
        );
        let mut rec = field("s", FieldType::Record);
        rec.fields = Some(vec![
            field("a", FieldType::Int64),
            field("t", FieldType::Timestamp),
        ]);
        let cell = serde_json::json!({"f": [{"v": "5"}, {"v": "0"}]});
        assert_eq!(
            value(&cell, &rec),
            Value::Json(serde_json::json!({"a": 5, "t": "1970-01-01T00:00:00+00:00"}))
        );
    }
}
