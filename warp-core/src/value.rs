//! The source-neutral value model: every type listed in docs/postgres.md (Types) travels without loss.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// An exact decimal kept as its canonical text (`-12.340`), because MySQL `DECIMAL(65,30)`
/// and BigQuery `BIGNUMERIC` exceed every fixed-width decimal crate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decimal(String);

impl Decimal {
    /// Accepts `[-+]digits[.digits]`; rejects exponents, NaN and empty input so a bad value is
    /// an error here rather than a silently different number at the destination.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let (neg, body) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
            return None;
        }
        let int = int.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let zero = int == "0" && frac.bytes().all(|b| b == b'0');
        let mut out = String::with_capacity(t.len() + 1);
        if neg && !zero {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        Some(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (bool, &str, &str) {
        let (neg, body) = match self.0.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, self.0.as_str()),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        (neg, int, frac.trim_end_matches('0'))
    }

    /// Numeric comparison (so `1.50` == `1.5`), used for key ranges.
    pub fn cmp_numeric(&self, other: &Self) -> Ordering {
        let (na, ia, fa) = self.parts();
        let (nb, ib, fb) = other.parts();
        let magnitude = ia
            .len()
            .cmp(&ib.len())
            .then_with(|| ia.cmp(ib))
            .then_with(|| fa.cmp(fb));
        match (na, nb) {
            (false, false) => magnitude,
            (true, true) => magnitude.reverse(),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PostgreSQL-shaped interval: months, days and microseconds are kept apart because
/// a month has no fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// One cell. Variants are chosen so that every source value listed in docs/postgres.md (Types) has an exact home.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Unsigned values above `i64::MAX` (MySQL `BIGINT UNSIGNED`) stay exact.
    UInt(u64),
    Float32(f32),
    Float64(f64),
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    /// `BIT(n)` as its bits, most significant first.
    Bits(Vec<bool>),
    Date(NaiveDate),
    Time(NaiveTime),
    /// Wall-clock timestamp without zone (MySQL `DATETIME`, BigQuery `DATETIME`).
    Timestamp(NaiveDateTime),
    /// An instant (MySQL `TIMESTAMP`, BSON date, BigQuery `TIMESTAMP`).
    TimestampTz(DateTime<Utc>),
    Interval(Interval),
    Json(serde_json::Value),
    /// A JSON document kept as the source's text (MySQL/MariaDB `JSON`): not parsed and
    /// re-serialised on the way, which was a third of the snapshot's CPU. The destination
    /// parses it (`jsonb`) and refuses it there if it is not JSON.
    JsonText(String),
    Uuid(uuid::Uuid),
    Array(Vec<Value>),
    /// A source value that could not be decoded, with the reason. Never written: the
    /// destination sends its row to the dead-letter table instead of guessing.
    Unreadable(String),
}

/// Variant by variant, except that JSON compares as documents: a source's text and the
/// tree a destination reads back are equal when they hold the same JSON.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::UInt(a), Self::UInt(b)) => a == b,
            (Self::Float32(a), Self::Float32(b)) => a == b,
            (Self::Float64(a), Self::Float64(b)) => a == b,
            (Self::Decimal(a), Self::Decimal(b)) => a == b,
            (Self::Text(a), Self::Text(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            (Self::Bits(a), Self::Bits(b)) => a == b,
            (Self::Date(a), Self::Date(b)) => a == b,
            (Self::Time(a), Self::Time(b)) => a == b,
            (Self::Timestamp(a), Self::Timestamp(b)) => a == b,
            (Self::TimestampTz(a), Self::TimestampTz(b)) => a == b,
            (Self::Interval(a), Self::Interval(b)) => a == b,
            (Self::Json(a), Self::Json(b)) => a == b,
            (Self::JsonText(a), Self::JsonText(b)) => {
                a == b || parse(a).is_some_and(|a| Some(a) == parse(b))
            }
            (Self::Json(a), Self::JsonText(t)) | (Self::JsonText(t), Self::Json(a)) => {
                parse(t).is_some_and(|t| t == *a)
            }
            (Self::Uuid(a), Self::Uuid(b)) => a == b,
            (Self::Array(a), Self::Array(b)) => a == b,
            (Self::Unreadable(a), Self::Unreadable(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// Rough in-memory size, used to bound batches by bytes without walking allocations.
    pub fn approx_size(&self) -> usize {
        const BASE: usize = std::mem::size_of::<Value>();
        BASE + match self {
            Self::Decimal(d) => d.0.len(),
            Self::Text(s) => s.len(),
            Self::Bytes(b) => b.len(),
            Self::Bits(b) => b.len(),
            Self::Json(j) => json_size(j),
            Self::JsonText(s) => s.len(),
            Self::Array(items) => items.iter().map(Value::approx_size).sum(),
            Self::Unreadable(why) => why.len(),
            _ => 0,
        }
    }

    /// Total order for key values of the same type (key ranges, coalescing). Values of
    /// different types order by type rank, so the order is total and stable.
    pub fn cmp_key(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (UInt(a), UInt(b)) => a.cmp(b),
            (Int(a), UInt(b)) => cmp_int_uint(*a, *b),
            (UInt(a), Int(b)) => cmp_int_uint(*b, *a).reverse(),
            (Float32(a), Float32(b)) => a.total_cmp(b),
            (Float64(a), Float64(b)) => a.total_cmp(b),
            (Decimal(a), Decimal(b)) => a.cmp_numeric(b),
            (Text(a), Text(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Time(a), Time(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (TimestampTz(a), TimestampTz(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (Bits(a), Bits(b)) => a.cmp(b),
            (Array(a), Array(b)) => cmp_keys(a, b),
            (a, b) => a.rank().cmp(&b.rank()).then_with(|| {
                // Same rank but not handled above (json, interval): compare canonical text.
                a.to_string().cmp(&b.to_string())
            }),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Bool(_) => 1,
            Self::Int(_) | Self::UInt(_) => 2,
            Self::Float32(_) | Self::Float64(_) => 3,
            Self::Decimal(_) => 4,
            Self::Text(_) => 5,
            Self::Bytes(_) => 6,
            Self::Bits(_) => 7,
            Self::Date(_) => 8,
            Self::Time(_) => 9,
            Self::Timestamp(_) => 10,
            Self::TimestampTz(_) => 11,
            Self::Interval(_) => 12,
            Self::Json(_) | Self::JsonText(_) => 13,
            Self::Uuid(_) => 14,
            Self::Array(_) => 15,
            Self::Unreadable(_) => 16,
        }
    }
}

fn cmp_int_uint(a: i64, b: u64) -> Ordering {
    u64::try_from(a).map_or(Ordering::Less, |a| a.cmp(&b))
}

/// Lexicographic order of composite keys.
pub fn cmp_keys(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.cmp_key(y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

fn json_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len() + 8,
        serde_json::Value::Array(a) => a.iter().map(json_size).sum::<usize>() + 8,
        serde_json::Value::Object(o) => {
            o.iter().map(|(k, v)| k.len() + json_size(v)).sum::<usize>() + 8
        }
        _ => 8,
    }
}

/// Canonical text form: used in logs at debug level, checksums and key display.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::UInt(u) => write!(f, "{u}"),
            Self::Float32(x) => write!(f, "{x}"),
            Self::Float64(x) => write!(f, "{x}"),
            Self::Decimal(d) => write!(f, "{d}"),
            Self::Text(s) => f.write_str(s),
            Self::Bytes(b) => {
                f.write_str("\\x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            Self::Bits(bits) => bits
                .iter()
                .try_for_each(|b| f.write_str(if *b { "1" } else { "0" })),
            Self::Date(d) => write!(f, "{d}"),
            Self::Time(t) => write!(f, "{t}"),
            Self::Timestamp(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.f")),
            Self::TimestampTz(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.fZ")),
            Self::Interval(i) => write!(f, "{} mons {} days {} us", i.months, i.days, i.micros),
            Self::Json(j) => write!(f, "{j}"),
            Self::JsonText(s) => f.write_str(s),
            Self::Uuid(u) => write!(f, "{u}"),
            Self::Unreadable(why) => write!(f, "<unreadable: {why}>"),
            Self::Array(items) => {
                f.write_str("{")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One row image, positional: `values[i]` belongs to column `i` of the table's schema
/// at the point in the stream where the row appears.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row {
    pub values: Vec<Value>,
}

impl Row {
    pub fn new(values: Vec<Value>) -> Self {
        Self { values }
    }

    pub fn approx_size(&self) -> usize {
        self.values.iter().map(Value::approx_size).sum()
    }

    /// The key values at the given column indexes.
    pub fn key(&self, key_columns: &[usize]) -> Key {
        key_columns
            .iter()
            .map(|&i| self.values.get(i).cloned().unwrap_or(Value::Null))
            .collect()
    }
}

/// Primary-key values in key-column order.
pub type Key = Vec<Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_equals_the_same_document_in_any_spelling() {
        let text = |t: &str| Value::JsonText(t.into());
        let tree = Value::Json(serde_json::json!({"a": [1, null], "b": "x"}));
        assert_eq!(text(r#"{"b": "x", "a": [1, null]}"#), tree);
        assert_eq!(tree, text(r#"{"a":[1,null],"b":"x"}"#));
        assert_eq!(text(r#"{"a": 1}"#), text(r#"{ "a" : 1 }"#));
        assert_ne!(text(r#"{"a": [1]}"#), tree);
        assert_ne!(text("{bad"), text("{bad "), "invalid text compares as text");
        assert_ne!(text("1"), Value::Int(1), "JSON is not its scalar");
        assert_eq!(Value::Float64(0.5), Value::Float64(0.5));
        assert_ne!(Value::Int(1), Value::UInt(1));
    }

    #[test]
    fn decimal_parse_is_canonical_and_strict() {
        assert_eq!(Decimal::parse("007.50").unwrap().as_str(), "7.50");
        assert_eq!(Decimal::parse("-0.000").unwrap().as_str(), "0.000");
        assert_eq!(Decimal::parse("+12").unwrap().as_str(), "12");
        assert_eq!(Decimal::parse(".5").unwrap().as_str(), "0.5");
        for bad in ["", "-", "1e5", "NaN", "1.2.3", "12a", "."] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn decimal_orders_numerically() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("1.50").cmp_numeric(&d("1.5")), Ordering::Equal);
        assert_eq!(d("10").cmp_numeric(&d("9.99")), Ordering::Greater);
        assert_eq!(d("-10").cmp_numeric(&d("-9")), Ordering::Less);
        assert_eq!(d("-1").cmp_numeric(&d("0")), Ordering::Less);
    }

    #[test]
    fn mixed_signedness_keys_order_correctly() {
        assert_eq!(Value::Int(-1).cmp_key(&Value::UInt(0)), Ordering::Less);
        assert_eq!(
            Value::UInt(u64::MAX).cmp_key(&Value::Int(i64::MAX)),
            Ordering::Greater
        );
        assert_eq!(Value::Int(5).cmp_key(&Value::UInt(5)), Ordering::Equal);
    }

    #[test]
    fn values_round_trip_through_serde() {
        let v = Value::Array(vec![
            Value::UInt(u64::MAX),
            Value::Decimal(Decimal::parse("12345678901234567890.123456789").unwrap()),
            Value::Interval(Interval {
                months: 1,
                days: -2,
                micros: 3,
            }),
            Value::Bits(vec![true, false, true]),
        ]);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
