//! A change event the reader cannot apply (here a row event without its document's key,
//! built by the peer's test hook for collections named `undecodable*`,
//! `scripts/peers/mongo_events.py`) stops its own collection with the reason; the
//! database-level stream goes on past it for the other collections.

use bson::{doc, Document};
use futures::StreamExt;
use warp_core::{Change, FeedItem, Source};

mod common;

#[tokio::test]
async fn an_undecodable_event_stops_its_collection_and_the_others_stream_on() {
    let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let db = "source_mongo_undecodable";
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    client.database(db).drop().await.unwrap();
    let bad = client
        .database(db)
        .collection::<Document>("undecodable_items");
    let good = client.database(db).collection::<Document>("items");
    bad.insert_one(doc! { "_id": 1_i64, "v": 1 }).await.unwrap();
    good.insert_one(doc! { "_id": 1_i64, "v": 1 })
        .await
        .unwrap();
    let (source, tables) = common::feed_tables(&url, db).await;
    let index = |name: &str| {
        tables
            .iter()
            .position(|t| t.schema.id.name == name)
            .unwrap()
    };
    let start = source
        .current_position(&tables[0].schema, &tables[0].read)
        .await
        .unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    bad.insert_one(doc! { "_id": 2_i64, "v": 2 }).await.unwrap();
    good.insert_one(doc! { "_id": 2_i64, "v": 2 })
        .await
        .unwrap();
    bad.insert_one(doc! { "_id": 3_i64, "v": 3 }).await.unwrap();
    good.insert_one(doc! { "_id": 3_i64, "v": 3 })
        .await
        .unwrap();

    let mut failed = Vec::new();
    let mut good_rows = 0;
    let read = async {
        while good_rows < 2 {
            match feed.next().await.expect("feed open") {
                Ok(FeedItem::TableFailed { table, error }) => {
                    failed.push((table, error.to_string()))
                }
                Ok(FeedItem::Fragment { changes, .. }) => {
                    good_rows += changes
                        .iter()
                        .filter(|c| c.table == index("items") && matches!(c.change, Change::Row(_)))
                        .count();
                }
                Err(e) => panic!("the whole feed failed: {e}"),
            }
        }
    };
    // The deadline is for a stalled stream (before: retried forever at the event).
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the other collection streamed on");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, index("undecodable_items"));
    assert!(failed[0].1.contains("documentKey"), "{}", failed[0].1);
}
