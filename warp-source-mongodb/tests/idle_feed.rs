//! An idle change stream tells the engine how far it has read: its heartbeats carry the
//! time the server answered with nothing new, so an idle collection's lag is known (and
//! near zero) instead of growing from its last change or staying unknown after a restart.

use bson::{doc, Document};
use futures::StreamExt;
use warp_core::{FeedItem, Source};

mod common;

#[tokio::test]
async fn heartbeats_of_an_idle_stream_carry_the_time_it_was_read_up_to() {
    let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let db = "source_mongo_idle_feed";
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    client.database(db).drop().await.unwrap();
    let items = client.database(db).collection::<Document>("items");
    items.insert_one(doc! { "_id": 1_i64 }).await.unwrap();
    let (source, tables) = common::feed_tables(&url, db).await;
    let start = source
        .current_position(&tables[0].schema, &tables[0].read)
        .await
        .unwrap();
    let opened = chrono::Utc::now();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();

    let beat = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match feed.next().await.expect("feed open").expect("feed item") {
                FeedItem::Fragment {
                    changes,
                    commit: Some(commit),
                } if changes.is_empty() => return commit,
                _ => {}
            }
        }
    })
    .await
    .expect("a heartbeat within 30 s");
    let ts = beat
        .source_ts
        .expect("an idle heartbeat says up to when the stream was read");
    assert!(
        ts >= opened && ts <= chrono::Utc::now(),
        "heartbeat time {ts} not between the stream's opening {opened} and now"
    );
    client.database(db).drop().await.unwrap();
}
