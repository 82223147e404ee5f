//! Verification asks which destination keys (`_id` texts) still name a document: each
//! `_id` type's text finds its document, and only its own (MongoDB's `5` also matches
//! `5.0` in a query; the answer is checked by text again), in the `_id` text form of the
//! landing table's landing version.

use bson::{doc, Document};
use warp_core::{LandingVersion, ReadSettings, Source, TableReads, Value};

mod common;

#[tokio::test]
async fn each_id_types_text_finds_its_own_document_only() {
    let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let db = "source_mongo_existing_keys";
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    client.database(db).drop().await.unwrap();
    let items = client.database(db).collection::<Document>("items");
    let oid = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
    items
        .insert_many([
            doc! { "_id": oid, "v": 1 },
            doc! { "_id": "plain", "v": 2 },
            doc! { "_id": 7_i64, "v": 3 },
            doc! { "_id": 2.5_f64, "v": 4 },
            doc! { "_id": "true", "v": 5 },
        ])
        .await
        .unwrap();
    let yaml = format!(
        "source: {{ type: mongodb, connection_string: '{url}', database: {db} }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas:\n- name: {db}\n"
    );
    let (source, schema) = common::source_of(&yaml);
    let table = source.discover(&schema).await.unwrap().remove(0);
    let key = |t: &str| vec![Value::Text(t.into())];
    let common = vec![
        key("65a1b2c3d4e5f60718293a4b"),
        key("plain"),
        key("7"),
        key(r#"{"$numberDouble":"2.5"}"#),
    ];
    let absent = vec![
        key("8"),
        key("65a1b2c3d4e5f60718293a4c"),
        key(r#"{"$numberDouble":"7.0"}"#),
    ];
    // Before landing versions: the string "true" lands as `true`, as a boolean would.
    // Since: quoted, and a bare `true` is the boolean (absent here).
    for (landing, held_string, absent_text) in [
        (LandingVersion::UNRECORDED, "true", r#""true""#),
        (LandingVersion(1), r#""true""#, "true"),
    ] {
        let read = ReadSettings {
            landing,
            ..schema.read_settings(&table.id.name)
        };
        let mut asked = common.clone();
        asked.push(key(held_string));
        asked.extend(absent.clone());
        asked.push(key(absent_text));
        let held = source.existing_keys(&table, &read, &asked).await.unwrap();
        assert_eq!(held, Some(asked[..5].to_vec()), "landing {landing}");
    }
}
