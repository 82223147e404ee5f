//! What a rows event's TABLE_MAP says about the table as it was when the rows were
//! logged: column names, and the labels of ENUM and SET columns. The catalog describes
//! the table as it is now; an `ALTER` that reorders or inserts labels between the event
//! and the read would otherwise relabel the event's values.

use std::collections::HashMap;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;
use mysql_common::collations::{Collation, CollationId};

use crate::charset::Charset;
use crate::discover::MysqlTable;
use crate::types::Kind;

/// Column names from the table map's optional metadata (`binlog_row_metadata=FULL`);
/// empty when the server logged MINIMAL metadata.
pub fn column_names(tme: &TableMapEvent<'_>) -> Vec<String> {
    for field in tme.iter_optional_meta().flatten() {
        if let OptionalMetadataField::ColumnName(names) = field {
            return names
                .iter_names()
                .filter_map(|n| n.ok())
                .map(|n| n.name().into_owned())
                .collect();
        }
    }
    Vec::new()
}

/// The ENUM and SET columns whose labels the event's table map lists otherwise than the
/// catalog (an `ALTER` after the event reordered or inserted labels), with the kind to
/// decode them by: `(column index in the table, kind)`. Empty for the usual event, and
/// read only for tables that have such columns (it runs once per rows event).
pub fn label_overrides(
    table: &MysqlTable,
    tme: &TableMapEvent<'_>,
    names: &[String],
) -> Vec<(usize, Kind)> {
    let labelled = |k: &Kind| matches!(k, Kind::Enum { .. } | Kind::Set { .. });
    if !table.columns.iter().any(|c| labelled(&c.kind)) {
        return Vec::new();
    }
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(values) => {
                enums = values
                    .iter_values()
                    .map(|v| utf8_labels(v.ok()?.values().iter().map(|l| l.value_raw())))
                    .collect();
            }
            OptionalMetadataField::SetStrValue(values) => {
                sets = values
                    .iter_values()
                    .map(|v| utf8_labels(v.ok()?.values().iter().map(|l| l.value_raw())))
                    .collect();
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let mut overrides = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let logged = match tme.get_column_type(i) {
            Ok(Some(ColumnType::MYSQL_TYPE_ENUM)) => enums.next(),
            Ok(Some(ColumnType::MYSQL_TYPE_SET)) => sets.next(),
            _ => continue,
        };
        let (Some(labels), Some(target)) = (logged.flatten(), table.schema.column_index(name))
        else {
            continue;
        };
        let kind = match &table.columns[target].kind {
            Kind::Enum { labels: l } if *l != labels => Kind::Enum { labels },
            Kind::Set { labels: l } if *l != labels => Kind::Set { labels },
            _ => continue,
        };
        overrides.push((target, kind));
    }
    overrides
}

/// Labels as text; `None` (keep the catalog's) when one is not UTF-8: labels are logged
/// in the column's character set, and a guess would relabel values.
fn utf8_labels<'a>(raw: impl Iterator<Item = &'a [u8]>) -> Option<Vec<String>> {
    raw.map(|l| String::from_utf8(l.to_vec()).ok()).collect()
}

/// The server's collations by id (`information_schema`), for the character sets a table
/// map names by collation id.
#[derive(Debug, Default, Clone)]
pub struct Collations {
    by_id: HashMap<u16, (String, String)>,
    /// MariaDB lists GEOMETRY among the columns whose character sets a table map carries;
    /// MySQL does not.
    mariadb: bool,
}

impl Collations {
    /// Reads them from the server. MariaDB 10.10+ lists the ids of its UCA 14.0.0
    /// collations only in `COLLATION_CHARACTER_SET_APPLICABILITY`.
    pub async fn read(conn: &mut mysql_async::Conn) -> crate::error::Result<Self> {
        use crate::error::Context;
        use mysql_async::prelude::Queryable;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .context("read the server version")?;
        // Every column may be NULL (MariaDB lists UCA 14.0.0 collations without a set).
        type Listed = (Option<u16>, Option<String>, Option<String>);
        let rows: Vec<Listed> = conn
            .query(
                "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS",
            )
            .await
            .context("read the server's collations")?;
        // MySQL's table has no ID column (error 1054): its ids are all in COLLATIONS.
        let full: Vec<Listed> = match conn
            .query("SELECT ID, CHARACTER_SET_NAME, FULL_COLLATION_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY")
            .await
        {
            Err(mysql_async::Error::Server(e)) if e.code == UNKNOWN_COLUMN => Vec::new(),
            other => other.context("read the server's collations")?,
        };
        let by_id = (rows.into_iter().chain(full))
            .filter_map(|(id, set, coll)| Some((id?, (set?, coll?))))
            .collect();
        Ok(Self {
            by_id,
            mariadb: version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb")),
        })
    }

    fn named(&self, id: u16) -> Option<(String, String)> {
        if let Some(known) = self.by_id.get(&id) {
            return Some(known.clone());
        }
        let c = Collation::from(CollationId::from(id));
        (c.id() != CollationId::UNKNOWN_COLLATION_ID)
            .then(|| (c.charset().to_owned(), c.collation().to_owned()))
    }

    fn carries_charset(&self, t: ColumnType) -> bool {
        use ColumnType as T;
        matches!(
            t,
            T::MYSQL_TYPE_STRING
                | T::MYSQL_TYPE_VAR_STRING
                | T::MYSQL_TYPE_VARCHAR
                | T::MYSQL_TYPE_BLOB
                | T::MYSQL_TYPE_VECTOR
        ) || (self.mariadb && t == T::MYSQL_TYPE_GEOMETRY)
    }

    /// The columns a table map lists signedness for: the integer, decimal and float
    /// types and YEAR (MariaDB 10.11 too: the parity matrix's table shows it).
    fn carries_signedness(t: ColumnType) -> bool {
        t.is_numeric_type()
    }
}

/// What the table map says column `index` was when its rows were logged: for a column
/// the reader's shape knows only by name (renamed or dropped after the event, while the
/// replicator was stopped). `landed`: its type at the destination, which tells MariaDB's
/// JSON (a LONGTEXT to the table map) from text. `Err`: why it cannot be told exactly.
pub fn logged_kind(
    tme: &TableMapEvent<'_>,
    index: usize,
    landed: &warp_core::ColumnType,
    collations: &Collations,
) -> Result<Kind, String> {
    use ColumnType as T;
    let real = |i: usize| tme.get_column_type(i).ok().flatten();
    let ty = real(index).ok_or("its table map does not describe it")?;
    if let Some(kind) = plain_kind(ty) {
        return Ok(kind);
    }
    let meta = tme.get_column_metadata(index).unwrap_or_default();
    let facts = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(|e| e.to_string())?;
    let ordinal = |f: &dyn Fn(usize) -> bool| (0..index).filter(|&i| f(i)).count();
    let charset = || -> Result<Option<(String, String)>, String> {
        let n = ordinal(&|i| real(i).is_some_and(|t| collations.carries_charset(t)));
        let id = (facts.iter_charset().nth(n))
            .ok_or("its table map lists no character set")?
            .map_err(|e| e.to_string())?;
        if id == BINARY_COLLATION {
            return Ok(None);
        }
        let named = collations.named(id);
        named
            .map(Some)
            .ok_or_else(|| format!("its table map names collation {id}, unknown to the server"))
    };
    let text = |named: (String, String)| Kind::Text {
        charset: Charset::named(&named.0),
        sorts_by_bytes: false,
        named: Some(named),
    };
    Ok(match ty {
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_LONGLONG => {
            let raw = |i: usize| tme.get_raw_column_type(i).ok().flatten();
            let n = ordinal(&|i| raw(i).is_some_and(Collations::carries_signedness));
            let unsigned =
                (facts.iter_signedness().nth(n)).ok_or("its table map lists no signedness")?;
            int_kind(ty, unsigned)
        }
        // Metadata: bits past the whole bytes, then whole bytes.
        T::MYSQL_TYPE_BIT => match meta {
            [bits, bytes, ..] => Kind::Bit {
                len: u32::from(*bytes) * 8 + u32::from(*bits),
            },
            _ => return Err("its table map gives no BIT length".into()),
        },
        T::MYSQL_TYPE_STRING => match charset()? {
            Some(named) => text(named),
            None => Kind::Binary {
                pad_to: Some(fixed_length(meta)?),
            },
        },
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING | T::MYSQL_TYPE_BLOB => match charset()? {
            Some(_) if *landed == warp_core::ColumnType::Json => Kind::Json,
            Some(named) => text(named),
            None => Kind::bytes(),
        },
        T::MYSQL_TYPE_ENUM | T::MYSQL_TYPE_SET => {
            let enum_ = ty == T::MYSQL_TYPE_ENUM;
            let n = ordinal(&|i| real(i) == Some(ty));
            let labels = logged_labels(tme, enum_)
                .into_iter()
                .nth(n)
                .flatten()
                .ok_or("its table map lists no labels for it")?;
            if enum_ {
                Kind::Enum { labels }
            } else {
                Kind::Set { labels }
            }
        }
        other => return Err(format!("its table map gives type {other:?}")),
    })
}

fn int_kind(ty: ColumnType, unsigned: bool) -> Kind {
    let bits = match ty {
        ColumnType::MYSQL_TYPE_TINY => 8,
        ColumnType::MYSQL_TYPE_SHORT => 16,
        ColumnType::MYSQL_TYPE_INT24 => 24,
        ColumnType::MYSQL_TYPE_LONG => 32,
        _ => 64,
    };
    Kind::Int { unsigned, bits }
}

/// The kind of a column whose logged type says all (no metadata or set to read), if
/// `ty` is one.
fn plain_kind(ty: ColumnType) -> Option<Kind> {
    use ColumnType as T;
    Some(match ty {
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
        T::MYSQL_TYPE_FLOAT => Kind::Float,
        T::MYSQL_TYPE_DOUBLE => Kind::Double,
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => Kind::Date,
        T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => Kind::DateTime,
        T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
        T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2 => Kind::Time,
        T::MYSQL_TYPE_YEAR => Kind::Year,
        T::MYSQL_TYPE_JSON => Kind::Json,
        T::MYSQL_TYPE_GEOMETRY => Kind::Geometry,
        _ => return None,
    })
}

/// MySQL's `ER_BAD_FIELD_ERROR`.
const UNKNOWN_COLUMN: u16 = 1054;

/// `binary`'s collation id: bytes, not text.
const BINARY_COLLATION: u16 = 63;

/// `CHAR`/`BINARY`'s length in bytes from its two metadata bytes (the high bits of a
/// length over 255 ride in the first byte, inverted).
fn fixed_length(meta: &[u8]) -> Result<u32, String> {
    match meta {
        [high, low, ..] => Ok(((u32::from(*high) & 0x30) ^ 0x30) << 4 | u32::from(*low)),
        _ => Err("its table map gives no length".into()),
    }
}

/// The labels of every ENUM (or SET) column of the table map, in column order.
fn logged_labels(tme: &TableMapEvent<'_>, enums: bool) -> Vec<Option<Vec<String>>> {
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(values) if enums => {
                return (values.iter_values())
                    .map(|v| utf8_labels(v.ok()?.values().iter().map(|l| l.value_raw())))
                    .collect();
            }
            OptionalMetadataField::SetStrValue(values) if !enums => {
                return (values.iter_values())
                    .map(|v| utf8_labels(v.ok()?.values().iter().map(|l| l.value_raw())))
                    .collect();
            }
            _ => {}
        }
    }
    Vec::new()
}
