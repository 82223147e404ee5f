//! The MongoDB peer's change events are typed as a real server types them
//! (`scripts/peers/mongo_events.py`): without that patch the emulator sends ObjectIds as
//! its storage JSON, dates as strings or `$date` documents, a date `clusterTime` and the
//! deleted document on deletes, and the suites could only stream string and integer keys.

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::options::FullDocumentType;

#[tokio::test]
async fn change_events_carry_bson_types_as_a_real_server_sends_them() {
    let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let db = "source_mongo_peer_events";
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    client.database(db).drop().await.unwrap();
    let people = client.database(db).collection::<Document>("people");
    let id = bson::oid::ObjectId::new();
    people.insert_one(doc! { "_id": id, "n": 1 }).await.unwrap();
    let mut stream = client
        .database(db)
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .await
        .unwrap()
        .with_type::<Document>();
    let born = bson::DateTime::from_millis(1_700_000_000_123);
    people
        .replace_one(
            doc! { "_id": id },
            doc! { "born": born, "tags": ["a", { "b": 2 }] },
        )
        .await
        .unwrap();
    people.delete_one(doc! { "_id": id }).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap()
    };

    let replaced = next().await;
    assert!(
        matches!(replaced.get("clusterTime"), Some(Bson::Timestamp(_))),
        "{replaced}"
    );
    assert_eq!(
        replaced.get_document("documentKey").unwrap().get("_id"),
        Some(&Bson::ObjectId(id))
    );
    let full = replaced.get_document("fullDocument").unwrap();
    assert_eq!(full.get("_id"), Some(&Bson::ObjectId(id)), "{full}");
    assert_eq!(full.get("born"), Some(&Bson::DateTime(born)), "{full}");
    assert!(replaced.get("updateDescription").is_none(), "{replaced}");

    let deleted = next().await;
    assert_eq!(deleted.get_str("operationType"), Ok("delete"));
    assert_eq!(
        deleted.get_document("documentKey").unwrap().get("_id"),
        Some(&Bson::ObjectId(id))
    );
    assert!(deleted.get("fullDocument").is_none(), "{deleted}");
    client.database(db).drop().await.unwrap();
}
