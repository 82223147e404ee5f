//! The `timestamp` strategy against the MongoDB peer (the nx-27017 emulator, patched by
//! `scripts/peers/mongo_dates.py` to compare dates in range filters to the millisecond as
//! a real server does — unpatched it keeps whole seconds; docs/testing.md): what a copy
//! takes and what the polls deliver partition the collection, a poll never delivers again
//! what an earlier poll did, and keyset paging on (date, `_id`) tells apart writes within
//! one second.

use bson::{doc, Document};
use futures::stream::BoxStream;
use futures::StreamExt;
use warp_core::{Change, KeyRange, Source, StreamFragment, Value, Watermark};

mod common;

const BASE_MS: i64 = 1_700_000_000_000;

fn at(ms: i64) -> bson::DateTime {
    bson::DateTime::from_millis(BASE_MS + ms)
}

fn ids(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Row(e) => match &e.key[..] {
                [Value::Text(id)] => id.clone(),
                other => panic!("key {other:?}"),
            },
            other => panic!("not a row change: {other:?}"),
        })
        .collect()
}

async fn next(s: &mut BoxStream<'static, warp_core::Result<StreamFragment>>) -> StreamFragment {
    tokio::time::timeout(std::time::Duration::from_secs(20), s.next())
        .await
        .expect("a fragment within 20 s (a hung poll)")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn copy_and_polls_partition_the_collection_and_polls_never_repeat() {
    let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let db = "source_mongo_polling";
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    client.database(db).drop().await.unwrap();
    let items = client.database(db).collection::<Document>("items");
    // Six documents within one second, one without the column.
    let docs: Vec<Document> = (1..=6_i64)
        .map(|i| doc! { "_id": i, "v": i, "updated": at(i * 100) })
        .chain([doc! { "_id": 7_i64, "v": 7 }])
        .collect();
    items.insert_many(docs).await.unwrap();
    let yaml = format!(
        "source: {{ type: mongodb, connection_string: '{url}', database: {db}, \
         change_detection_strategy: timestamp, change_detection_column: updated }}\n\
         destination: {{ type: postgresql, connection_string: 'postgresql://u@h/d' }}\n\
         schemas:\n- name: {db}\n  tables:\n    items: {{ polling_interval: 0.05 }}\n"
    );
    let (source, schema) = common::source_of(&yaml);
    let t = source
        .discover(&schema)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id.name == "items")
        .unwrap();
    let read = schema.table("items").read_settings();

    // The copy takes what is below the newest value (and what has none); the newest is
    // the polls'.
    let copy = source.read_chunk(&t, &read, &KeyRange::ALL).await.unwrap();
    let position = Watermark::decode(&copy.position).unwrap();
    assert!(position.after.is_none(), "{position:?}");
    let mut copied = Vec::new();
    let mut pages = copy.rows;
    while let Some(page) = pages.next().await {
        for row in page.unwrap().into_rows().unwrap() {
            copied.push(row.values[0].clone());
        }
    }
    let text = |ids: &[&str]| {
        ids.iter()
            .map(|s| Value::Text((*s).into()))
            .collect::<Vec<_>>()
    };
    assert_eq!(copied, text(&["1", "2", "3", "4", "5", "7"]));

    let mut polls = source.stream(&t, &read, &copy.position).await.unwrap();
    let first = next(&mut polls).await;
    assert_eq!(ids(&first.changes), ["6"]);
    // Later polls read after (6's time, 6): nothing is delivered again.
    for _ in 0..3 {
        let again = next(&mut polls).await;
        assert!(
            again.changes.is_empty(),
            "delivered again: {:?}",
            ids(&again.changes)
        );
    }
    // A later change in the same second, to a smaller `_id`, is delivered, once (with
    // dates compared by the second it would be neither after 6's time nor tied with it).
    items
        .replace_one(doc! { "_id": 2_i64 }, doc! { "v": -2, "updated": at(900) })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = ids(&next(&mut polls).await.changes);
        if !seen.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["2"], "the change within the watermark's second");
}
