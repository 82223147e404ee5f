//! What a rows event's TABLE_MAP says about the table as it was when the rows were
//! logged: column names, and the labels of ENUM and SET columns. The catalog describes
//! the table as it is now; an `ALTER` that reorders or inserts labels between the event
//! and the read would otherwise relabel the event's values.

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnType;

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
