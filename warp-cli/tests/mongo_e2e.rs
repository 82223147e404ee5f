//! `cartridge-warp run` replicating a MongoDB database into PostgreSQL, against the
//! nx-27017 wire-protocol emulator (docs/testing.md lists what it can and cannot do: its
//! change events are typed as a real server's by a patch of the launcher, so ObjectId
//! keys, dates and nested arrays stream — the orders here are keyed and shaped so;
//! binaries and Decimal128 go through the snapshot).
//! Collections are compared document by document, through the source's decoder on one
//! side and the sink's on the other.

use warp_fixtures::mongo_store;

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongo_store::store;
use warp_e2e::replica::{self, TempDir};
use warp_e2e::{Poll, Process};

/// Order `i`'s `_id`: an ObjectId, as real collections are keyed, made from `i` so tests
/// can name documents (big-endian, so ids sort as the numbers do).
fn oid(i: i64) -> bson::oid::ObjectId {
    let mut bytes = [0x65_u8; 12];
    bytes[4..].copy_from_slice(&i.to_be_bytes());
    bson::oid::ObjectId::from_bytes(bytes)
}

fn key(i: i64) -> Bson {
    Bson::ObjectId(oid(i))
}

/// An order as real data looks: ObjectId key, dates, a nested array of sub-documents
/// (each with its own array), a sub-document.
fn order(i: i64) -> Document {
    doc! {
        "_id": oid(i),
        "customer": i % 17,
        "amount": i as f64 * 1.25,
        "qty": (i % 5) as i32,
        "status": "new",
        "placed": bson::DateTime::from_millis(1_700_000_000_000 + i * 60_123),
        "items": [
            { "sku": format!("s{}", i % 7), "n": 1, "tags": ["a", format!("t{}", i % 4)] },
            { "sku": "gift", "n": 0, "tags": [], "at": bson::DateTime::from_millis(1_600_000_000_000 + i) },
        ],
        "addr": { "city": format!("c{}", i % 3), "zip": "0100" },
    }
}

#[tokio::test]
async fn replicates_a_mongodb_database_end_to_end() {
    let store = store(
        "basic",
        50,
        "    orders: { flatten_depth: 1 }\n    kinds: { document_column: true }\n",
    )
    .await;
    store.insert("orders", (1..=300).map(order).collect()).await;
    // Every BSON type the emulator stores, through the snapshot path.
    let kind_id = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
    let uuid = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
    store
        .insert(
            "kinds",
            vec![
                doc! {
                    "_id": kind_id,
                    "when": bson::DateTime::from_millis(1_700_000_000_123),
                    "big": 1_i64 << 40,
                    "ratio": 0.5,
                    "ok": true,
                    "blob": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0, 1, 255] },
                    "uid": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: uuid.as_bytes().to_vec() },
                    "ref": kind_id,
                    "nested": { "a": [1, "two", { "three": 3.5 }] },
                    "nothing": null,
                },
                doc! { "_id": bson::oid::ObjectId::new(), "when": bson::DateTime::from_millis(0), "ok": false },
            ],
        )
        .await;
    let mut run = store.run();
    store.wait_equal("orders").await;
    store.wait_equal("kinds").await;
    // (The emulator drops binary subtypes, so `uid` lands as bytea here; the uuid
    // mapping of subtypes 3/4 is covered by the source's decoding tests.)
    assert_eq!(
        store.column_type("kinds", "when").await,
        "timestamp with time zone"
    );
    assert_eq!(store.column_type("kinds", "blob").await, "bytea");
    assert_eq!(store.column_type("kinds", "_doc").await, "jsonb");
    assert_eq!(store.column_type("orders", "addr_city").await, "text");

    // Inserts (one with a field never seen), updates, $unset, replace, deletes.
    let mut fresh: Vec<Document> = (301..=320).map(order).collect();
    fresh[0].insert("coupon", "WELCOME");
    store.insert("orders", fresh).await;
    for i in 1..=10 {
        store
            .update(
                "orders",
                key(i),
                doc! { "$set": { "status": "paid" }, "$inc": { "qty": 1 } },
            )
            .await;
    }
    store
        .update("orders", key(11), doc! { "$unset": { "addr": "" } })
        .await;
    let r = store
        .coll("orders")
        .replace_one(
            doc! { "_id": oid(12) },
            doc! { "status": "replaced", "amount": 1.0, "placed": bson::DateTime::from_millis(0) },
        )
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    store.wrote("orders", &key(12));
    for i in 20..25_i64 {
        store
            .coll("orders")
            .delete_one(doc! { "_id": oid(i) })
            .await
            .unwrap();
        store.wrote("orders", &key(i));
    }
    // A field whose type changes: integers, then a string.
    store
        .update("orders", key(13), doc! { "$set": { "qty": "many" } })
        .await;
    store.wait_equal("orders").await;
    assert_eq!(store.column_type("orders", "qty").await, "text");
    assert_eq!(store.column_type("orders", "coupon").await, "text");
    let soft_deleted = store
        .scalar(format!(
            "SELECT count(*) FROM {}.orders WHERE is_deleted",
            store.db
        ))
        .await;
    assert_eq!(soft_deleted, 5, "deletes are soft by default");
    let recorded = store
        .scalar(format!(
            "SELECT count(*) FROM {}_meta.schema_registry WHERE table_name = 'orders' AND change->>'change' IN ('add_column', 'alter_column_type', 'alter_type')",
            store.db
        ))
        .await;
    assert!(
        recorded >= 2,
        "new and widened columns are in the schema registry"
    );
    assert!(run.terminate().success());
    store.assert_no_double_apply("orders").await;
}

/// A person keyed by ObjectId, with dates, nested arrays and sub-documents: what real
/// collections hold, streamed as well as copied (the peer types change events as a real
/// server does: `scripts/peers/mongo_events.py`).
fn person(id: bson::oid::ObjectId, i: i64) -> Document {
    doc! {
        "_id": id,
        "name": format!("p{i}"),
        "born": bson::DateTime::from_millis(1_000_000_000_000 + i * 86_400_000),
        "visits": [ { "at": bson::DateTime::from_millis(1_700_000_000_000 + i), "pages": [1, 2, i] } ],
        "address": { "city": format!("c{}", i % 4), "geo": [i as f64 / 10.0, 59.9] },
        "score": i as f64 * 0.5,
    }
}

#[tokio::test]
async fn object_id_keyed_documents_stream_and_survive_a_sigkill() {
    let store = store("oids", 40, "    people: { batch_size: 20 }\n").await;
    let ids: Vec<bson::oid::ObjectId> = (0..240).map(|_| bson::oid::ObjectId::new()).collect();
    let people: Vec<Document> = ids[..200]
        .iter()
        .zip(1..)
        .map(|(id, i)| person(*id, i))
        .collect();
    store.insert("people", people).await;
    let mut run = store.run();
    store.wait_equal("people").await;
    assert_eq!(
        store.column_type("people", "born").await,
        "timestamp with time zone"
    );

    // Inserts, updates, $unset, replaces with dates and arrays, deletes.
    store
        .insert(
            "people",
            ids[200..220]
                .iter()
                .zip(201..)
                .map(|(id, i)| person(*id, i))
                .collect(),
        )
        .await;
    for id in &ids[..10] {
        store
            .update(
                "people",
                Bson::ObjectId(*id),
                doc! { "$set": { "name": "renamed" }, "$inc": { "score": 1.0 } },
            )
            .await;
    }
    store
        .update(
            "people",
            Bson::ObjectId(ids[10]),
            doc! { "$unset": { "address": "" } },
        )
        .await;
    for (k, id) in ids[11..14].iter().enumerate() {
        let replacement = doc! {
            "name": "replaced",
            "born": bson::DateTime::from_millis(946_684_800_000 + k as i64),
            "visits": [ { "pages": [[1, 2], [3]] } ],
        };
        let r = store
            .coll("people")
            .replace_one(doc! { "_id": id }, replacement)
            .await
            .unwrap();
        assert_eq!(r.modified_count, 1);
        store.wrote("people", &Bson::ObjectId(*id));
    }
    for id in &ids[14..19] {
        store
            .coll("people")
            .delete_one(doc! { "_id": id })
            .await
            .unwrap();
        store.wrote("people", &Bson::ObjectId(*id));
    }
    store.wait_equal("people").await;

    // Killed for real, more written while it is down, then restarted.
    run.kill();
    store
        .insert(
            "people",
            ids[220..]
                .iter()
                .zip(221..)
                .map(|(id, i)| person(*id, i))
                .collect(),
        )
        .await;
    for id in &ids[20..30] {
        store
            .update(
                "people",
                Bson::ObjectId(*id),
                doc! { "$set": { "name": "after the kill" } },
            )
            .await;
    }
    let mut run = store.run();
    store.wait_equal("people").await;
    let rows = store
        .scalar(format!("SELECT count(*) FROM {}.people", store.db))
        .await;
    assert_eq!(
        rows, 240,
        "one row per document: updates never land as new rows"
    );
    assert!(run.terminate().success());
    store.assert_no_double_apply("people").await;
}

#[tokio::test]
async fn survives_sigkill_mid_snapshot_and_mid_stream() {
    let store = Arc::new(
        store(
            "kill",
            400,
            "    orders: { parallel_streams: 1, batch_size: 50 }\n",
        )
        .await,
    );
    for start in (0..12_000).step_by(2_000) {
        store
            .insert("orders", (start + 1..=start + 2_000).map(order).collect())
            .await;
    }
    let mut run = store.run();

    // Writes keep landing during the snapshot and the stream.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for round in 0..300_i64 {
                let id = (round * 131) % 12_000 + 1;
                store
                    .update(
                        "orders",
                        key(id),
                        doc! { "$inc": { "qty": 1 }, "$set": { "status": format!("r{round}") } },
                    )
                    .await;
                store.insert("orders", vec![order(100_000 + round)]).await;
                if round % 10 == 0 {
                    let gone = (round * 7919) % 12_000 + 1;
                    let r = store
                        .coll("orders")
                        .delete_one(doc! { "_id": oid(gone) })
                        .await
                        .unwrap();
                    if r.deleted_count == 1 {
                        store.wrote("orders", &key(gone));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let meta = format!("{}_meta", store.db);
    let progressed = async || {
        let done = store
            .count_when_ready(format!(
                "SELECT count(*) FROM {meta}.snapshot_chunks WHERE table_name = 'orders' AND done_position IS NOT NULL"
            ))
            .await;
        (done >= 3).then_some(())
    };
    let what = "three snapshot chunks done";
    warp_e2e::eventually_with(what, Poll::TIGHT, progressed, || store.log()).await;
    run.kill();
    store
        .wait_checkpoint("orders", "phase = 'snapshot'", "a kill mid-snapshot")
        .await;

    let mut run = store.run();
    store
        .wait_checkpoint("orders", "phase = 'streaming'", "streaming")
        .await;
    let position =
        format!("SELECT position::text FROM {meta}.checkpoints WHERE table_name = 'orders'");
    let started: String = sqlx::query_scalar(sqlx::AssertSqlSafe(position.clone()))
        .fetch_one(&store.pg)
        .await
        .unwrap();
    store
        .wait_checkpoint(
            "orders",
            &format!("position::text <> '{}'", started.replace('\'', "''")),
            "a streamed commit",
        )
        .await;
    run.kill();

    let mut run = store.run();
    writer.await.unwrap();
    store.wait_equal("orders").await;
    store.assert_no_double_apply("orders").await;
    assert!(run.terminate().success());
}

#[tokio::test]
async fn fields_beyond_the_sample_reshape_parallel_chunks() {
    // Discovery samples the first 1,000 documents; later ones add a field and turn an
    // integer field into text while chunks copy two at a time.
    let store = store("reshape", 100, "    wide: { parallel_streams: 3 }\n").await;
    let docs: Vec<Document> = (1..=2_500_i64)
        .map(|i| {
            if i <= 1_000 {
                doc! { "_id": i, "n": i, "tag": "early" }
            } else if i % 2 == 0 {
                doc! { "_id": i, "n": format!("n{i}"), "tag": "late", "extra": true }
            } else {
                doc! { "_id": i, "n": i, "tag": "late", "sub": { "x": i } }
            }
        })
        .collect();
    store.insert("wide", docs).await;
    let mut run = store.run();
    store.wait_equal("wide").await;
    assert_eq!(store.column_type("wide", "n").await, "text");
    assert_eq!(store.column_type("wide", "extra").await, "boolean");
    assert_eq!(store.column_type("wide", "sub").await, "jsonb");
    let copied = store
        .scalar(format!("SELECT count(*) FROM {}.wide", store.db))
        .await;
    assert_eq!(copied, 2_500, "re-read chunks land once");
    assert!(store.log().contains("chunk read again"), "{}", store.log());
    assert!(run.terminate().success());
    store.assert_no_double_apply("wide").await;
}

/// One document holding every BSON type the emulator stores, at its extremes. (It keeps
/// documents as JSON: decimal128, NaN and ±Infinity, timestamps, min/max keys, DBRefs,
/// regexes and dates past 9999 it refuses, and code with scope and binary subtypes it
/// flattens; the source's decoding tests take those in the server's BSON.)
fn every_bson_type(id: i64) -> Document {
    use bson::spec::BinarySubtype;
    let oid = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
    doc! {
        "_id": id,
        "i32_min": i32::MIN, "i32_max": i32::MAX,
        "i64_min": i64::MIN, "i64_max": i64::MAX,
        "nzero": -0.0_f64, "tiny": f64::MIN_POSITIVE, "huge": f64::MAX, "third": 1.0_f64 / 3.0,
        "date_1": bson::DateTime::from_millis(-62_135_596_800_000), // 0001-01-01
        "date_pre_epoch": bson::DateTime::from_millis(-1),
        "code": Bson::JavaScriptCode("function () { return 1; }".into()),
        "bin": Bson::Binary(bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] }),
        "text": "naïve ☃ 😀 'quoted' \\ back",
        "empty": "",
        "oid": oid,
        "arr": [1, "two", { "three": 3.5 }, [], Bson::Null],
        "nothing": Bson::Null,
    }
}

/// The parity matrix through the emulator: every BSON type it stores, written before the
/// snapshot and again while streaming, then updated and deleted, lands as the source's
/// decoder reads it (value by value, through the sink's own reader); a string holding
/// NUL, which PostgreSQL text cannot store, is dead-lettered with the reason rather than
/// changed.
#[tokio::test]
async fn every_bson_type_lands_the_same_by_copy_and_by_stream() {
    let store = store("matrix", 100, "").await;
    store.insert("m", vec![every_bson_type(1)]).await;
    let mut run = store.run();
    store.wait_equal("m").await;
    store.insert("m", vec![every_bson_type(2)]).await;
    store.wait_equal("m").await;
    store
        .update(
            "m",
            Bson::Int64(1),
            doc! { "$set": { "text": "changed", "nzero": 0.0 } },
        )
        .await;
    store
        .coll("m")
        .delete_one(doc! { "_id": 2_i64 })
        .await
        .unwrap();
    store.wrote("m", &Bson::Int64(2));
    store.wait_equal("m").await;
    store
        .insert("m", vec![doc! { "_id": 3_i64, "text": "a\u{0}b" }])
        .await;
    let refused = format!(
        "SELECT count(*) FROM {}_meta.dead_letter_queue WHERE table_name = 'm' AND error LIKE '%NUL%'",
        store.db
    );
    let dead_lettered = async || (store.count_when_ready(refused.clone()).await >= 1).then_some(());
    let what = "the NUL document dead-lettered";
    warp_e2e::eventually_with(what, Poll::SECONDS, dead_lettered, || store.log()).await;
    assert!(run.terminate().success());
}

/// `_id`s of different types whose plain texts meet (the boolean `true` and the string
/// `"true"`; the emulator refuses `5` beside `"5"`, which the source's unit tests build in
/// the server's shape) are two documents at the source and stay two rows, by the copy and
/// by the stream; strings that read like another type land quoted.
#[tokio::test]
async fn ids_whose_texts_would_meet_stay_apart() {
    let store = store("ids", 100, "").await;
    let v = |id: Bson, v: i64| doc! { "_id": id, "v": v };
    let s = |t: &str| Bson::String(t.into());
    store
        .insert(
            "ids",
            vec![
                v(Bson::Boolean(true), 1),
                v(s("true"), 2),
                v(Bson::Int64(7), 3),
                v(s("8"), 4),
            ],
        )
        .await;
    let mut run = store.run();
    store.wait_equal("ids").await;
    store
        .insert("ids", vec![v(Bson::Boolean(false), 5), v(s("false"), 6)])
        .await;
    store
        .update("ids", s("true"), doc! { "$set": { "v": 20_i64 } })
        .await;
    // (The emulator cannot delete by a boolean `_id`.)
    let gone = store
        .coll("ids")
        .delete_one(doc! { "_id": 7_i64 })
        .await
        .unwrap();
    assert_eq!(gone.deleted_count, 1);
    store.wrote("ids", &Bson::Int64(7));
    store.wait_equal("ids").await;
    let keys: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT _id, v::bigint FROM {}.ids WHERE NOT is_deleted ORDER BY _id COLLATE \"C\"",
        store.db
    )))
    .fetch_all(&store.pg)
    .await
    .unwrap();
    let expected = [
        (r#""8""#, 4),
        (r#""false""#, 6),
        (r#""true""#, 20),
        ("false", 5),
        ("true", 1),
    ];
    assert_eq!(
        keys,
        expected.map(|(k, v)| (k.to_owned(), v)).to_vec(),
        "landed keys"
    );
    store.assert_no_double_apply("ids").await;
    assert!(run.terminate().success());
}

/// Documents with more fields than a PostgreSQL table can have columns (1,600): the
/// fields past the column budget land in `_overflow` as JSON, by the copy and by the
/// stream, instead of failing the table; every value is in the destination.
#[tokio::test]
async fn documents_wider_than_a_table_land_their_extra_fields_in_overflow() {
    let store = store("overflow", 100, "").await;
    let wide = |id: i64, fields: usize| {
        let mut d = doc! { "_id": id };
        for f in 0..fields {
            let v = if f % 2 == 0 {
                Bson::Int64(id * 10_000 + f as i64)
            } else {
                Bson::String(format!("v{f}"))
            };
            d.insert(format!("f{f:04}"), v);
        }
        d
    };
    store
        .insert("wide", (1..=20).map(|i| wide(i, 1_700)).collect())
        .await;
    let mut run = store.run();
    store.wait_equal("wide").await;
    // Streamed: a wider document, and an update adding a field no column holds.
    store.insert("wide", vec![wide(21, 1_750)]).await;
    store
        .update(
            "wide",
            Bson::Int64(3),
            doc! { "$set": { "late": "x", "f0000": 7_i64 } },
        )
        .await;
    store.wait_equal("wide").await;
    let columns = store
        .scalar(format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 'wide'",
            store.db
        ))
        .await;
    assert!((800..1_600).contains(&columns), "{columns} columns");
    assert_eq!(store.column_type("wide", "_overflow").await, "jsonb");
    let sql = |q: &str| format!("SELECT count(*) FROM {}.wide WHERE {q}", store.db);
    assert_eq!(store.scalar(sql("_overflow->>'f1699' = 'v1699'")).await, 21);
    assert_eq!(
        store
            .scalar(sql("(_overflow->>'f1748')::bigint = 210000 + 1748"))
            .await,
        1
    );
    assert_eq!(
        store
            .scalar(sql("_id = '3' AND _overflow->>'late' = 'x' AND f0000 = 7"))
            .await,
        1
    );
    assert!(run.terminate().success());
}

#[tokio::test]
async fn timestamp_polling_replicates_inserts_updates_and_detected_deletes() {
    let store = store(
        "poll",
        100,
        "    items: { polling_interval: 0.2, delete_detection_interval: 0.5 }\n",
    )
    .await;
    store.poll_by("updated");
    let at = |i: i64| bson::DateTime::from_millis(1_700_000_000_000 + i);
    store
        .insert(
            "items",
            (1..=200)
                .map(|i| doc! { "_id": i, "v": i, "updated": at(i) })
                .collect(),
        )
        .await;
    let mut run = store.run();
    store.wait_equal("items").await;
    // Two rows tied at one timestamp, one of them at the current watermark.
    store
        .insert(
            "items",
            vec![
                doc! { "_id": 201_i64, "v": 201, "updated": at(200) },
                doc! { "_id": 202_i64, "v": 202, "updated": at(500) },
            ],
        )
        .await;
    // (The emulator stores a date given to `$set` as a string; a replace keeps it.)
    let r = store
        .coll("items")
        .replace_one(doc! { "_id": 5_i64 }, doc! { "v": -5, "updated": at(500) })
        .await
        .unwrap();
    assert_eq!(r.modified_count, 1);
    store.wrote("items", &Bson::Int64(5));
    store.wait_equal("items").await;
    // Polling cannot see a delete; delete detection (key-set comparison) does.
    store
        .coll("items")
        .delete_one(doc! { "_id": 7_i64 })
        .await
        .unwrap();
    store.wrote("items", &Bson::Int64(7));
    store.wait_equal("items").await;
    assert!(run.terminate().success());
    store.assert_no_double_apply("items").await;
}

#[tokio::test]
async fn timestamp_polling_writes_during_the_snapshot_land_once() {
    // A polled snapshot copies chunk after chunk while a writer inserts and replaces
    // documents; the first polls read everything since the snapshot's start, much of it
    // already copied by the chunks read later. Every change lands exactly once.
    let store = store("pollsnap", 100, "    items: { polling_interval: 0.2 }\n").await;
    store.poll_by("updated");
    let base = 1_700_000_000_000_i64;
    let at = |ms: i64| bson::DateTime::from_millis(base + ms);
    store
        .insert(
            "items",
            (1..=3_000)
                .map(|i| doc! { "_id": i, "v": i, "updated": at(i) })
                .collect(),
        )
        .await;
    let mut run = store.run();
    store
        .wait_checkpoint("items", "phase = 'snapshot'", "a chunk copied")
        .await;
    // Until the copy is done (and a little after): new documents, which fall in the
    // last chunk, and replaced ones spread over the chunks, each at a newer time.
    let streaming = format!(
        "SELECT count(*) FROM {}_meta.checkpoints WHERE table_name = 'items' AND phase = 'streaming'",
        store.db
    );
    let mut clock = 10_000;
    let mut id = 3_000;
    let mut rounds_after = 0;
    while rounds_after < 5 {
        clock += 1;
        id += 1;
        store
            .insert(
                "items",
                vec![doc! { "_id": id, "v": id, "updated": at(clock) }],
            )
            .await;
        let replaced = (clock * 7) % 3_000 + 1;
        let r = store
            .coll("items")
            .replace_one(
                doc! { "_id": replaced },
                doc! { "v": -replaced, "updated": at(clock) },
            )
            .await
            .unwrap();
        assert_eq!(r.modified_count, 1);
        store.wrote("items", &Bson::Int64(replaced));
        if store.count_when_ready(streaming.clone()).await > 0 {
            rounds_after += 1;
        }
    }
    store.wait_equal("items").await;
    assert!(run.terminate().success());
    store.assert_no_double_apply("items").await;
}

/// The seed's ecommerce ConfigMap as it ships, with the seed Deployment's way of
/// supplying connections (environment), pointed at the local peers.
#[tokio::test]
async fn the_seed_ecommerce_configmap_runs_as_shipped() {
    let mongo_url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let mongo = mongodb::Client::with_uri_str(&mongo_url)
        .await
        .unwrap()
        .database("ecommerce_db");
    mongo.drop().await.unwrap();
    let pg = replica::fresh_pg(&["ecommerce", "ecommerce_e2e_meta"]).await;
    for (coll, n) in [
        ("users", 120),
        ("orders", 300),
        ("products", 40),
        ("categories", 8),
        ("inventory", 60),
        ("reviews", 25),
        ("audit", 5),
    ] {
        let docs: Vec<Document> = (1..=n)
            .map(|i: i64| doc! { "_id": i, "name": format!("{coll} {i}"), "n": i })
            .collect();
        mongo
            .collection::<Document>(coll)
            .insert_many(docs)
            .await
            .unwrap();
    }
    let dir = TempDir::new("mongo-seed");
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-ecommerce.yaml"
    );
    let (metrics, health) = (warp_e2e::free_port(), warp_e2e::free_port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cartridge-warp"));
    cmd.args(["run", "--config", seed])
        .env("CARTRIDGE_WARP_SOURCE__CONNECTION_STRING", &mongo_url)
        // The local peer speaks no TLS (it does answer as replica set rs0).
        .env("CARTRIDGE_WARP_SOURCE__SSL_ENABLED", "false")
        .env("CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING", &pg_url)
        .env(
            "CARTRIDGE_WARP_DESTINATION__METADATA_SCHEMA",
            "ecommerce_e2e_meta",
        )
        .env(
            "CARTRIDGE_WARP_MONITORING__METRICS_PORT",
            metrics.to_string(),
        )
        .env(
            "CARTRIDGE_WARP_MONITORING__HEALTH_CHECK_PORT",
            health.to_string(),
        )
        .env("CARTRIDGE_WARP_LOGGING__LOG_FILE", dir.join("warp.log"))
        .env("CARTRIDGE_WARP_PERFORMANCE__RETRY_DELAY", "1");
    let log = dir.join("run.log");
    let mut run = Process::start(cmd, &log);
    let count = |table: &'static str| {
        let pg = pg.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM ecommerce.{table} WHERE NOT is_deleted"
            )))
            .fetch_one(&pg)
            .await
            .unwrap_or(-1)
        }
    };
    let streaming = |table: &'static str| {
        let pg = pg.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ecommerce_e2e_meta.checkpoints WHERE table_name = $1 AND phase = 'streaming'",
            )
            .bind(table)
            .fetch_one(&pg)
            .await
            .unwrap_or(0)
                == 1
        }
    };
    let state = || std::fs::read_to_string(&log).unwrap_or_default();
    for (table, want) in [
        ("users", 120),
        ("orders", 300),
        ("categories", 8),
        ("inventory", 60),
    ] {
        let copied = async || (count(table).await == want && streaming(table).await).then_some(());
        let what = format!("{table} copied and streaming");
        warp_e2e::eventually_with(&what, Poll::SECONDS, copied, state).await;
    }
    // full_load_enabled: false — nothing copied, only what changes from now on.
    for table in ["products", "reviews"] {
        let what = format!("{table} streaming");
        let on = async || streaming(table).await.then_some(());
        warp_e2e::eventually_with(&what, Poll::SECONDS, on, state).await;
        assert_eq!(
            count(table).await,
            0,
            "{table} has full_load_enabled: false"
        );
        mongo
            .collection::<Document>(table)
            .insert_one(doc! { "_id": 1_000_i64, "name": "new", "n": 0 })
            .await
            .unwrap();
    }
    for table in ["products", "reviews"] {
        let arrived = async || (count(table).await == 1).then_some(());
        let what = format!("{table}: the new document");
        warp_e2e::eventually_with(&what, Poll::SECONDS, arrived, state).await;
    }
    let audit: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = 'ecommerce' AND table_name = 'audit')",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert!(!audit, "audit is not in the seed's table_whitelist");
    let (status, _) = warp_e2e::http_get(health, "/ready").unwrap();
    assert_eq!(status, 200);
    assert!(run.terminate().success());
    let file_log = std::fs::read_to_string(dir.join("warp.log")).unwrap();
    assert!(
        file_log
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "format: structured writes JSON lines"
    );
}

#[tokio::test]
async fn check_connections_opens_a_change_stream() {
    let store = store("check", 10, "    c: {}\n").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cartridge-warp"))
        .args([
            "validate",
            "--check-connections",
            "--config",
            store.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reachable, prerequisites met"), "{stdout}");
    assert!(stdout.contains("destination: reachable"), "{stdout}");
}
