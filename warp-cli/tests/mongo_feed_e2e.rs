//! The shared MongoDB feed through the real binary: one database-level change stream per
//! replica however many collections it runs (counted with `currentOp`, as on a real
//! server), collections created while running are replicated without a restart, and the
//! stream follows the new table set without losing or repeating a change.

use warp_fixtures::mongo_store;

use std::time::Duration;

use bson::{doc, Bson, Document};
use mongo_store::{store, Store};

const IDLE: usize = 10;

/// The change streams open on the store's database: (database-level, collection-level).
async fn streams(store: &Store) -> (usize, usize) {
    let reply = store
        .mongo
        .client()
        .database("admin")
        .run_command(doc! { "currentOp": 1, "idleCursors": true })
        .await
        .unwrap();
    let (mut database, mut collection) = (0, 0);
    for op in reply.get_array("inprog").unwrap() {
        let Bson::Document(op) = op else { continue };
        let Ok(command) = op
            .get_document("cursor")
            .and_then(|c| c.get_document("originatingCommand"))
        else {
            continue;
        };
        let is_stream = command.get_array("pipeline").is_ok_and(|p| {
            p.iter().any(|s| {
                s.as_document()
                    .is_some_and(|s| s.contains_key("$changeStream"))
            })
        });
        if !is_stream || command.get_str("$db") != Ok(store.db.as_str()) {
            continue;
        }
        match command.get("aggregate") {
            Some(Bson::Int32(1) | Bson::Int64(1)) => database += 1,
            Some(Bson::Double(d)) if *d == 1.0 => database += 1,
            _ => collection += 1,
        }
    }
    (database, collection)
}

async fn wait_streaming(store: &Store, n: usize) {
    let bin = env!("CARGO_BIN_EXE_cartridge-warp");
    warp_e2e::wait_streaming(bin, &store.config, n, || store.log()).await;
}

fn order(i: i64) -> Document {
    doc! { "_id": i, "status": "new", "amount": i as f64 * 0.5 }
}

#[tokio::test]
async fn collections_stream_through_one_database_change_stream_and_new_ones_join_it() {
    let store = store("feed", 100, "    orders: {}\n").await;
    warp_e2e::tune(&store.config, "table_discovery_interval", "1");
    for i in 0..IDLE {
        store
            .insert(&format!("idle_{i:02}"), vec![doc! { "_id": 1, "v": "x" }])
            .await;
    }
    store.insert("orders", (1..=200).map(order).collect()).await;
    let mut run = store.run();
    wait_streaming(&store, IDLE + 1).await;
    for i in 201..=230 {
        store.insert("orders", vec![order(i)]).await;
    }
    store.wait_equal("orders").await;
    assert_eq!(
        streams(&store).await,
        (1, 0),
        "one database-level stream for {} collections\n{}",
        IDLE + 1,
        store.log()
    );

    // A collection created while running: copied, then streamed through the same feed.
    store
        .insert(
            "refunds",
            (1..=50).map(|i| doc! { "_id": i, "amount": i }).collect(),
        )
        .await;
    store.wait_equal("refunds").await;
    wait_streaming(&store, IDLE + 2).await;
    for i in 1..=10 {
        store
            .update("refunds", Bson::Int64(i), doc! { "$set": { "paid": true } })
            .await;
        store
            .update(
                "orders",
                Bson::Int64(i),
                doc! { "$set": { "status": "paid" } },
            )
            .await;
    }
    store.wait_equal("refunds").await;
    store.wait_equal("orders").await;
    store.assert_no_double_apply("refunds").await;
    store.assert_no_double_apply("orders").await;
    assert_eq!(streams(&store).await, (1, 0), "still one\n{}", store.log());
    assert!(run.terminate().success(), "{}", store.log());
}

/// The launcher's patch (scripts/peers/mongo_db_streams.py) is active: a database-level
/// stream carries the events of every matching collection in order — one created after
/// the stream opened too — and `$match` takes `$or` as a real server's does.
#[tokio::test]
async fn the_peer_serves_database_change_streams_as_a_real_server() {
    use futures::StreamExt;
    let store = store("peerdb", 100, "    a: {}\n").await;
    store.insert("a", vec![doc! { "_id": 0 }]).await;
    let only = doc! { "$match": { "$or": [
        { "ns.coll": { "$in": ["a", "late"] } },
        { "operationType": "dropDatabase" },
    ] } };
    // Raw documents: the peer's clusterTime is a date, not a Timestamp (docs/testing.md).
    let mut stream = store
        .mongo
        .watch()
        .pipeline([only])
        .await
        .unwrap()
        .with_type::<Document>();
    assert_eq!(streams(&store).await, (1, 0));
    store.insert("a", vec![doc! { "_id": 1 }]).await;
    store.insert("skipped", vec![doc! { "_id": 1 }]).await;
    store.insert("late", vec![doc! { "_id": 2 }]).await;
    store.insert("a", vec![doc! { "_id": 3 }]).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .unwrap();
        let ns = event.get_document("ns").unwrap();
        seen.push(ns.get_str("coll").unwrap().to_owned());
    }
    assert_eq!(seen, ["a", "late", "a"]);
}

/// The replicator down while another consumer reads past more events than the server
/// retains (the peer keeps 1,000 per collection behind its readers, as an oplog rolls
/// over): on restart the server refuses the stored token with `ChangeStreamHistoryLost`
/// (286, the peer's patch), the collection stops with the resync hint — never a silent
/// gap — and `resync` brings it back equal.
#[tokio::test]
async fn history_lost_while_down_stops_the_collection_until_resync() {
    use futures::StreamExt;
    const WRITES: i64 = 1_200;
    let store = store("history", 100, "    orders: {}\n").await;
    store.insert("orders", (1..=50).map(order).collect()).await;
    let mut run = store.run();
    wait_streaming(&store, 1).await;
    store.insert("orders", vec![order(51)]).await;
    store.wait_equal("orders").await;
    run.kill();

    // Another reader follows the writes; its reads let the server prune behind it.
    let mut reader = store.coll("orders").watch().await.unwrap();
    for i in 52..52 + WRITES {
        store.coll("orders").insert_one(order(i)).await.unwrap();
        store.wrote("orders", &Bson::Int64(i));
    }
    let last = 51 + WRITES;
    let id = |k: &Document| match k.get("_id") {
        Some(Bson::Int32(i)) => Some(i64::from(*i)),
        Some(Bson::Int64(i)) => Some(*i),
        _ => None,
    };
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the reader sees every write")
            .unwrap()
            .unwrap();
        if event.document_key.as_ref().and_then(id) == Some(last) {
            break;
        }
    }
    drop(reader);

    let mut run = store.run();
    let bin = env!("CARGO_BIN_EXE_cartridge-warp");
    warp_e2e::wait_lost(bin, &store.config, &["orders"], || store.log()).await;
    assert!(
        store.log().contains("ChangeStreamHistoryLost"),
        "{}",
        store.log()
    );

    warp_e2e::resync(bin, &store.config, &store.db, "orders");
    store.wait_equal("orders").await;
    store.insert("orders", vec![order(10_000)]).await;
    store.wait_equal("orders").await;
    assert!(run.terminate().success(), "{}", store.log());
}
