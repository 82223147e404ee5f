//! Which of a database's collections are replicated. Views hold no data of their own
//! (the collections they read are replicated instead), and time-series collections
//! refuse change streams: they are polled under `timestamp`, otherwise left out with a
//! warning that says how to include them.

use serde::Deserialize;

/// One entry of `listCollections`, as far as discovery needs it (read loosely: servers
/// and emulators differ in the rest, such as `info.uuid`).
#[derive(Debug, Deserialize)]
pub struct Listed {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Kind,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Collection,
    View,
    Timeseries,
    #[serde(other)]
    Other,
}

/// Why a listed collection is not replicated (`None`: it is), and whether that deserves
/// a warning rather than a note. `streams`: changes come from change streams.
pub fn left_out(listed: &Listed, streams: bool) -> Option<(&'static str, bool)> {
    if listed.name.starts_with("system.") {
        return Some(("a system collection", false));
    }
    match listed.kind {
        Kind::Collection => None,
        Kind::Timeseries if !streams => None,
        Kind::View => Some((
            "a view holds no data of its own: the collections it reads are replicated",
            false,
        )),
        Kind::Timeseries => Some((
            "time-series collections do not support change streams: to replicate it, poll \
             the schema (change_detection_strategy: timestamp, change_detection_column: its \
             time field)",
            true,
        )),
        Kind::Other => Some((
            "listCollections reports a type other than collection, view or timeseries",
            true,
        )),
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, Binary};

    use super::*;

    /// `listCollections` entries as MongoDB 7.0 returns them.
    #[test]
    fn views_and_time_series_are_told_apart_from_collections() {
        let uuid = Binary {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: vec![7; 16],
        };
        let entries = [
            doc! { "name": "orders", "type": "collection", "options": {},
            "info": { "readOnly": false, "uuid": uuid },
            "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } },
            doc! { "name": "open_orders", "type": "view",
            "options": { "viewOn": "orders", "pipeline": [ { "$match": { "open": true } } ] },
            "info": { "readOnly": true } },
            doc! { "name": "weather", "type": "timeseries",
            "options": { "timeseries": { "timeField": "t", "metaField": "m",
                                         "granularity": "seconds", "bucketMaxSpanSeconds": 3600 } },
            "info": { "readOnly": false } },
            doc! { "name": "system.buckets.weather", "type": "collection", "options": {},
            "info": { "readOnly": false } },
            // An emulator's entry: no idIndex, the uuid as text.
            doc! { "name": "plain", "type": "collection", "options": {},
            "info": { "readOnly": false, "uuid": "00000000-0000-0000-0000-000000000000" } },
            doc! { "name": "untyped" },
        ];
        let listed: Vec<Listed> = entries
            .into_iter()
            .map(|d| bson::from_document(d).unwrap())
            .collect();
        let kept = |streams: bool| -> Vec<&str> {
            listed
                .iter()
                .filter(|l| left_out(l, streams).is_none())
                .map(|l| l.name.as_str())
                .collect()
        };
        assert_eq!(kept(true), ["orders", "plain", "untyped"]);
        assert_eq!(kept(false), ["orders", "weather", "plain", "untyped"]);
        let (why, warn) = left_out(&listed[2], true).unwrap();
        assert!(
            warn && why.contains("change_detection_strategy: timestamp"),
            "{why}"
        );
        let (why, warn) = left_out(&listed[1], true).unwrap();
        assert!(!warn && why.contains("view"), "{why}");
    }
}
