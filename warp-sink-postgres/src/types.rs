//! Logical column types ↔ PostgreSQL types (docs/postgres.md, Types), and which changes widen.

use warp_core::ColumnType;

/// The PostgreSQL type a column of `ty` lands as.
pub fn pg_type(ty: &ColumnType) -> String {
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int16 => "smallint".into(),
        ColumnType::Int32 => "integer".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::UInt64 => "numeric(20,0)".into(),
        ColumnType::Numeric {
            precision: Some(p),
            scale,
        } => format!("numeric({p},{})", scale.unwrap_or(0)),
        ColumnType::Numeric {
            precision: None, ..
        } => "numeric".into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Text { max_len: Some(n) } => format!("character varying({n})"),
        ColumnType::Text { max_len: None } => "text".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Bits { len } => format!("bit varying({len})"),
        ColumnType::Date => "date".into(),
        ColumnType::Time { precision } => with_precision("time without time zone", *precision),
        ColumnType::Timestamp { precision } => {
            with_precision("timestamp without time zone", *precision)
        }
        ColumnType::TimestampTz { precision } => {
            with_precision("timestamp with time zone", *precision)
        }
        ColumnType::Interval => "interval".into(),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Array { element } => format!("{}[]", pg_type(element)),
    }
}

fn with_precision(base: &str, precision: Option<u32>) -> String {
    match (precision, base.split_once(' ')) {
        (Some(p), Some((head, rest))) => format!("{head}({p}) {rest}"),
        _ => base.to_owned(),
    }
}

/// Parses `format_type()` output back into a logical type (for tables that exist).
pub fn parse_pg_type(text: &str) -> Option<ColumnType> {
    if let Some(element) = text.strip_suffix("[]") {
        return Some(ColumnType::Array {
            element: Box::new(parse_pg_type(element)?),
        });
    }
    let (base, args) = match text.find('(') {
        Some(i) => {
            let close = text.find(')')?;
            let rest = format!("{}{}", &text[..i], &text[close + 1..]);
            (rest, Some(&text[i + 1..close]))
        }
        None => (text.to_owned(), None),
    };
    let nums: Vec<u32> = args
        .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let first = nums.first().copied();
    Some(match base.as_str() {
        "boolean" => ColumnType::Bool,
        "smallint" => ColumnType::Int16,
        "integer" => ColumnType::Int32,
        "bigint" => ColumnType::Int64,
        "numeric" if nums == [20, 0] => ColumnType::UInt64,
        "numeric" => ColumnType::Numeric {
            precision: first,
            scale: nums.get(1).copied(),
        },
        "real" => ColumnType::Float32,
        "double precision" => ColumnType::Float64,
        "character varying" => ColumnType::Text { max_len: first },
        "text" => ColumnType::Text { max_len: None },
        "bytea" => ColumnType::Bytes,
        "bit varying" => ColumnType::Bits { len: first? },
        "date" => ColumnType::Date,
        "time without time zone" => ColumnType::Time { precision: first },
        "timestamp without time zone" => ColumnType::Timestamp { precision: first },
        "timestamp with time zone" => ColumnType::TimestampTz { precision: first },
        "interval" => ColumnType::Interval,
        "jsonb" => ColumnType::Json,
        "uuid" => ColumnType::Uuid,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType as T;

    #[test]
    fn every_type_round_trips_through_its_pg_name() {
        let types = [
            T::Bool,
            T::Int16,
            T::Int32,
            T::Int64,
            T::UInt64,
            T::Numeric {
                precision: Some(12),
                scale: Some(2),
            },
            T::Numeric {
                precision: None,
                scale: None,
            },
            T::Float32,
            T::Float64,
            T::Text { max_len: Some(40) },
            T::Text { max_len: None },
            T::Bytes,
            T::Bits { len: 5 },
            T::Date,
            T::Time { precision: Some(3) },
            T::Timestamp { precision: Some(6) },
            T::TimestampTz { precision: None },
            T::Interval,
            T::Json,
            T::Uuid,
            T::Array {
                element: Box::new(T::Text { max_len: None }),
            },
        ];
        for t in types {
            assert_eq!(
                parse_pg_type(&pg_type(&t)),
                Some(t.clone()),
                "{}",
                pg_type(&t)
            );
        }
    }
}
