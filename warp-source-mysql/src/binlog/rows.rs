//! Rows events: each row image decoded by column name (table-map metadata,
//! `binlog_row_metadata=FULL`) onto the table's current shape, with the foreign-key
//! actions the server ran for it.

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::RowsEventFlags;
use warp_core::{Change, ChangeEvent, Operation, Row, TableChange, Value};

use super::Reader;
use crate::decode::{decode_from, Decoded, Origin};
use crate::discover::MysqlTable;
use crate::table_map::{column_names, label_overrides, logged_kind, Collations};
use crate::types::Kind;

impl Reader {
    /// Decodes one rows event of the table at `index` into change events.
    pub(super) fn rows(
        &mut self,
        index: usize,
        rows: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
    ) -> warp_core::Result<()> {
        let Some(table) = self.served.tables[index].as_ref() else {
            return Ok(());
        };
        // A parent read for its children alone: an insert changes no child.
        let parent_only = self.served.is_parent_only(index);
        let op = operation(rows);
        if parent_only && op == Operation::Insert {
            return Ok(());
        }
        let names = column_names(tme);
        if let Some(error) = unmappable(table, &names) {
            self.fail(index, error);
            return Ok(());
        }
        let unconfirmed = &mut self.kinds_unconfirmed[index];
        let kinds = logged_kinds(table, tme, &names, &self.collations, unconfirmed);
        let key_cols = (table.schema.key_indexes()).map_err(|e| warp_core::Error::Table {
            table: table.schema.id.to_string(),
            message: e.to_string(),
            hint: None,
        })?;
        // A session with foreign_key_checks=0 runs no foreign-key action (the event says so).
        let actions = !rows.flags().contains(RowsEventFlags::NO_FOREIGN_KEY_CHECKS);
        let mut zeros = 0;
        for pair in rows.rows(tme) {
            let (before, after) = pair.map_err(|e| {
                warp_core::Error::source_transient(format!("undecodable rows event: {e}"))
            })?;
            // A session may log MINIMAL or NOBLOB images whatever the server's setting:
            // a partial image would put values into the wrong columns or land defaults
            // over real values, so the table stops instead.
            let full = |r: &Option<BinlogRow>| {
                r.as_ref()
                    .is_none_or(|r| r.len() as u64 == tme.columns_count())
            };
            if !full(&before) || !full(&after) {
                return Err(partial_image(table));
            }
            let mut image =
                |r: Option<BinlogRow>| r.map(|r| row(table, &kinds, r, &names, &mut zeros));
            let (before, after) = (image(before), image(after));
            let key = match (&before, &after) {
                (Some(b), _) => b.key(&key_cols),
                (None, Some(a)) => a.key(&key_cols),
                (None, None) => continue,
            };
            let event = ChangeEvent {
                op,
                key,
                before,
                after,
                source_ts: self.txn.ts,
            };
            // What the server did to child rows for it follows, in log order.
            let cascaded = if actions {
                self.served.cascades.of(index, &event)
            } else {
                Vec::new()
            };
            if !parent_only {
                self.txn.pending.push(TableChange {
                    table: index,
                    change: Change::Row(event),
                });
            }
            self.txn.pending.extend(cascaded);
        }
        if zeros > 0 {
            (self.zero_dates)(&table.schema.id.name, zeros);
        }
        Ok(())
    }
}

fn operation(rows: &RowsEventData<'_>) -> Operation {
    match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Operation::Insert,
        RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Operation::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
            Operation::Delete
        }
    }
}

/// Why the event's values cannot be mapped onto the table's columns exactly, if so.
fn unmappable(table: &MysqlTable, names: &[String]) -> Option<warp_core::Error> {
    if names.is_empty() {
        // Mapping values by position would shift them after any column change.
        return Some(warp_core::Error::Table {
            table: table.schema.id.to_string(),
            message: "the binlog's table map carries no column names (binlog_row_metadata=MINIMAL): its rows cannot be mapped onto columns exactly".into(),
            hint: Some("set binlog_row_metadata=FULL on the server, then resync the table".into()),
        });
    }
    // Renamed (or dropped and added) after this event while the reader did not read the
    // DDL (stopped, or starting): mapping by name would lose the values.
    let missing = reshaped_unseen(table, names)?;
    Some(warp_core::Error::Replaced {
        table: table.schema.id.to_string(),
        how: format!(
            "reshaped after the replicator's position (the log's columns {} are not in the catalog; renamed while it was stopped?)",
            missing.join(", ")
        ),
    })
}

/// The columns this event is decoded otherwise than by the shape's kinds: ENUM/SET labels
/// as logged, columns the catalog no longer has as their table map describes them, and,
/// until a table's first event that agrees with its shape (`unconfirmed`), columns changed
/// since they were logged.
fn logged_kinds(
    table: &MysqlTable,
    tme: &TableMapEvent<'_>,
    names: &[String],
    collations: &Collations,
    unconfirmed: &mut bool,
) -> Vec<(usize, Result<Kind, String>)> {
    let mut kinds: Vec<(usize, Result<Kind, String>)> = (label_overrides(table, tme, names))
        .into_iter()
        .map(|(i, k)| (i, Ok(k)))
        .collect();
    kinds.extend(unseen_kinds(table, tme, names, collations));
    if *unconfirmed {
        let changed = logged_overrides(table, tme, names, collations);
        if let Some((i, _)) = changed.first() {
            let column = &table.columns[*i].name;
            tracing::debug!(table = %table.schema.id, column = %column, "the event's table map describes the column otherwise than the catalog: decoded as logged");
        }
        *unconfirmed = !changed.is_empty();
        kinds.extend(changed.into_iter().map(|(i, k)| (i, Ok(k))));
    }
    kinds
}

/// The kinds the event's table map gives the columns the shape knows only by name
/// (`Kind::Unseen`: renamed or dropped after the event while the replicator was stopped),
/// or why it cannot tell one exactly (the column's values are then dead-lettered).
fn unseen_kinds(
    table: &MysqlTable,
    tme: &TableMapEvent<'_>,
    names: &[String],
    collations: &Collations,
) -> Vec<(usize, Result<Kind, String>)> {
    if !table.columns.iter().any(|c| c.kind == Kind::Unseen) {
        return Vec::new();
    }
    (names.iter().enumerate())
        .filter_map(|(i, name)| {
            let target = table.schema.column_index(name)?;
            (table.columns[target].kind == Kind::Unseen).then(|| {
                let landed = &table.schema.columns[target].column_type;
                (target, logged_kind(tme, i, landed, collations))
            })
        })
        .collect()
}

/// The columns the event's table map describes otherwise than the shape (a `CONVERT TO
/// CHARACTER SET`, `MODIFY … BIGINT` or the like after the event, read in the catalog at
/// the start), with the kind the event's values are decoded by. ENUM and SET labels are
/// `label_overrides`' (checked on every event).
fn logged_overrides(
    table: &MysqlTable,
    tme: &TableMapEvent<'_>,
    names: &[String],
    collations: &Collations,
) -> Vec<(usize, Kind)> {
    (names.iter().enumerate())
        .filter_map(|(i, name)| {
            let target = table.schema.column_index(name)?;
            let shape = &table.columns[target].kind;
            if matches!(shape, Kind::Dropped | Kind::Unseen) {
                return None;
            }
            let landed = &table.schema.columns[target].column_type;
            let logged = logged_kind(tme, i, landed, collations).ok()?;
            (!decodes_alike(shape, &logged)).then_some((target, logged))
        })
        .collect()
}

/// Whether values of kind `a` decode as those of kind `b` (a text column's collation and
/// chunk ordering do not matter to decoding; labels are compared elsewhere).
fn decodes_alike(a: &Kind, b: &Kind) -> bool {
    match (a, b) {
        (Kind::Text { charset: x, .. }, Kind::Text { charset: y, .. }) => x == y,
        (Kind::Enum { .. }, Kind::Enum { .. }) | (Kind::Set { .. }, Kind::Set { .. }) => true,
        _ => a == b,
    }
}

/// A row image, mapped by column name onto the table's current shape; a column the image
/// lacks (added later) reads its declared default, as at the source. `kinds`: columns
/// decoded otherwise than by the shape's kind (the event's own labels, a table map's
/// description of a column the catalog no longer has).
fn row(
    table: &MysqlTable,
    kinds: &[(usize, Result<Kind, String>)],
    row: BinlogRow,
    names: &[String],
    zeros: &mut u64,
) -> Row {
    let mut out: Vec<Value> = (table.schema.columns.iter())
        .map(|c| c.default.clone().unwrap_or(Value::Null))
        .collect();
    for (i, v) in row.unwrap().into_iter().enumerate() {
        let target = names.get(i).and_then(|n| table.schema.column_index(n));
        let Some(t) = target.filter(|&t| t < out.len()) else {
            continue;
        };
        let kind = match (kinds.iter()).find(|(i, _)| *i == t).map(|(_, k)| k) {
            None => &table.columns[t].kind,
            Some(Ok(kind)) => kind,
            Some(Err(why)) => {
                let name = &table.columns[t].name;
                out[t] = Value::Unreadable(format!("column {name}: {why}"));
                continue;
            }
        };
        out[t] = match value(v, kind) {
            Ok(Decoded::Value(v)) => v,
            Ok(Decoded::ZeroDate) => {
                *zeros += 1;
                Value::Null
            }
            // A value that cannot be decoded dead-letters its row (with the reason); it
            // never stops the table.
            Err(e) => Value::Unreadable(format!("column {}: {e}", table.columns[t].name)),
        };
    }
    Row::new(out)
}

/// One binlog value decoded as a column of `kind` (MySQL's binary JSON read as its text).
fn value(v: BinlogValue<'_>, kind: &Kind) -> Result<Decoded, String> {
    let plain: mysql_async::Value = match v {
        BinlogValue::Jsonb(json) => crate::binary_json::to_text(json)
            .map(|text| mysql_async::Value::Bytes(text.into_bytes()))
            .map_err(|e| format!("binary JSON: {e}"))?,
        other => other.try_into().map_err(|e| format!("{e}"))?,
    };
    decode_from(plain, kind, Origin::Binlog)
}

/// The event's columns the table's shape lacks, when the shape also has columns the
/// event lacks that are not dropped ones: the table was renamed or reshaped between the
/// event and the catalog read. A column only dropped since (the event has it, the shape
/// has nothing new) is not a reshape: its values are kept at the destination as they were.
/// Names compare exactly, as `row` maps values: a rename that changes only the case is a
/// rename too.
fn reshaped_unseen(table: &MysqlTable, names: &[String]) -> Option<Vec<String>> {
    // The usual event lists the shape's columns in its order: one pass, no search.
    let cols = &table.schema.columns;
    if names.len() == cols.len() && names.iter().zip(cols).all(|(n, c)| *n == c.name) {
        return None;
    }
    let missing: Vec<String> = (names.iter())
        .filter(|n| table.schema.column_index(n).is_none())
        .cloned()
        .collect();
    let added = (table.columns.iter())
        .filter(|c| !matches!(c.kind, Kind::Dropped | Kind::Unseen))
        .any(|c| !names.contains(&c.name));
    (!missing.is_empty() && added).then_some(missing)
}

/// A row image without every column: logged under `binlog_row_image` MINIMAL or NOBLOB.
fn partial_image(table: &MysqlTable) -> warp_core::Error {
    warp_core::Error::Table {
        table: table.schema.id.to_string(),
        message: "a binlog row image lacks columns (binlog_row_image MINIMAL or NOBLOB, set for the server or for the writing session): its rows cannot be applied whole".into(),
        hint: Some("set binlog_row_image=FULL globally and in every writer's session (SET SESSION binlog_row_image overrides it), then resync the table".into()),
    }
}
