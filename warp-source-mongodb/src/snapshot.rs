//! Snapshot by `_id` ranges. Reads are not point-in-time: each chunk reports a resume
//! token taken before it reads, so every change after that token replays on top.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use bson::{doc, Bson, Document};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use mongodb::options::ReadConcern;
use mongodb::{ClientSession, Collection, Cursor, SessionCursor};
use tracing::warn;
use warp_core::{ChunkPage, Key, KeyRange, SchemaChange, TableSchema, Value};

use crate::error::{Context, MongoError, Result};
use crate::ids::{reads_as_another_type, IdForm};
use crate::poll::Older;
use crate::shape::{Layout, Rules, ID};

/// Documents per page handed to the engine when `stream_batch_size` is unset.
pub const PAGE_DOCS: usize = 2_000;

/// Chunk bounds: every `chunk_docs`-th `_id` in `_id` order.
///
/// MongoDB compares values of different types by type first and a range query only
/// matches its bound's type ("type bracketing"), so ranges are only used when every
/// `_id` is of one type bracket; otherwise the collection is one chunk.
///
/// The `_id` index walk keeps only the bounds in memory. Chunk ranges are evaluated by
/// the server's comparison, so its sort must agree with MongoDB's rules: if the walk
/// comes out of that order (seen with an emulator), the bounds are recomputed from all
/// `_id`s sorted here, which costs memory in proportion to the collection.
pub async fn plan(coll: &Collection<Document>, chunk_docs: usize) -> Result<Vec<KeyRange>> {
    // A collection the server counts at one chunk or less is one chunk, without a walk of
    // its `_id` index (the count is collection metadata; if it is a little low, the one
    // chunk is only larger). Databases hold many small collections.
    let estimate = coll
        .estimated_document_count()
        .await
        .context("count documents")?;
    if usize::try_from(estimate).is_ok_and(|n| n <= chunk_docs) {
        return Ok(vec![KeyRange::ALL]);
    }
    let mut bounds = Vec::new();
    let mut brackets = BTreeSet::new();
    let mut prev: Option<Bson> = None;
    let mut seen = 0usize;
    let mut in_order = true;
    let mut ids = list_ids(coll, true).await?;
    while let Some(d) = ids.try_next().await.context("list _id values")? {
        let Some(id) = d.get(ID) else { continue };
        brackets.insert(bracket(id));
        if let Some(p) = &prev {
            if bracket(p) == bracket(id) && same_bracket_order(p, id) == Ordering::Greater {
                in_order = false;
                break;
            }
        }
        if seen > 0 && seen % chunk_docs == 0 {
            bounds.push(id.clone());
        }
        seen += 1;
        prev = Some(id.clone());
    }
    if in_order && (brackets.len() > 1 || brackets.contains(&0)) {
        return Ok(one_chunk(coll));
    }
    if !in_order {
        warn!(
            collection = coll.name(),
            "the server's _id order differs from MongoDB's rules: ordering the _ids in memory"
        );
        let mut all = Vec::new();
        brackets.clear();
        let mut ids = list_ids(coll, false).await?;
        while let Some(d) = ids.try_next().await.context("list _id values")? {
            if let Some(id) = d.get(ID) {
                brackets.insert(bracket(id));
                all.push(id.clone());
            }
        }
        // Strings out of byte order mean a collation this side cannot reproduce.
        if brackets.len() > 1 || brackets.contains(&0) || brackets.contains(&2) {
            return Ok(one_chunk(coll));
        }
        all.sort_by(same_bracket_order);
        all.dedup();
        bounds = all
            .into_iter()
            .skip(chunk_docs)
            .step_by(chunk_docs)
            .collect();
    }
    Ok(KeyRange::split_at(
        bounds
            .into_iter()
            .map(|b| vec![Value::Json(b.into_canonical_extjson())])
            .collect(),
    ))
}

async fn list_ids(coll: &Collection<Document>, sorted: bool) -> Result<Cursor<Document>> {
    let find = coll
        .find(doc! {})
        .projection(doc! { ID: 1 })
        .batch_size(10_000);
    let find = if sorted {
        find.sort(doc! { ID: 1 })
    } else {
        find
    };
    find.await.context("list _id values")
}

fn one_chunk(coll: &Collection<Document>) -> Vec<KeyRange> {
    warn!(
        collection = coll.name(),
        "_id values cannot be ranged (several types, or a collation): the collection is copied as one chunk"
    );
    vec![KeyRange::ALL]
}

/// MongoDB's comparison order groups types into brackets; 0 = not used for chunking.
fn bracket(b: &Bson) -> u8 {
    match b {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::ObjectId(_) => 3,
        Bson::DateTime(_) => 4,
        _ => 0,
    }
}

/// MongoDB's order of two values of one bracket.
fn same_bracket_order(a: &Bson, b: &Bson) -> Ordering {
    let int = |v: &Bson| match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    };
    let float = |v: &Bson| match v {
        Bson::Double(f) => *f,
        other => int(other).unwrap_or_default() as f64,
    };
    match (a, b) {
        (Bson::String(x), Bson::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        _ => match (int(a), int(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => float(a).total_cmp(&float(b)),
        },
    }
}

fn bound(key: &Key) -> Result<Bson> {
    let json = match key.as_slice() {
        [Value::Json(j)] => j.clone(),
        other => {
            return Err(MongoError::Unsupported {
                message: format!("not a MongoDB chunk bound: {other:?}"),
                hint: None,
            })
        }
    };
    Bson::try_from(json).map_err(|e| MongoError::Unsupported {
        message: format!("chunk bound: {e}"),
        hint: None,
    })
}

/// The query for one chunk.
pub fn filter(range: &KeyRange) -> Result<Document> {
    let start = range.start.as_ref().map(bound).transpose()?;
    let end = range.end.as_ref().map(bound).transpose()?;
    Ok(match (start, end) {
        (None, None) => doc! {},
        (None, Some(e)) => doc! { ID: { "$lt": e } },
        (Some(s), None) => doc! { ID: { "$gte": s } },
        (Some(s), Some(e)) => doc! { ID: { "$gte": s, "$lt": e } },
    })
}

/// Whether the destination key `key` (the `_id`'s text form) is in `range`. When the
/// text cannot be placed with certainty the answer is `false`: the change then replays,
/// which is harmless, where a wrong `true` would skip it.
pub fn contains(range: &KeyRange, key: &[Value]) -> bool {
    if range.start.is_none() && range.end.is_none() {
        return true;
    }
    let [Value::Text(text)] = key else {
        return false;
    };
    let cmp = |k: &Key| -> Option<Ordering> {
        match bound(k).ok()? {
            Bson::ObjectId(b) => {
                let id = bson::oid::ObjectId::parse_str(text).ok()?;
                Some(id.bytes().cmp(&b.bytes()))
            }
            // A text that may be another type's (or a quoted string) is not placed
            // among strings: a number inserted while strings are copied is in no
            // string chunk's query.
            Bson::String(b) if !reads_as_another_type(text) => Some(text.as_str().cmp(b.as_str())),
            Bson::Int32(b) => Some(text.parse::<i64>().ok()?.cmp(&i64::from(b))),
            Bson::Int64(b) => Some(text.parse::<i64>().ok()?.cmp(&b)),
            _ => None,
        }
    };
    let after_start = range
        .start
        .as_ref()
        .is_none_or(|s| cmp(s).is_some_and(|o| o != Ordering::Less));
    let before_end = range
        .end
        .as_ref()
        .is_none_or(|e| cmp(e) == Some(Ordering::Less));
    after_start && before_end
}

/// Pages of rows of one chunk (only the documents `only` keeps, when given), or a
/// reshape request when the documents need columns or types `schema` lacks (then the rest
/// of the chunk is scanned only to collect them all).
/// Reads a chunk. With `session` (the causally consistent session its change-stream
/// position was taken in) the read is `majority` and after that position's cluster time,
/// so the copy holds every write at or before the position even when it is served by a
/// secondary that lags: the driver sends `afterClusterTime`, and the server waits.
pub async fn read(
    coll: &Collection<Document>,
    rules: Rules,
    schema: TableSchema,
    range: &KeyRange,
    only: Option<Older>,
    page_docs: usize,
    session: Option<ClientSession>,
) -> Result<BoxStream<'static, warp_core::Result<ChunkPage>>> {
    let find = coll
        .find(filter(range)?)
        .sort(doc! { ID: 1 })
        .batch_size(u32::try_from(page_docs).unwrap_or(u32::MAX));
    let cursor = match session {
        None => Docs::Plain(find.await.context("read chunk")?),
        Some(mut session) => {
            let cursor = find
                .read_concern(ReadConcern::majority())
                .session(&mut session)
                .await
                .context("read chunk")?;
            Docs::Causal(cursor, Box::new(session))
        }
    };
    let reader = Reader {
        cursor,
        layout: Layout::new(rules, &schema),
        only,
        rules,
        schema,
        grown: Vec::new(),
        done: false,
        page_docs,
    };
    Ok(stream::unfold(reader, |mut r| async move {
        match r.page().await {
            Ok(Some(page)) => Some((Ok(page), r)),
            Ok(None) => None,
            Err(e) => {
                r.done = true;
                Some((Err(e.into()), r))
            }
        }
    })
    .boxed())
}

/// A chunk's documents: a plain cursor, or one read in a session.
enum Docs {
    Plain(Cursor<Document>),
    Causal(SessionCursor<Document>, Box<ClientSession>),
}

impl Docs {
    async fn next(&mut self) -> Result<Option<Document>> {
        let next = match self {
            Self::Plain(cursor) => cursor.try_next().await,
            Self::Causal(cursor, session) => cursor.next(session).await.transpose(),
        };
        next.context("read chunk")
    }
}

struct Reader {
    cursor: Docs,
    only: Option<Older>,
    rules: Rules,
    schema: TableSchema,
    layout: Layout,
    grown: Vec<SchemaChange>,
    done: bool,
    page_docs: usize,
}

impl Reader {
    async fn page(&mut self) -> Result<Option<ChunkPage>> {
        if self.done {
            return Ok(None);
        }
        let mut rows = Vec::new();
        while let Some(doc) = self.cursor.next().await? {
            if self.only.as_ref().is_some_and(|o| !o.keeps(&doc)) {
                continue;
            }
            let changes = self.rules.evolve(&mut self.schema, &doc);
            if !changes.is_empty() || !self.grown.is_empty() {
                self.grown.extend(changes);
                continue;
            }
            rows.push(self.layout.row(&doc));
            if rows.len() >= self.page_docs {
                return Ok(Some(ChunkPage::Rows(rows)));
            }
        }
        self.done = true;
        if !self.grown.is_empty() {
            return Ok(Some(ChunkPage::Reshape(std::mem::take(&mut self.grown))));
        }
        Ok((!rows.is_empty()).then_some(ChunkPage::Rows(rows)))
    }
}

/// Every `_id` (delete detection for the `timestamp` strategy).
pub async fn all_keys(coll: &Collection<Document>, form: IdForm) -> Result<Vec<Key>> {
    let mut cursor = coll
        .find(doc! {})
        .projection(doc! { ID: 1 })
        .batch_size(10_000)
        .await
        .context("read keys")?;
    let mut keys = Vec::new();
    while let Some(d) = cursor.try_next().await.context("read keys")? {
        if let Some(id) = d.get(ID) {
            keys.push(form.key(id));
        }
    }
    Ok(keys)
}

/// Which of `keys` (destination keys: `_id` texts in `form`) name a document now.
pub async fn existing_keys(
    coll: &Collection<Document>,
    form: IdForm,
    keys: &[Key],
) -> Result<Vec<Key>> {
    let mut held = BTreeSet::new();
    for part in keys.chunks(1000) {
        let ids: Vec<Bson> = part
            .iter()
            .filter_map(|k| match k.as_slice() {
                [Value::Text(t)] => Some(form.candidates(t)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut cursor = coll
            .find(doc! { ID: { "$in": ids } })
            .projection(doc! { ID: 1 })
            .await
            .context("look up keys")?;
        while let Some(d) = cursor.try_next().await.context("look up keys")? {
            if let Some(id) = d.get(ID) {
                held.insert(form.text(id));
            }
        }
    }
    Ok(keys
        .iter()
        .filter(|k| matches!(k.as_slice(), [Value::Text(t)] if held.contains(t)))
        .cloned()
        .collect())
}

/// `storageStats.avgObjSize` of one `$collStats` answer, in bytes (`None` when absent or
/// not a positive number).
pub fn average_size(stats: &Document) -> Option<u64> {
    let size = stats.get_document("storageStats").ok()?.get("avgObjSize")?;
    let bytes = match size {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        // Whole bytes are enough to size a chunk.
        #[allow(clippy::cast_possible_truncation)]
        Bson::Double(n) => *n as i64,
        _ => return None,
    };
    u64::try_from(bytes).ok().filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use bson::oid::ObjectId;

    use super::*;

    /// `$collStats` answers in the server's shape (MongoDB's `$collStats` reference:
    /// `avgObjSize` is an int, a double on some versions, absent for an empty collection).
    #[test]
    fn average_size_reads_collstats_storage_stats() {
        let answer = |avg: Option<Bson>| {
            let mut storage =
                doc! { "size": 1_310_720_i64, "count": 10_240_i32, "storageSize": 409_600_i32 };
            if let Some(avg) = avg {
                storage.insert("avgObjSize", avg);
            }
            doc! { "ns": "shop.orders", "host": "db-0:27017", "localTime": bson::DateTime::now(), "storageStats": storage }
        };
        assert_eq!(average_size(&answer(Some(Bson::Int32(128)))), Some(128));
        assert_eq!(average_size(&answer(Some(Bson::Int64(9_000)))), Some(9_000));
        assert_eq!(average_size(&answer(Some(Bson::Double(127.6)))), Some(127));
        assert_eq!(average_size(&answer(None)), None);
        assert_eq!(average_size(&answer(Some(Bson::Int32(0)))), None);
        assert_eq!(average_size(&doc! { "ns": "shop.orders" }), None);
    }

    /// Against the MongoDB peer, watching the commands: a collection counted at one chunk
    /// or less is planned as one chunk without reading its `_id`s; a larger one is walked.
    #[tokio::test]
    async fn a_collection_of_one_chunk_is_planned_without_a_walk() {
        use mongodb::event::command::CommandEvent;
        use mongodb::event::EventHandler;
        use std::sync::{Arc, Mutex};

        let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
        let mut options = mongodb::options::ClientOptions::parse(&url).await.unwrap();
        let finds: Arc<Mutex<usize>> = Arc::default();
        let log = Arc::clone(&finds);
        options.command_event_handler = Some(EventHandler::callback(move |e| {
            if let CommandEvent::Started(s) = e {
                if s.command_name == "find" {
                    *log.lock().unwrap() += 1;
                }
            }
        }));
        let client = mongodb::Client::with_options(options).unwrap();
        let db = client.database("source_mongo_plan_small");
        db.drop().await.unwrap();
        let coll = db.collection::<Document>("items");
        let docs: Vec<Document> = (1..=5_i64).map(|i| doc! { "_id": i, "n": i }).collect();
        coll.insert_many(docs).await.unwrap();

        assert_eq!(plan(&coll, 5).await.unwrap(), vec![KeyRange::ALL]);
        assert_eq!(*finds.lock().unwrap(), 0, "no _id walk");
        assert_eq!(plan(&coll, 2).await.unwrap().len(), 3);
        assert!(*finds.lock().unwrap() > 0, "walked");
    }

    /// Against the MongoDB peer, watching the commands the driver sends: the chunk's
    /// position (a change stream's `aggregate`) and its `find` share one session, and the
    /// `find` reads `majority`. (The peer sends no `operationTime`, so the driver's
    /// `afterClusterTime` — which a real server then waits on — cannot show here.)
    #[tokio::test]
    async fn a_chunk_is_read_majority_in_the_session_its_position_was_taken_in() {
        use mongodb::event::command::CommandEvent;
        use mongodb::event::EventHandler;
        use std::sync::{Arc, Mutex};

        let url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
        let mut options = mongodb::options::ClientOptions::parse(&url).await.unwrap();
        let seen: Arc<Mutex<Vec<(String, Document)>>> = Arc::default();
        let log = Arc::clone(&seen);
        options.command_event_handler = Some(EventHandler::callback(move |e| {
            if let CommandEvent::Started(s) = e {
                log.lock().unwrap().push((s.command_name, s.command));
            }
        }));
        let client = mongodb::Client::with_options(options).unwrap();
        let db = client.database("source_mongo_causal_chunk");
        db.drop().await.unwrap();
        let coll = db.collection::<Document>("items");
        let docs: Vec<Document> = (1..=5_i64).map(|i| doc! { "_id": i, "n": i }).collect();
        coll.insert_many(docs.clone()).await.unwrap();
        let rules = Rules::default();
        let schema = rules.infer(
            warp_core::TableId {
                database: "source_mongo_causal_chunk".into(),
                name: "items".into(),
            },
            &docs,
        );

        let (_, session) = crate::changes::current_in(&coll).await.unwrap();
        let mut pages = read(
            &coll,
            rules,
            schema,
            &KeyRange::ALL,
            None,
            100,
            Some(session),
        )
        .await
        .unwrap();
        let mut rows = 0;
        while let Some(page) = pages.next().await {
            if let ChunkPage::Rows(r) = page.unwrap() {
                rows += r.len();
            }
        }
        assert_eq!(rows, 5);
        // A copy: the driver's event callback must never wait on this lock.
        let seen = seen.lock().unwrap().clone();
        let command = |name: &str| {
            seen.iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| panic!("no {name} in {seen:?}"))
        };
        let (aggregate, find) = (command("aggregate"), command("find"));
        assert!(aggregate.get("lsid").is_some(), "{aggregate}");
        assert_eq!(aggregate.get("lsid"), find.get("lsid"), "one session");
        assert_eq!(
            find.get_document("readConcern").unwrap().get_str("level"),
            Ok("majority"),
            "{find}"
        );
        db.drop().await.unwrap();
    }

    fn key(b: Bson) -> Key {
        vec![Value::Json(b.into_canonical_extjson())]
    }

    fn key_of(id: &Bson) -> Key {
        IdForm::Distinct.key(id)
    }

    #[test]
    fn chunk_membership_of_text_keys_follows_the_bound_type() {
        let (a, b) = (
            ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
            ObjectId::parse_str("75a1b2c3d4e5f60718293a4b").unwrap(),
        );
        let r = KeyRange {
            start: Some(key(Bson::ObjectId(a))),
            end: Some(key(Bson::ObjectId(b))),
        };
        assert!(contains(&r, &key_of(&Bson::ObjectId(a))));
        let mid = ObjectId::parse_str("70a1b2c3d4e5f60718293a4b").unwrap();
        assert!(contains(&r, &key_of(&Bson::ObjectId(mid))));
        assert!(!contains(&r, &key_of(&Bson::ObjectId(b))));
        // Numbers compare as numbers ("9" < "10"), not as text.
        let r = KeyRange {
            start: Some(key(Bson::Int32(9))),
            end: Some(key(Bson::Int32(100))),
        };
        assert!(contains(&r, &key_of(&Bson::Int64(10))));
        assert!(!contains(&r, &key_of(&Bson::Int64(8))));
        // Unplaceable text is never claimed (the change replays instead).
        assert!(!contains(&r, &key_of(&Bson::String("x".into()))));
        assert!(contains(&KeyRange::ALL, &key_of(&Bson::String("x".into()))));
        // Among strings, a number's text or a quoted string is never placed.
        let r = KeyRange {
            start: Some(key(Bson::String("0".into()))),
            end: Some(key(Bson::String("z".into()))),
        };
        assert!(contains(&r, &key_of(&Bson::String("m".into()))));
        assert!(!contains(&r, &key_of(&Bson::Int64(5))));
        assert!(!contains(&r, &key_of(&Bson::String("5".into()))));
        // In the distinct form a bare ObjectId text is an ObjectId, a string never.
        let r = KeyRange {
            start: Some(key(Bson::ObjectId(a))),
            end: Some(key(Bson::ObjectId(b))),
        };
        assert!(!contains(&r, &key_of(&Bson::String(mid.to_hex()))));
    }

    #[test]
    fn ids_order_as_mongodb_orders_them() {
        let mut ids = vec![
            Bson::Int64(10),
            Bson::Int32(9),
            Bson::Double(9.5),
            Bson::Int64(100),
        ];
        ids.sort_by(same_bracket_order);
        assert_eq!(
            ids,
            [
                Bson::Int32(9),
                Bson::Double(9.5),
                Bson::Int64(10),
                Bson::Int64(100)
            ]
        );
    }

    #[test]
    fn chunk_filters_are_half_open_ranges() {
        let r = KeyRange {
            start: Some(key(Bson::Int32(5))),
            end: Some(key(Bson::Int32(9))),
        };
        assert_eq!(filter(&r).unwrap(), doc! { "_id": { "$gte": 5, "$lt": 9 } });
        assert_eq!(filter(&KeyRange::ALL).unwrap(), doc! {});
    }
}
