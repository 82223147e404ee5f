//! Logical column types ↔ PostgreSQL types (SPEC §5.1), and which changes widen.

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

/// What to do when a column's type changes from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeChange {
    /// Same type, or the destination is already wider: nothing to do.
    Keep,
    /// Widen the destination column to this type.
    Widen(ColumnType),
    /// Neither contains the other: the table's `schema_change_policy` decides.
    Incompatible,
}

/// SPEC §6 widening rules.
pub fn type_change(from: &ColumnType, to: &ColumnType) -> TypeChange {
    use ColumnType as T;
    if from == to || contains(from, to) {
        return TypeChange::Keep;
    }
    if contains(to, from) {
        return TypeChange::Widen(to.clone());
    }
    // Widen to a common type when one exists.
    let common = match (from, to) {
        (T::Float32 | T::Float64, T::Int16 | T::Int32 | T::Int64)
        | (T::Int16 | T::Int32 | T::Int64, T::Float32 | T::Float64) => Some(T::Float64),
        (T::Text { .. }, _) | (_, T::Text { .. }) => Some(T::Text { max_len: None }),
        _ => None,
    };
    common.map_or(TypeChange::Incompatible, TypeChange::Widen)
}

/// Whether every value of `inner` is exactly representable in `outer`.
fn contains(outer: &ColumnType, inner: &ColumnType) -> bool {
    use ColumnType as T;
    let int_rank = |t: &T| match t {
        T::Int16 => Some(1),
        T::Int32 => Some(2),
        T::Int64 => Some(3),
        _ => None,
    };
    match (outer, inner) {
        (a, b) if a == b => true,
        (T::Text { max_len: None }, _) => true,
        (T::Json, _) => true,
        (T::Text { max_len: Some(m) }, T::Text { max_len: Some(n) }) => m >= n,
        (
            T::Numeric {
                precision: None, ..
            },
            T::Int16 | T::Int32 | T::Int64 | T::UInt64 | T::Numeric { .. },
        ) => true,
        (
            T::Numeric {
                precision: Some(p),
                scale,
            },
            T::Numeric {
                precision: Some(q),
                scale: s2,
            },
        ) => {
            let (s, s2) = (scale.unwrap_or(0), s2.unwrap_or(0));
            s >= s2 && p - s >= q - s2
        }
        (
            T::Numeric {
                precision: Some(p),
                scale,
            },
            other,
        ) => {
            let digits = match other {
                T::Int16 => 5,
                T::Int32 => 10,
                T::Int64 => 19,
                T::UInt64 => 20,
                _ => return false,
            };
            p - scale.unwrap_or(0) >= digits
        }
        (T::UInt64, T::Int16 | T::Int32) => false,
        (T::Float64, T::Float32 | T::Int16 | T::Int32) => true,
        (T::Float32, T::Int16) => true,
        (
            T::Timestamp { precision: a } | T::TimestampTz { precision: a },
            T::Timestamp { precision: b },
        ) if matches!(outer, T::Timestamp { .. }) => a.unwrap_or(6) >= b.unwrap_or(6),
        (T::TimestampTz { precision: a }, T::TimestampTz { precision: b }) => {
            a.unwrap_or(6) >= b.unwrap_or(6)
        }
        (T::Time { precision: a }, T::Time { precision: b }) => a.unwrap_or(6) >= b.unwrap_or(6),
        (T::Bits { len: a }, T::Bits { len: b }) => a >= b,
        (T::Array { element: a }, T::Array { element: b }) => contains(a, b),
        (a, b) => matches!((int_rank(a), int_rank(b)), (Some(x), Some(y)) if x >= y),
    }
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

    #[test]
    fn widening_rules() {
        assert_eq!(
            type_change(&T::Int32, &T::Int64),
            TypeChange::Widen(T::Int64)
        );
        assert_eq!(
            type_change(&T::Int64, &T::Int32),
            TypeChange::Keep,
            "narrowing keeps the wider column"
        );
        assert_eq!(
            type_change(
                &T::Int32,
                &T::Numeric {
                    precision: Some(12),
                    scale: Some(2)
                }
            ),
            TypeChange::Widen(T::Numeric {
                precision: Some(12),
                scale: Some(2)
            })
        );
        assert_eq!(
            type_change(&T::Float32, &T::Float64),
            TypeChange::Widen(T::Float64)
        );
        assert_eq!(
            type_change(
                &T::Text { max_len: Some(10) },
                &T::Text { max_len: Some(20) }
            ),
            TypeChange::Widen(T::Text { max_len: Some(20) })
        );
        assert_eq!(
            type_change(&T::Int64, &T::Text { max_len: Some(5) }),
            TypeChange::Widen(T::Text { max_len: None })
        );
        assert_eq!(type_change(&T::Bool, &T::Json), TypeChange::Widen(T::Json));
        assert_eq!(type_change(&T::Date, &T::Uuid), TypeChange::Incompatible);
    }
}
