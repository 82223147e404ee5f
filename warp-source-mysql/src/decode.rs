//! MySQL values (query results and binlog rows) → warp values, per column kind. A value
//! that cannot be read is an error for that row, never a silent 0 or empty string.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use mysql_async::Value as My;
use warp_core::{Decimal, Interval, Value};

use crate::types::Kind;

/// Decoded value, or `ZeroDate` for MySQL's `0000-00-00` (lands as NULL, counted).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Value(Value),
    ZeroDate,
}

fn text(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "not valid UTF-8".to_owned())
}

/// Where a value was read: query results and binlog rows encode SETs differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Query,
    Binlog,
    /// A query of rows that selects text columns with `snapshot::read_expr`: the stored
    /// bytes of the sets decoded here, so both paths read them through one decoder.
    Stored,
}

/// Reinterprets an integer at its storage width with the column's signedness (binlog
/// readers may hand back either interpretation).
fn int_value(raw: i128, unsigned: bool, bits: u32) -> Result<Value, String> {
    let span = 1i128 << bits;
    let v = if unsigned && raw < 0 {
        raw + span
    } else if !unsigned && raw >= span / 2 {
        raw - span
    } else {
        raw
    };
    if unsigned {
        u64::try_from(v)
            .map(Value::UInt)
            .map_err(|_| format!("{raw} out of range"))
    } else {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| format!("{raw} out of range"))
    }
}

pub fn decode(v: My, kind: &Kind) -> Result<Decoded, String> {
    decode_from(v, kind, Origin::Query)
}

pub fn decode_from(v: My, kind: &Kind, origin: Origin) -> Result<Decoded, String> {
    use Decoded::Value as V;
    if v == My::NULL {
        return Ok(V(Value::Null));
    }
    Ok(match kind {
        Kind::Int { unsigned, bits } => V(integer(v, *unsigned, *bits)?),
        Kind::Decimal => V(decimal(v)?),
        Kind::Float => V(Value::Float32(match v {
            My::Float(f) => f,
            My::Double(d) => d as f32,
            My::Bytes(b) => text(&b)?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unexpected {other:?} for a float")),
        })),
        Kind::Double => V(Value::Float64(match v {
            My::Double(d) => d,
            My::Float(f) => f64::from(f),
            My::Bytes(b) => text(&b)?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unexpected {other:?} for a double")),
        })),
        Kind::Bit { len } => V(bit(v, *len)?),
        Kind::Text { charset, .. } => V(Value::Text(match v {
            My::Bytes(b)
                if origin == Origin::Binlog
                    || (origin == Origin::Stored && charset.decoded_here()) =>
            {
                charset.decode(b)?
            }
            My::Bytes(b) => utf8(b)?,
            other => other.as_sql(true).trim_matches('\'').to_owned(),
        })),
        Kind::Binary { pad_to } => V(binary(v, *pad_to)?),
        Kind::Dropped | Kind::Unseen => V(Value::Null),
        Kind::Geometry => V(match v {
            // MySQL stores a 4-byte SRID before the WKB.
            My::Bytes(b) if b.len() > 4 => Value::Bytes(b[4..].to_vec()),
            other => return Err(format!("unexpected {other:?} for geometry")),
        }),
        Kind::Date => date_value(v)?,
        Kind::DateTime => match datetime(v)? {
            None => Decoded::ZeroDate,
            Some(t) => V(Value::Timestamp(t)),
        },
        Kind::Timestamp => timestamp(v)?,
        Kind::Time => V(Value::Interval(time(v)?)),
        Kind::Year => V(Value::Int(year(v, origin)?)),
        Kind::Json => V(json(v)?),
        Kind::Enum { labels } => V(enumeration(v, labels)?),
        Kind::Set { labels } => V(Value::Array(set(v, labels, origin)?)),
    })
}

fn utf8(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|_| "not valid UTF-8".to_owned())
}

fn integer(v: My, unsigned: bool, bits: u32) -> Result<Value, String> {
    match v {
        My::Int(i) => int_value(i128::from(i), unsigned, bits),
        My::UInt(u) => int_value(i128::from(u), unsigned, bits),
        My::Bytes(b) => {
            let s = text(&b)?;
            let n = s.parse::<i128>().map_err(|e| format!("{s}: {e}"))?;
            int_value(n, unsigned, bits)
        }
        other => Err(format!("unexpected {other:?} for an integer")),
    }
}

fn decimal(v: My) -> Result<Value, String> {
    Ok(Value::Decimal(match v {
        My::Bytes(b) => {
            let s = text(&b)?;
            Decimal::parse(s).ok_or_else(|| format!("not a decimal: {s}"))?
        }
        My::Int(i) => Decimal::parse(&i.to_string()).ok_or("not a decimal")?,
        other => return Err(format!("unexpected {other:?} for a decimal")),
    }))
}

/// A `BIT(len)`: a single bit as a boolean, more as a bit string.
fn bit(v: My, len: u32) -> Result<Value, String> {
    let bits: Vec<bool> = match v {
        My::Bytes(b) => {
            let all: Vec<bool> = (b.iter())
                .flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1 == 1))
                .collect();
            let len = len as usize;
            if all.len() >= len {
                all[all.len() - len..].to_vec()
            } else {
                let mut padded = vec![false; len - all.len()];
                padded.extend(all);
                padded
            }
        }
        My::UInt(u) => (0..len).rev().map(|i| u >> i & 1 == 1).collect(),
        My::Int(i) => (0..len).rev().map(|b| (i as u64) >> b & 1 == 1).collect(),
        other => return Err(format!("unexpected {other:?} for a bit column")),
    };
    Ok(if len == 1 {
        Value::Bool(bits[0])
    } else {
        Value::Bits(bits)
    })
}

/// `BINARY(n)` values come back to their declared length: the binlog drops trailing
/// zero bytes.
fn binary(v: My, pad_to: Option<u32>) -> Result<Value, String> {
    match v {
        My::Bytes(mut b) => {
            if let Some(len) = pad_to {
                let len = len as usize;
                if b.len() < len {
                    b.resize(len, 0);
                }
            }
            Ok(Value::Bytes(b))
        }
        other => Err(format!("unexpected {other:?} for binary")),
    }
}

fn date_value(v: My) -> Result<Decoded, String> {
    Ok(match v {
        My::Date(0, 0, 0, ..) => Decoded::ZeroDate,
        My::Date(y, m, d, ..) => Decoded::Value(Value::Date(date(y, m, d)?)),
        My::Bytes(b) => match text(&b)? {
            s if s.starts_with("0000-00-00") => Decoded::ZeroDate,
            s => Decoded::Value(Value::Date(
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("{s}: {e}"))?,
            )),
        },
        other => return Err(format!("unexpected {other:?} for a date")),
    })
}

fn timestamp(v: My) -> Result<Decoded, String> {
    Ok(match v {
        // Binlog: seconds since the epoch as text, with optional fraction (UTC).
        My::Bytes(b) if !b.contains(&b'-') => {
            let s = text(&b)?;
            let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
            let secs: i64 = secs.parse().map_err(|e| format!("{s}: {e}"))?;
            if secs == 0 && frac.trim_matches('0').is_empty() {
                return Ok(Decoded::ZeroDate);
            }
            let micros: u32 = format!("{frac:0<6}")[..6]
                .parse()
                .map_err(|e| format!("{s}: {e}"))?;
            let t =
                DateTime::from_timestamp(secs, micros * 1000).ok_or("timestamp out of range")?;
            Decoded::Value(Value::TimestampTz(t))
        }
        // Query results, read in a UTC session.
        other => match datetime(other)? {
            None => Decoded::ZeroDate,
            Some(t) => Decoded::Value(Value::TimestampTz(
                DateTime::<Utc>::from_naive_utc_and_offset(t, Utc),
            )),
        },
    })
}

fn time(v: My) -> Result<Interval, String> {
    match v {
        My::Time(neg, days, h, m, s, us) => {
            let micros = (((i64::from(days) * 24 + i64::from(h)) * 60 + i64::from(m)) * 60
                + i64::from(s))
                * 1_000_000
                + i64::from(us);
            Ok(Interval {
                months: 0,
                days: 0,
                micros: if neg { -micros } else { micros },
            })
        }
        My::Bytes(b) => time_text(text(&b)?),
        other => Err(format!("unexpected {other:?} for a time")),
    }
}

fn year(v: My, origin: Origin) -> Result<i64, String> {
    let year: i64 = match v {
        My::Int(i) => i,
        My::UInt(u) => i64::try_from(u).map_err(|e| e.to_string())?,
        My::Bytes(b) => text(&b)?.parse().map_err(|e| format!("{e}"))?,
        other => return Err(format!("unexpected {other:?} for a year")),
    };
    // The binlog stores a YEAR as its offset from 1900 and `0000` as 0; readers that add
    // 1900 give 1900, which no YEAR column holds (1901–2155 or 0000).
    Ok(if origin == Origin::Binlog && year == 1900 {
        0
    } else {
        year
    })
}

/// Checked without building a tree, and passed on as text (see `Value::JsonText`).
fn json(v: My) -> Result<Value, String> {
    match v {
        My::Bytes(b) => {
            let text = String::from_utf8(b).map_err(|_| "JSON is not valid UTF-8".to_owned())?;
            serde_json::from_str::<serde::de::IgnoredAny>(&text)
                .map_err(|e| format!("invalid JSON: {e}"))?;
            Ok(Value::JsonText(text))
        }
        other => Err(format!("unexpected {other:?} for JSON")),
    }
}

fn enumeration(v: My, labels: &[String]) -> Result<Value, String> {
    Ok(Value::Text(match v {
        My::Bytes(b) => utf8(b)?,
        // Binlog: 1-based index; 0 is MySQL's "invalid value" (the empty string).
        My::Int(_) | My::UInt(_) => match index(&v)? {
            0 => String::new(),
            i => (labels.get(i - 1).cloned()).ok_or(format!("enum index {i} out of range"))?,
        },
        other => return Err(format!("unexpected {other:?} for an enum")),
    }))
}

fn set(v: My, labels: &[String], origin: Origin) -> Result<Vec<Value>, String> {
    Ok(match v {
        // Binlog: the bitmask as little-endian bytes.
        My::Bytes(b) if origin == Origin::Binlog => {
            let mask = (b.iter().rev()).fold(0u64, |m, byte| m << 8 | u64::from(*byte));
            set_members(mask, labels)
        }
        My::Bytes(b) => match text(&b)? {
            "" => Vec::new(),
            s => s.split(',').map(|l| Value::Text(l.to_owned())).collect(),
        },
        // Binlog: a bitmask over the labels.
        My::Int(_) | My::UInt(_) => set_members(index(&v)? as u64, labels),
        other => return Err(format!("unexpected {other:?} for a set")),
    })
}

/// The labels whose bits are set in `mask`.
fn set_members(mask: u64, labels: &[String]) -> Vec<Value> {
    labels
        .iter()
        .enumerate()
        .filter(|(i, _)| mask >> i & 1 == 1)
        .map(|(_, l)| Value::Text(l.clone()))
        .collect()
}

fn index(v: &My) -> Result<usize, String> {
    match v {
        My::Int(i) => usize::try_from(*i).map_err(|e| e.to_string()),
        My::UInt(u) => usize::try_from(*u).map_err(|e| e.to_string()),
        _ => Err("not an index".into()),
    }
}

fn date(y: u16, m: u8, d: u8) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
        .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))
}

fn datetime(v: My) -> Result<Option<NaiveDateTime>, String> {
    match v {
        My::Date(0, 0, 0, ..) => Ok(None),
        My::Date(y, mo, d, h, mi, s, us) => {
            let t = NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
                .ok_or("invalid time")?;
            Ok(Some(date(y, mo, d)?.and_time(t)))
        }
        My::Bytes(b) => {
            let s = text(&b)?;
            if s.starts_with("0000-00-00") {
                return Ok(None);
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .map(Some)
                .map_err(|e| format!("{s}: {e}"))
        }
        other => Err(format!("unexpected {other:?} for a datetime")),
    }
}

/// `-838:59:59.000000` → interval.
fn time_text(s: &str) -> Result<Interval, String> {
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (hms, frac) = body.split_once('.').unwrap_or((body, ""));
    let parts: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|e| format!("{s}: {e}")))
        .collect::<Result<_, _>>()?;
    let [h, m, sec] = parts[..] else {
        return Err(format!("not a time: {s}"));
    };
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6]
            .parse()
            .map_err(|e| format!("{s}: {e}"))?
    };
    let micros = ((h * 60 + m) * 60 + sec) * 1_000_000 + us;
    Ok(Interval {
        months: 0,
        days: 0,
        micros: if neg { -micros } else { micros },
    })
}

/// A warp key value as a query parameter.
pub fn to_param(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) => My::UInt(*u),
        Value::Float32(f) => My::Float(*f),
        Value::Float64(f) => My::Double(*f),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Date(d) => My::Bytes(d.format("%Y-%m-%d").to_string().into_bytes()),
        Value::Timestamp(t) => {
            My::Bytes(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes())
        }
        Value::TimestampTz(t) => {
            My::Bytes(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into_bytes())
        }
        other => My::Bytes(other.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: My, k: Kind) -> Value {
        match decode(v, &k).unwrap() {
            Decoded::Value(v) => v,
            Decoded::ZeroDate => panic!("zero date"),
        }
    }

    #[test]
    fn binlog_shapes() {
        assert_eq!(
            ok(My::Bytes(b"1700000000.123456".to_vec()), Kind::Timestamp),
            Value::TimestampTz(DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap())
        );
        assert_eq!(
            decode(My::Bytes(b"0".to_vec()), &Kind::Timestamp).unwrap(),
            Decoded::ZeroDate
        );
        let labels = vec!["small".to_owned(), "large".to_owned()];
        assert_eq!(
            ok(
                My::Int(2),
                Kind::Enum {
                    labels: labels.clone()
                }
            ),
            Value::Text("large".into())
        );
        assert_eq!(
            ok(My::UInt(3), Kind::Set { labels }),
            Value::Array(vec![
                Value::Text("small".into()),
                Value::Text("large".into())
            ])
        );
        assert_eq!(
            ok(My::Bytes(vec![0b0000_0101]), Kind::Bit { len: 3 }),
            Value::Bits(vec![true, false, true])
        );
        assert_eq!(
            ok(My::Bytes(vec![1]), Kind::Bit { len: 1 }),
            Value::Bool(true)
        );
        assert_eq!(
            ok(My::Bytes(b"-12.50".to_vec()), Kind::Decimal),
            Value::Decimal(Decimal::parse("-12.50").unwrap())
        );
        assert_eq!(
            decode(My::Date(0, 0, 0, 0, 0, 0, 0), &Kind::DateTime).unwrap(),
            Decoded::ZeroDate
        );
        assert_eq!(
            ok(My::Time(true, 1, 2, 3, 4, 5), Kind::Time),
            Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: -(((26 * 60 + 3) * 60 + 4) * 1_000_000 + 5)
            })
        );
        assert_eq!(
            ok(My::Bytes(b"838:59:59.5".to_vec()), Kind::Time),
            Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: ((838 * 60 + 59) * 60 + 59) * 1_000_000 + 500_000
            })
        );
    }

    #[test]
    fn integers_are_read_at_their_width() {
        let signed24 = Kind::Int {
            unsigned: false,
            bits: 24,
        };
        assert_eq!(
            ok(My::Int(8_388_608), signed24.clone()),
            Value::Int(-8_388_608)
        );
        assert_eq!(ok(My::Int(-5), signed24), Value::Int(-5));
        assert_eq!(
            ok(
                My::Int(-1),
                Kind::Int {
                    unsigned: true,
                    bits: 16
                }
            ),
            Value::UInt(65535)
        );
        assert_eq!(
            ok(
                My::Int(-1),
                Kind::Int {
                    unsigned: true,
                    bits: 64
                }
            ),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            ok(
                My::UInt(u64::MAX),
                Kind::Int {
                    unsigned: false,
                    bits: 64
                }
            ),
            Value::Int(-1)
        );
        let set = Kind::Set {
            labels: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(
            decode_from(My::Bytes(vec![5]), &set, Origin::Binlog).unwrap(),
            Decoded::Value(Value::Array(vec![
                Value::Text("a".into()),
                Value::Text("c".into())
            ]))
        );
        assert_eq!(
            decode_from(My::Bytes(b"a,c".to_vec()), &set, Origin::Query).unwrap(),
            Decoded::Value(Value::Array(vec![
                Value::Text("a".into()),
                Value::Text("c".into())
            ]))
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(decode(My::Bytes(vec![0xff, 0xfe]), &Kind::text()).is_err());
        assert!(decode(My::Bytes(b"abc".to_vec()), &Kind::Decimal).is_err());
        assert!(decode(My::Bytes(b"{bad".to_vec()), &Kind::Json).is_err());
    }
}
