//! BSON values → cartridge-warp values and column types (docs/postgres.md, Types).

use bson::spec::BinarySubtype;
use bson::Bson;
use chrono::{DateTime, Utc};
use warp_core::{ColumnType, Decimal, Value};

use crate::options::UuidRepresentation;

const TEXT: ColumnType = ColumnType::Text { max_len: None };

/// The column type a BSON value asks for; `None` for null/undefined, which type nothing.
pub fn column_type(b: &Bson, uuids: UuidRepresentation) -> Option<ColumnType> {
    Some(match b {
        Bson::Null | Bson::Undefined => return None,
        Bson::Double(_) => ColumnType::Float64,
        Bson::String(_)
        | Bson::ObjectId(_)
        | Bson::Symbol(_)
        | Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_) => TEXT,
        // A timestamp's increment orders operations within its second, and code's scope is
        // part of its value: neither has a column type of its own that keeps them.
        Bson::Document(_)
        | Bson::Array(_)
        | Bson::MinKey
        | Bson::MaxKey
        | Bson::DbPointer(_)
        | Bson::Timestamp(_)
        | Bson::JavaScriptCodeWithScope(_) => ColumnType::Json,
        Bson::Boolean(_) => ColumnType::Bool,
        Bson::Int32(_) => ColumnType::Int32,
        Bson::Int64(_) => ColumnType::Int64,
        Bson::DateTime(_) => ColumnType::TimestampTz { precision: None },
        Bson::Decimal128(_) => ColumnType::Numeric {
            precision: None,
            scale: None,
        },
        Bson::Binary(b) if uuid_of(b, uuids).is_some() => ColumnType::Uuid,
        Bson::Binary(_) => ColumnType::Bytes,
    })
}

/// The UUID a binary holds: subtype 4 in the standard byte order; subtype 3 only under a
/// legacy representation (its byte order is the writing driver's; read as `standard`,
/// a Java- or C#-written value would land as a different UUID, so it lands as bytes).
fn uuid_of(b: &bson::Binary, uuids: UuidRepresentation) -> Option<uuid::Uuid> {
    let rep = match b.subtype {
        BinarySubtype::Uuid => bson::UuidRepresentation::Standard,
        BinarySubtype::UuidOld if uuids != UuidRepresentation::Standard => uuids.bson(),
        _ => return None,
    };
    let u = b.to_uuid_with_representation(rep).ok()?;
    Some(uuid::Uuid::from_bytes(u.bytes()))
}

/// The value of a BSON field. The destination writes it into whatever its column is
/// now (a column widened to text or jsonb takes every kind of value).
pub fn value(b: &Bson, uuids: UuidRepresentation) -> Value {
    match b {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Double(f) => Value::Float64(*f),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::Text(s.clone()),

        Bson::RegularExpression(r) => Value::Text(format!("/{}/{}", r.pattern, r.options)),
        Bson::ObjectId(oid) => Value::Text(oid.to_hex()),
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Int32(i) => Value::Int(i64::from(*i)),
        Bson::Int64(i) => Value::Int(*i),
        Bson::DateTime(d) => match DateTime::<Utc>::from_timestamp_millis(d.timestamp_millis()) {
            Some(t) => Value::TimestampTz(t),
            None => Value::Unreadable(format!(
                "date {} ms is outside the representable range",
                d.timestamp_millis()
            )),
        },
        Bson::Decimal128(d) => decimal(&d.to_string()),
        Bson::Binary(bin) => match uuid_of(bin, uuids) {
            Some(u) => Value::Uuid(u),
            None => Value::Bytes(bin.bytes.clone()),
        },
        Bson::Document(_)
        | Bson::Array(_)
        | Bson::MinKey
        | Bson::MaxKey
        | Bson::DbPointer(_)
        | Bson::Timestamp(_)
        | Bson::JavaScriptCodeWithScope(_) => Value::Json(json(b)),
    }
}

/// Relaxed Extended JSON: MongoDB's own JSON form (numbers stay numbers, dates are
/// `{"$date": …}`, ObjectIds `{"$oid": …}`), so nothing is lost and tools understand it.
pub fn json(b: &Bson) -> serde_json::Value {
    b.clone().into_relaxed_extjson()
}

/// Decimal128 text (which may use an exponent, or be NaN/Infinity) as an exact decimal.
fn decimal(text: &str) -> Value {
    match text {
        "NaN" | "-NaN" => return Value::Float64(f64::NAN),
        "Infinity" => return Value::Float64(f64::INFINITY),
        "-Infinity" => return Value::Float64(f64::NEG_INFINITY),
        _ => {}
    }
    expand_exponent(text)
        .as_deref()
        .and_then(Decimal::parse)
        .map_or_else(
            || Value::Unreadable(format!("decimal128 {text} is not a number")),
            Value::Decimal,
        )
}

/// `-1.25E+3` → `-1250`, `5E-2` → `0.05`; plain numbers pass through.
fn expand_exponent(text: &str) -> Option<String> {
    let Some((mantissa, exp)) = text.split_once(['E', 'e']) else {
        return Some(text.to_owned());
    };
    let exp: i64 = exp.parse().ok()?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    // Position of the decimal point within `digits` after shifting.
    let point = i64::try_from(int.len()).ok()? + exp;
    if exp.abs() > 10_000 {
        return None;
    }
    let out = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-point).ok()?))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    Some(format!("{sign}{out}"))
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId, Binary, Decimal128, Regex, Timestamp};

    use super::*;

    #[test]
    fn every_bson_type_has_a_column_type_and_a_value() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let u = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let cases: Vec<(Bson, Option<ColumnType>, Value)> = vec![
            (
                Bson::Double(1.5),
                Some(ColumnType::Float64),
                Value::Float64(1.5),
            ),
            (
                Bson::String("a".into()),
                Some(TEXT),
                Value::Text("a".into()),
            ),
            (
                Bson::ObjectId(oid),
                Some(TEXT),
                Value::Text("65a1b2c3d4e5f60718293a4b".into()),
            ),
            (
                Bson::Boolean(true),
                Some(ColumnType::Bool),
                Value::Bool(true),
            ),
            (Bson::Int32(7), Some(ColumnType::Int32), Value::Int(7)),
            (
                Bson::Int64(1 << 40),
                Some(ColumnType::Int64),
                Value::Int(1 << 40),
            ),
            (Bson::Null, None, Value::Null),
            (
                Bson::RegularExpression(Regex {
                    pattern: "^a".into(),
                    options: "i".into(),
                }),
                Some(TEXT),
                Value::Text("/^a/i".into()),
            ),
            (
                Bson::JavaScriptCode("f()".into()),
                Some(TEXT),
                Value::Text("f()".into()),
            ),
            (
                Bson::Binary(Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: vec![1, 2],
                }),
                Some(ColumnType::Bytes),
                Value::Bytes(vec![1, 2]),
            ),
            (
                Bson::Binary(Binary {
                    subtype: BinarySubtype::Uuid,
                    bytes: u.as_bytes().to_vec(),
                }),
                Some(ColumnType::Uuid),
                Value::Uuid(u),
            ),
            (
                Bson::DateTime(bson::DateTime::from_millis(1_700_000_000_123)),
                Some(ColumnType::TimestampTz { precision: None }),
                Value::TimestampTz(DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()),
            ),
            (
                Bson::Timestamp(Timestamp {
                    time: 1_700_000_000,
                    increment: 3,
                }),
                Some(ColumnType::Json),
                Value::Json(serde_json::json!({"$timestamp": {"t": 1_700_000_000, "i": 3}})),
            ),
            (
                Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                    code: "f(x)".into(),
                    scope: doc! { "x": 1 },
                }),
                Some(ColumnType::Json),
                Value::Json(serde_json::json!({"$code": "f(x)", "$scope": {"x": 1}})),
            ),
            (
                Bson::Decimal128("1234.5678".parse::<Decimal128>().unwrap()),
                Some(ColumnType::Numeric {
                    precision: None,
                    scale: None,
                }),
                Value::Decimal(Decimal::parse("1234.5678").unwrap()),
            ),
            (
                Bson::MinKey,
                Some(ColumnType::Json),
                Value::Json(serde_json::json!({"$minKey": 1})),
            ),
            (
                Bson::Document(doc! { "a": 1, "b": [true] }),
                Some(ColumnType::Json),
                Value::Json(serde_json::json!({"a": 1, "b": [true]})),
            ),
        ];
        for (bson, ty, v) in cases {
            assert_eq!(column_type(&bson, STANDARD), ty, "{bson:?}");
            assert_eq!(value(&bson, STANDARD), v, "{bson:?}");
        }
    }

    const STANDARD: UuidRepresentation = UuidRepresentation::Standard;

    /// The MongoDB UUID specification's vectors: one UUID as each driver stored it.
    #[test]
    fn legacy_uuids_are_read_in_their_drivers_byte_order() {
        let want = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let bin = |subtype, hex: &str| {
            Bson::Binary(Binary {
                subtype,
                bytes: (0..16)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect(),
            })
        };
        let standard = bin(BinarySubtype::Uuid, "00112233445566778899aabbccddeeff");
        for (rep, stored) in [
            (
                UuidRepresentation::JavaLegacy,
                "7766554433221100ffeeddccbbaa9988",
            ),
            (
                UuidRepresentation::CsharpLegacy,
                "33221100554477668899aabbccddeeff",
            ),
            (
                UuidRepresentation::PythonLegacy,
                "00112233445566778899aabbccddeeff",
            ),
        ] {
            let legacy = bin(BinarySubtype::UuidOld, stored);
            assert_eq!(column_type(&legacy, rep), Some(ColumnType::Uuid), "{rep:?}");
            assert_eq!(value(&legacy, rep), Value::Uuid(want), "{rep:?}");
            // Subtype 4 is standard whatever the setting.
            assert_eq!(value(&standard, rep), Value::Uuid(want), "{rep:?}");
            // Read as standard, a legacy value is bytes, never a UUID in the wrong order.
            assert_eq!(column_type(&legacy, STANDARD), Some(ColumnType::Bytes));
            assert!(matches!(value(&legacy, STANDARD), Value::Bytes(b) if b.len() == 16));
        }
        let short = Bson::Binary(Binary {
            subtype: BinarySubtype::UuidOld,
            bytes: vec![1, 2, 3],
        });
        assert_eq!(
            value(&short, UuidRepresentation::JavaLegacy),
            Value::Bytes(vec![1, 2, 3]),
            "not 16 bytes: not a UUID"
        );
    }

    #[test]
    fn decimal128_exponents_become_exact_decimals() {
        for (text, want) in [
            ("-1.25E+3", "-1250"),
            ("5E-2", "0.05"),
            ("1.000", "1.000"),
            ("12E+0", "12"),
            ("1.5E+1", "15"),
        ] {
            assert_eq!(
                decimal(text),
                Value::Decimal(Decimal::parse(want).unwrap()),
                "{text}"
            );
        }
        assert!(matches!(decimal("NaN"), Value::Float64(f) if f.is_nan()));
        assert!(matches!(decimal("1E+99999"), Value::Unreadable(_)));
    }
}
