//! MySQL column types (as `information_schema.COLUMNS.COLUMN_TYPE` spells them) → logical
//! types (docs/postgres.md, Types), with what decoding needs to know about each column.

use warp_core::ColumnType;

use crate::charset::Charset;

/// How values of a column are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `bits`: storage width, so binlog values can be sign-corrected.
    Int {
        unsigned: bool,
        bits: u32,
    },
    Decimal,
    Float,
    Double,
    /// `bit(1)` lands as boolean, `bit(n)` as bits.
    Bit {
        len: u32,
    },
    /// Binlog rows carry text in the column's character set. `sorts_by_bytes`: the
    /// column's collation orders values as their UTF-8 bytes do (a `_bin` collation of a
    /// UTF-8 or ASCII set), so chunk bounds compare as values.
    Text {
        charset: Charset,
        sorts_by_bytes: bool,
        /// The column's character set and collation as the catalog names them.
        named: Option<(String, String)>,
    },
    /// `pad_to`: `BINARY(n)`'s length. The binlog drops a fixed-length value's trailing
    /// zero bytes (MySQL and MariaDB alike); the server pads them back when it is read.
    Binary {
        pad_to: Option<u32>,
    },
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Json,
    Enum {
        labels: Vec<String>,
    },
    Set {
        labels: Vec<String>,
    },
    Geometry,
    /// Dropped at the source; kept at the destination, never read again.
    Dropped,
    /// In the shape a stream resumed from but not in today's catalog under this name
    /// (renamed or dropped after the checkpoint, or dropped long before it): a rows event
    /// that still carries it is decoded by what its table map says the column was.
    Unseen,
}

impl Kind {
    /// Text stored as UTF-8 (the character set is set from the catalog where known).
    pub fn text() -> Self {
        Self::Text {
            charset: Charset::Utf8,
            sorts_by_bytes: false,
            named: None,
        }
    }

    /// Whether the server orders this column's values as warp orders the decoded values
    /// (numbers numerically, text and bytes byte-wise). ENUM and SET sort by their index,
    /// insensitive collations by their weights; a TIME lands as an interval, which warp
    /// orders by its text; the server takes -0.0 and 0.0 for one float key.
    pub fn sorts_like_values(&self) -> bool {
        match self {
            Kind::Text { sorts_by_bytes, .. } => *sorts_by_bytes,
            Kind::Int { .. }
            | Kind::Decimal
            | Kind::Bit { .. }
            | Kind::Binary { .. }
            | Kind::Date
            | Kind::DateTime
            | Kind::Timestamp
            | Kind::Year => true,
            Kind::Float
            | Kind::Double
            | Kind::Time
            | Kind::Enum { .. }
            | Kind::Set { .. }
            | Kind::Json
            | Kind::Geometry
            | Kind::Dropped
            | Kind::Unseen => false,
        }
    }

    /// Variable-length bytes, as stored.
    pub fn bytes() -> Self {
        Self::Binary { pad_to: None }
    }
}

/// One source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlColumn {
    pub name: String,
    pub kind: Kind,
    pub column_type: ColumnType,
}

/// Maps a `COLUMN_TYPE` (`int(10) unsigned`, `decimal(12,2)`, `enum('a','b')`, …).
pub fn map(column_type: &str) -> Result<(Kind, ColumnType), String> {
    let raw = column_type.trim();
    // Only the type's words are case-insensitive: ENUM and SET labels keep their case.
    let t = raw.to_ascii_lowercase();
    let unsigned = t.contains(" unsigned");
    let base = t.split(['(', ' ']).next().unwrap_or("");
    let args = t
        .find('(')
        .and_then(|i| t[i + 1..].find(')').map(|j| &t[i + 1..i + 1 + j]));
    let nums: Vec<u32> = args
        .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let first = nums.first().copied();
    let int = |bits: u32, signed: ColumnType, unsigned_ty: ColumnType| {
        (
            Kind::Int { unsigned, bits },
            if unsigned { unsigned_ty } else { signed },
        )
    };
    Ok(match base {
        "tinyint" => int(8, ColumnType::Int16, ColumnType::Int16),
        "smallint" => int(16, ColumnType::Int16, ColumnType::Int32),
        "mediumint" => int(24, ColumnType::Int32, ColumnType::Int32),
        "int" | "integer" => int(32, ColumnType::Int32, ColumnType::Int64),
        "bigint" => int(64, ColumnType::Int64, ColumnType::UInt64),
        "decimal" | "numeric" | "dec" | "fixed" => (
            Kind::Decimal,
            ColumnType::Numeric {
                precision: Some(first.unwrap_or(10)),
                scale: Some(nums.get(1).copied().unwrap_or(0)),
            },
        ),
        "float" => (Kind::Float, ColumnType::Float32),
        "double" | "real" => (Kind::Double, ColumnType::Float64),
        "bit" => {
            let len = first.unwrap_or(1);
            let ty = if len == 1 {
                ColumnType::Bool
            } else {
                ColumnType::Bits { len }
            };
            (Kind::Bit { len }, ty)
        }
        "char" | "varchar" => (Kind::text(), ColumnType::Text { max_len: first }),
        "tinytext" | "text" | "mediumtext" | "longtext" => {
            (Kind::text(), ColumnType::Text { max_len: None })
        }
        "binary" => (
            Kind::Binary {
                pad_to: Some(first.unwrap_or(1)),
            },
            ColumnType::Bytes,
        ),
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (Kind::bytes(), ColumnType::Bytes)
        }
        other => return temporal_or_other(other, raw, first, column_type),
    })
}

/// The temporal, JSON, ENUM, SET and spatial types of [`map`].
fn temporal_or_other(
    base: &str,
    raw: &str,
    first: Option<u32>,
    column_type: &str,
) -> Result<(Kind, ColumnType), String> {
    Ok(match base {
        "date" => (Kind::Date, ColumnType::Date),
        "datetime" => (
            Kind::DateTime,
            ColumnType::Timestamp {
                precision: Some(first.unwrap_or(0)),
            },
        ),
        "timestamp" => (
            Kind::Timestamp,
            ColumnType::TimestampTz {
                precision: Some(first.unwrap_or(0)),
            },
        ),
        // Values outside 0–24h cannot be a PostgreSQL `time`: the column is an interval.
        "time" => (Kind::Time, ColumnType::Interval),
        "year" => (Kind::Year, ColumnType::Int16),
        "json" => (Kind::Json, ColumnType::Json),
        "enum" => (
            Kind::Enum {
                labels: labels(label_list(raw)),
            },
            ColumnType::Text { max_len: None },
        ),
        "set" => (
            Kind::Set {
                labels: labels(label_list(raw)),
            },
            ColumnType::Array {
                element: Box::new(ColumnType::Text { max_len: None }),
            },
        ),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => (Kind::Geometry, ColumnType::Bytes),
        other => return Err(format!("unsupported MySQL type `{other}` ({column_type})")),
    })
}

/// Everything between the type's first `(` and its last `)`: a label may hold either.
fn label_list(raw: &str) -> &str {
    match (raw.find('('), raw.rfind(')')) {
        (Some(open), Some(close)) if close > open => &raw[open + 1..close],
        _ => "",
    }
}

/// `'a','b,c','it''s'` → [a, b,c, it's].
fn labels(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        out.push(label);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType as T;

    #[test]
    fn spec_mapping() {
        let ty = |s: &str| map(s).unwrap().1;
        assert_eq!(ty("tinyint(4)"), T::Int16);
        assert_eq!(ty("int(10) unsigned"), T::Int64);
        assert_eq!(ty("mediumint(8)"), T::Int32);
        assert_eq!(ty("bigint(20) unsigned"), T::UInt64);
        assert_eq!(
            ty("decimal(12,2)"),
            T::Numeric {
                precision: Some(12),
                scale: Some(2)
            }
        );
        assert_eq!(ty("float"), T::Float32);
        assert_eq!(ty("double"), T::Float64);
        assert_eq!(ty("bit(1)"), T::Bool);
        assert_eq!(ty("bit(7)"), T::Bits { len: 7 });
        assert_eq!(ty("varchar(40)"), T::Text { max_len: Some(40) });
        assert_eq!(ty("longtext"), T::Text { max_len: None });
        assert_eq!(ty("varbinary(16)"), T::Bytes);
        assert_eq!(ty("datetime(6)"), T::Timestamp { precision: Some(6) });
        assert_eq!(ty("timestamp"), T::TimestampTz { precision: Some(0) });
        assert_eq!(ty("time(3)"), T::Interval);
        assert_eq!(ty("year(4)"), T::Int16);
        assert_eq!(ty("json"), T::Json);
        assert_eq!(ty("enum('a','b')"), T::Text { max_len: None });
        assert_eq!(ty("point"), T::Bytes);
        assert!(matches!(ty("set('x','y')"), T::Array { .. }));
        assert!(map("vector(3)").is_err());
    }

    #[test]
    fn enum_and_set_labels_keep_their_case_and_parentheses() {
        let (kind, _) = map("enum('NC-17','PG-13','It''s (b)','a,b)')").unwrap();
        let Kind::Enum { labels } = kind else {
            panic!("{kind:?}")
        };
        assert_eq!(labels, ["NC-17", "PG-13", "It's (b)", "a,b)"]);
        let (kind, _) = map("SET('Red','GREEN','(x)')").unwrap();
        let Kind::Set { labels } = kind else {
            panic!("{kind:?}")
        };
        assert_eq!(labels, ["Red", "GREEN", "(x)"]);
    }

    #[test]
    fn only_keys_the_server_orders_as_their_values_are_placed_in_chunks() {
        let kind = |t: &str| map(t).unwrap().0;
        for t in [
            "int",
            "bigint unsigned",
            "decimal(10,2)",
            "binary(4)",
            "datetime(6)",
            "year",
        ] {
            assert!(kind(t).sorts_like_values(), "{t}");
        }
        // Interval text order, -0.0 = 0.0 at the server, index order.
        for t in ["time", "double", "float", "enum('b','a')", "set('x')"] {
            assert!(!kind(t).sorts_like_values(), "{t}");
        }
        // Text sorts by bytes only when discovery found a `_bin` UTF-8 collation.
        assert!(!kind("varchar(10)").sorts_like_values());
    }

    #[test]
    fn enum_labels_with_quotes_and_commas() {
        assert_eq!(labels("'a','b,c','it''s'"), ["a", "b,c", "it's"]);
    }
}
