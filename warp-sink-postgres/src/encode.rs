//! Values → PostgreSQL text input, and COPY text-format framing. A value that cannot be
//! represented in its column is an error (the row goes to the dead-letter table), never
//! a silent 0, empty string or NULL.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use warp_core::{ColumnType, Row, Value};

/// Why a value does not fit its column.
pub type Mismatch = String;

/// Appends `row` as one COPY text line: its values (typed by `columns`) then `extra`
/// fields (already in text form, `None` for NULL). On error nothing is appended.
pub fn copy_line(
    out: &mut String,
    row: &Row,
    columns: &[(&str, &ColumnType)],
    extra: &[Option<&str>],
) -> Result<(), Mismatch> {
    let start = out.len();
    let result = (|| {
        if row.values.len() != columns.len() {
            return Err(format!(
                "row has {} values for {} columns",
                row.values.len(),
                columns.len()
            ));
        }
        for (i, (value, (name, ty))) in row.values.iter().zip(columns).enumerate() {
            if i > 0 {
                out.push('\t');
            }
            field(out, value, ty).map_err(|e| format!("column {name}: {e}"))?;
        }
        for (i, value) in extra.iter().enumerate() {
            if i > 0 || !columns.is_empty() {
                out.push('\t');
            }
            match value {
                Some(text) => escape_copy(out, text)?,
                None => out.push_str("\\N"),
            }
        }
        out.push('\n');
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn field(out: &mut String, value: &Value, ty: &ColumnType) -> Result<(), Mismatch> {
    use ColumnType as T;
    // The common cases are written straight into the buffer (this is the snapshot hot
    // path); everything else goes through `pg_text`.
    match (ty, value) {
        (_, Value::Null) => out.push_str("\\N"),
        (T::Int64 | T::UInt64 | T::Numeric { .. }, Value::Int(i)) => {
            let _ = write!(out, "{i}");
        }
        (T::Text { .. }, Value::Text(s)) => escape_copy(out, s)?,
        (T::UInt64 | T::Numeric { .. }, Value::Decimal(d)) => out.push_str(d.as_str()),
        (T::Timestamp { .. }, Value::Timestamp(t)) if t.year() >= 1 => write_timestamp(out, *t),
        (T::TimestampTz { .. }, Value::TimestampTz(t)) if t.year() >= 1 => {
            write_timestamp(out, t.naive_utc());
            out.push_str("+00");
        }
        (T::Json, Value::Json(j)) => escape_copy(out, json_checked(&j.to_string())?)?,
        (T::Json, Value::JsonText(text)) => escape_copy(out, json_checked(text)?)?,
        _ => escape_copy(out, &pg_text(value, ty)?)?,
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` digit by digit: `write!` with width specifiers still
/// cost 8% of the snapshot's CPU (chrono's strftime, before it, more).
fn write_timestamp(out: &mut String, t: NaiveDateTime) {
    let year = u32::try_from(t.year()).unwrap_or(0);
    push_padded(out, year, 4);
    out.push('-');
    push_padded(out, t.month(), 2);
    out.push('-');
    push_padded(out, t.day(), 2);
    out.push(' ');
    push_padded(out, t.hour(), 2);
    out.push(':');
    push_padded(out, t.minute(), 2);
    out.push(':');
    push_padded(out, t.second(), 2);
    out.push('.');
    // A leap second's nanoseconds exceed 10⁹; PostgreSQL has no leap seconds.
    push_padded(out, t.nanosecond() % 1_000_000_000 / 1000, 6);
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, mut n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut start = digits.len();
    while n > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = start.min(digits.len() - width.min(digits.len()));
    digits[start..]
        .iter()
        .for_each(|&d| out.push(char::from(d)));
}

/// COPY text escaping: backslash, newline, carriage return and tab are escaped.
fn escape_copy(out: &mut String, text: &str) -> Result<(), Mismatch> {
    if !text
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t' | 0))
    {
        out.push_str(text);
        return Ok(());
    }
    if text.contains('\0') {
        return Err("contains a NUL character, which PostgreSQL text cannot store".into());
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    Ok(())
}

/// A value as PostgreSQL text input for a column of type `ty` (also used for SQL
/// literals such as column defaults).
pub fn pg_text(value: &Value, ty: &ColumnType) -> Result<String, Mismatch> {
    use ColumnType as T;
    let mismatch = || {
        format!(
            "a {} value does not fit a {} column",
            kind(value),
            crate::types::pg_type(ty)
        )
    };
    Ok(match (ty, value) {
        (_, Value::Null) => return Err("NULL has no text form".into()),
        (_, Value::Unreadable(why)) => return Err(format!("unreadable at the source: {why}")),
        (T::Bool, Value::Bool(b)) => if *b { "t" } else { "f" }.into(),
        (T::Int16, v) => {
            int_in(v, i64::from(i16::MIN), i64::from(i16::MAX)).ok_or_else(mismatch)?
        }
        (T::Int32, v) => {
            int_in(v, i64::from(i32::MIN), i64::from(i32::MAX)).ok_or_else(mismatch)?
        }
        (T::Int64, Value::Int(i)) => i.to_string(),
        (T::Int64, Value::UInt(u)) => i64::try_from(*u).map_err(|_| mismatch())?.to_string(),
        (T::UInt64 | T::Numeric { .. }, Value::Int(i)) => i.to_string(),
        (T::UInt64 | T::Numeric { .. }, Value::UInt(u)) => u.to_string(),
        (T::UInt64 | T::Numeric { .. }, Value::Decimal(d)) => d.as_str().to_owned(),
        (T::Numeric { .. }, Value::Float64(f)) => float(*f),
        (T::Numeric { .. }, Value::Float32(f)) => float(f64::from(*f)),
        (T::Float32, Value::Float32(f)) => float32(*f),
        (T::Float32, Value::Int(i)) if i.unsigned_abs() <= 1 << 24 => i.to_string(),
        (T::Float64, Value::Float64(f)) => float(*f),
        (T::Float64, Value::Float32(f)) => float(f64::from(*f)),
        (T::Float64, Value::Int(i)) if i.unsigned_abs() <= 1 << 53 => i.to_string(),
        (T::Text { .. }, Value::Text(s)) => s.clone(),
        (T::Text { .. }, Value::Json(j)) => j.to_string(),
        (T::Text { .. }, Value::JsonText(s)) => s.clone(),
        (T::Text { .. }, other) => canonical_text(other)?,
        (T::Bytes, Value::Bytes(b)) => hex_bytes(b),
        (T::Bits { .. }, Value::Bits(bits)) => {
            bits.iter().map(|b| if *b { '1' } else { '0' }).collect()
        }
        (T::Date, Value::Date(d)) => date(*d),
        (T::Time { .. }, Value::Time(t)) => time(*t),
        (T::Timestamp { .. }, Value::Timestamp(t)) => timestamp(*t),
        (T::TimestampTz { .. }, Value::TimestampTz(t)) => {
            format!("{}+00", timestamp(t.naive_utc()))
        }
        (T::Interval, Value::Interval(i)) => {
            format!(
                "{} mons {} days {} microseconds",
                i.months, i.days, i.micros
            )
        }
        (T::Json, v) => json_text(v)?,
        (T::Uuid, Value::Uuid(u)) => u.hyphenated().to_string(),
        (T::Array { element }, Value::Array(items)) => array_literal(items, element)?,
        _ => return Err(mismatch()),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::UInt(_) => "unsigned integer",
        Value::Float32(_) | Value::Float64(_) => "float",
        Value::Decimal(_) => "decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "binary",
        Value::Bits(_) => "bit string",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Interval(_) => "interval",
        Value::Json(_) | Value::JsonText(_) => "json",
        Value::Uuid(_) => "uuid",
        Value::Array(_) => "array",
        Value::Unreadable(_) => "unreadable",
    }
}

fn int_in(v: &Value, min: i64, max: i64) -> Option<String> {
    let i = match v {
        Value::Int(i) => *i,
        Value::UInt(u) => i64::try_from(*u).ok()?,
        _ => return None,
    };
    (min..=max).contains(&i).then(|| i.to_string())
}

/// Shortest text that reads back as the same double; PostgreSQL's spellings for
/// non-finite values.
fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

fn float32(f: f32) -> String {
    if f.is_finite() {
        format!("{f:?}")
    } else {
        float(f64::from(f))
    }
}

fn hex_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// ISO date; years before 1 AD in PostgreSQL's `BC` form.
fn date(d: NaiveDate) -> String {
    let y = d.year();
    if y >= 1 {
        format!("{y:04}-{:02}-{:02}", d.month(), d.day())
    } else {
        format!("{:04}-{:02}-{:02} BC", 1 - y, d.month(), d.day())
    }
}

fn time(t: NaiveTime) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() % 1_000_000_000 / 1000
    )
}

fn timestamp(t: NaiveDateTime) -> String {
    let d = date(t.date());
    match d.strip_suffix(" BC") {
        Some(d) => format!("{d} {} BC", time(t.time())),
        None => format!("{d} {}", time(t.time())),
    }
}

/// A value converted to text for a column widened to text.
fn canonical_text(v: &Value) -> Result<String, Mismatch> {
    Ok(match v {
        Value::Date(d) => date(*d),
        Value::Time(t) => time(*t),
        Value::Timestamp(t) => timestamp(*t),
        Value::TimestampTz(t) => format!("{}+00", timestamp(t.naive_utc())),
        Value::Float64(f) => float(*f),
        Value::Float32(f) => float32(*f),
        Value::Array(_) => json_text(v)?,
        other => other.to_string(),
    })
}

/// JSON text for a value landing in a `jsonb` column. Numbers keep their exact digits
/// (`jsonb` stores numbers as `numeric`).
pub fn json_text(v: &Value) -> Result<String, Mismatch> {
    let mut out = String::new();
    write_json(&mut out, v)?;
    Ok(out)
}

fn write_json(out: &mut String, v: &Value) -> Result<(), Mismatch> {
    let quoted = |out: &mut String, s: &str| out.push_str(&serde_json::Value::from(s).to_string());
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::UInt(u) => out.push_str(&u.to_string()),
        Value::Decimal(d) => out.push_str(d.as_str()),
        Value::Float64(f) if f.is_finite() => out.push_str(&float(*f)),
        Value::Float32(f) if f.is_finite() => out.push_str(&float32(*f)),
        Value::Float64(_) | Value::Float32(_) => quoted(out, &canonical_text(v)?),
        Value::Json(j) => out.push_str(json_checked(&j.to_string())?),
        Value::JsonText(text) => out.push_str(json_checked(text)?),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item)?;
            }
            out.push(']');
        }
        Value::Text(s) => quoted(out, s),
        Value::Unreadable(why) => return Err(format!("unreadable at the source: {why}")),
        other => quoted(out, &canonical_text(other)?),
    }
    Ok(())
}

/// JSON text that `jsonb` can store: it has no `\u0000` escape.
fn json_checked(text: &str) -> Result<&str, Mismatch> {
    if text.contains("\\u0000") {
        return Err("JSON contains \\u0000, which PostgreSQL jsonb cannot store".into());
    }
    Ok(text)
}

/// PostgreSQL array literal: `{"a","b",NULL}`; nested arrays unquoted.
fn array_literal(items: &[Value], element: &ColumnType) -> Result<String, Mismatch> {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match (item, element) {
            (Value::Null, _) => out.push_str("NULL"),
            (Value::Array(inner), ColumnType::Array { element }) => {
                out.push_str(&array_literal(inner, element)?)
            }
            (v, ty) => {
                out.push('"');
                for c in pg_text(v, ty)?.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(out)
}

/// `value` as an SQL literal of the column's type (`NULL`, or quoted text cast to it).
pub fn literal_of(value: &Value, ty: &ColumnType) -> crate::error::Result<String> {
    if value.is_null() {
        return Ok("NULL".into());
    }
    let text = pg_text(value, ty).map_err(crate::error::SinkError::Invalid)?;
    Ok(format!(
        "{}::{}",
        crate::ident::literal(&text),
        crate::types::pg_type(ty)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp_core::Decimal;

    #[test]
    fn copy_escapes_and_nulls() {
        let mut out = String::new();
        let row = Row::new(vec![Value::Text("a\tb\\c\nd".into()), Value::Null]);
        let text = ColumnType::Text { max_len: None };
        copy_line(&mut out, &row, &[("x", &text), ("y", &text)], &[Some("r")]).unwrap();
        assert_eq!(out, "a\\tb\\\\c\\nd\t\\N\tr\n");
    }

    #[test]
    fn failed_rows_leave_nothing_behind() {
        let mut out = String::from("kept\n");
        let row = Row::new(vec![Value::Text("x".into()), Value::Text("bad\0".into())]);
        let text = ColumnType::Text { max_len: None };
        let err = copy_line(&mut out, &row, &[("a", &text), ("b", &text)], &[]).unwrap_err();
        assert!(err.contains("column b") && err.contains("NUL"), "{err}");
        assert_eq!(out, "kept\n");
    }

    #[test]
    fn mismatches_are_errors_not_zeroes() {
        assert!(pg_text(&Value::Text("12".into()), &ColumnType::Int32).is_err());
        assert!(pg_text(&Value::Int(70_000), &ColumnType::Int16).is_err());
        assert!(pg_text(&Value::UInt(u64::MAX), &ColumnType::Int64).is_err());
        assert_eq!(
            pg_text(&Value::UInt(u64::MAX), &ColumnType::UInt64).unwrap(),
            "18446744073709551615"
        );
    }

    #[test]
    fn timestamps_are_written_digit_by_digit_as_postgres_reads_them() {
        let at = |y, mo, d, h, mi, s, us| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_micro_opt(h, mi, s, us)
                .unwrap()
        };
        for (t, want) in [
            (at(2026, 11, 26, 9, 5, 7, 42), "2026-11-26 09:05:07.000042"),
            (at(1, 1, 1, 0, 0, 0, 0), "0001-01-01 00:00:00.000000"),
            (
                at(99999, 12, 31, 23, 59, 59, 999_999),
                "99999-12-31 23:59:59.999999",
            ),
        ] {
            let mut out = String::new();
            write_timestamp(&mut out, t);
            assert_eq!(out, want);
            assert_eq!(out, timestamp(t), "the same text as the general path");
        }
    }

    #[test]
    fn text_forms() {
        let d = NaiveDate::from_ymd_opt(0, 3, 1).unwrap();
        assert_eq!(date(d), "0001-03-01 BC");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(
            pg_text(&Value::Bytes(vec![0, 255]), &ColumnType::Bytes).unwrap(),
            "\\x00ff"
        );
        let arr = Value::Array(vec![Value::Text("a\"b".into()), Value::Null]);
        let ty = ColumnType::Array {
            element: Box::new(ColumnType::Text { max_len: None }),
        };
        assert_eq!(pg_text(&arr, &ty).unwrap(), r#"{"a\"b",NULL}"#);
        let dec = Value::Decimal(Decimal::parse("123456789012345678901234567890.5").unwrap());
        assert_eq!(
            json_text(&Value::Array(vec![dec, Value::Int(1)])).unwrap(),
            "[123456789012345678901234567890.5,1]"
        );
    }
}
