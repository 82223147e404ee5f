//! One collection's change stream (`fullDocument: updateLookup`), read as raw
//! documents and decoded tolerantly: real MongoDB events and the shapes of
//! MongoDB-compatible servers (dates for `clusterTime`, string `documentKey`s) both work.

use std::collections::HashMap;
use std::time::Duration;

use bson::{doc, Bson, Document, RawDocumentBuf};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{ClientSession, Collection, Database};
use tokio::sync::mpsc;
use tracing::{info, warn};
use warp_core::{
    Change, ChangeEvent, Commit, FeedItem, Key, Operation, Position, StreamFragment, TableChange,
    TableSchema,
};

use crate::error::{Context, MongoError};
use crate::position::StreamPosition;
use crate::shape::{Layout, Rules, ID};
use crate::split::{self, Reassembly};

/// Pause between empty polls (servers answer an idle `getMore` after `maxAwaitTimeMS`;
/// some answer at once, and this keeps them from spinning).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long the server may hold an idle `getMore`.
const MAX_AWAIT: Duration = Duration::from_millis(500);

/// A decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub token: Bson,
    pub op: String,
    pub full_document: Option<Document>,
    pub id: Option<Bson>,
    pub source_ts: Option<DateTime<Utc>>,
    /// `(lsid, txnNumber)` of a multi-document transaction.
    pub txn: Option<(Bson, i64)>,
    /// `to.coll` of a rename.
    pub renamed_to: Option<String>,
    /// `ns.coll`: the collection the event is about (none for database-wide events).
    pub collection: Option<String>,
}

impl Event {
    pub fn parse(doc: &Document) -> Result<Self, String> {
        let token = doc.get("_id").cloned().ok_or("change event without _id")?;
        let op = doc
            .get_str("operationType")
            .map_err(|_| "change event without operationType")?
            .to_owned();
        let full_document = match doc.get("fullDocument") {
            Some(Bson::Document(d)) => Some(d.clone()),
            _ => None,
        };
        // The document's own `_id` keeps its type; `documentKey` may hold more (shard keys).
        let id = full_document
            .as_ref()
            .and_then(|d| d.get(ID).cloned())
            .or_else(|| doc.get_document("documentKey").ok()?.get(ID).cloned());
        // A row event names its document; one that does not cannot be applied, and
        // skipping it would lose a change.
        if id.is_none() && matches!(op.as_str(), "insert" | "update" | "replace" | "delete") {
            return Err(format!("{op} change event without documentKey._id"));
        }
        let time = |k: &str| match doc.get(k) {
            Some(Bson::DateTime(d)) => DateTime::from_timestamp_millis(d.timestamp_millis()),
            Some(Bson::Timestamp(t)) => DateTime::from_timestamp(i64::from(t.time), 0),
            _ => None,
        };
        let txn = match (doc.get("lsid"), doc.get("txnNumber")) {
            (Some(lsid), Some(Bson::Int64(n))) => Some((lsid.clone(), *n)),
            (Some(lsid), Some(Bson::Int32(n))) => Some((lsid.clone(), i64::from(*n))),
            _ => None,
        };
        Ok(Self {
            token,
            op,
            full_document,
            id,
            source_ts: time("wallTime").or_else(|| time("clusterTime")),
            txn,
            renamed_to: doc
                .get_document("to")
                .ok()
                .and_then(|t| t.get_str("coll").ok())
                .map(str::to_owned),
            collection: doc
                .get_document("ns")
                .ok()
                .and_then(|ns| ns.get_str("coll").ok())
                .map(str::to_owned),
        })
    }
}

/// Turns events into changes against a shape that grows with the documents.
pub struct Decoder {
    rules: Rules,
    schema: TableSchema,
    layout: Layout,
    /// The replicated schema's name, for metric labels.
    schema_label: String,
}

impl Decoder {
    /// The destination key of a document with this `_id`, in the table's form.
    pub fn key(&self, id: &Bson) -> Key {
        self.rules.ids.key(id)
    }

    pub fn new(rules: Rules, schema: TableSchema) -> Self {
        Self {
            layout: Layout::new(rules, &schema),
            rules,
            schema,
            schema_label: String::new(),
        }
    }

    /// Metrics of this decoder carry `schema` as their schema label.
    pub fn labelled(mut self, schema: &str) -> Self {
        schema.clone_into(&mut self.schema_label);
        self
    }

    /// The changes of one event. `None` means the stream was invalidated.
    pub fn changes(&mut self, e: &Event) -> Option<Vec<Change>> {
        let row_op = match e.op.as_str() {
            "insert" => Operation::Insert,
            "update" | "replace" => Operation::Update,
            "delete" => Operation::Delete,
            "drop" | "dropDatabase" => return Some(vec![Change::Truncate]),
            "rename" => {
                warn!(
                    to = e.renamed_to.as_deref().unwrap_or("?"),
                    "collection renamed away: its rows are gone from this name"
                );
                return Some(vec![Change::Truncate]);
            }
            "invalidate" => return None,
            // DDL-like events (create, createIndexes, modify…) carry no rows.
            _ => return Some(Vec::new()),
        };
        let Some(id) = &e.id else {
            debug_assert!(false, "Event::parse refuses row events without a key");
            return Some(Vec::new());
        };
        let key = self.rules.ids.key(id);
        if row_op == Operation::Delete {
            return Some(vec![Change::Row(ChangeEvent {
                op: Operation::Delete,
                key,
                before: None,
                after: None,
                source_ts: e.source_ts,
            })]);
        }
        // An update whose document is gone by lookup time (`updateLookup` without
        // pre- and post-images): its delete follows in the log, so nothing is lost, but
        // the update's own values are not known. Counted, not dropped quietly.
        let Some(doc) = &e.full_document else {
            metrics::counter!(
                warp_core::metrics::UPDATES_WITHOUT_DOCUMENT_TOTAL,
                "schema" => self.schema_label.clone(),
                "table" => self.schema.id.name.clone()
            )
            .increment(1);
            return Some(Vec::new());
        };
        Some(self.document(row_op, key, doc, e.source_ts))
    }

    /// The changes that write `doc` whole: the shape growth it needs, then its row.
    pub fn document(
        &mut self,
        op: Operation,
        key: Key,
        doc: &Document,
        source_ts: Option<DateTime<Utc>>,
    ) -> Vec<Change> {
        let grown = self.rules.evolve(&mut self.schema, doc);
        if !grown.is_empty() {
            self.layout = Layout::new(self.rules, &self.schema);
        }
        let mut out: Vec<Change> = grown.into_iter().map(Change::Schema).collect();
        out.push(Change::Row(ChangeEvent {
            op,
            key,
            before: None,
            after: Some(self.layout.row(doc)),
            source_ts,
        }));
        out
    }
}

type Fragments = BoxStream<'static, warp_core::Result<StreamFragment>>;
type Items = BoxStream<'static, warp_core::Result<FeedItem>>;

/// What a change stream watches.
pub enum Watched {
    /// One collection; its decoder is the feed's only table.
    Collection(Collection<Document>),
    /// Every collection of a database named in `collections` (in the feed's table order),
    /// through one database-level stream.
    Database {
        db: Database,
        collections: Vec<String>,
    },
}

/// Streams `coll`'s changes strictly after `from`, forever.
pub fn stream(
    coll: Collection<Document>,
    table: String,
    decoder: Decoder,
    from: StreamPosition,
    options: StreamOptions,
) -> Fragments {
    warp_core::single_table(feed(
        Watched::Collection(coll),
        table,
        vec![decoder],
        from,
        options,
    ))
}

/// How a change stream is read.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Longest silence before the feed tells its tables where it is.
    pub heartbeat: Duration,
    /// The server splits events over 16 MB into fragments ([`split::supported`]).
    pub split_large_events: bool,
}

/// The changes of the watched collections strictly after `from`, forever, each tagged with
/// its collection's index (the order of `decoders`).
pub fn feed(
    watched: Watched,
    label: String,
    decoders: Vec<Decoder>,
    from: StreamPosition,
    options: StreamOptions,
) -> Items {
    let (tx, rx) = mpsc::channel(64);
    let by_name = match &watched {
        Watched::Collection(_) => HashMap::new(),
        Watched::Database { collections, .. } => collections
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect(),
    };
    let mut follower = Follower {
        watched,
        label,
        decoders,
        by_name,
        at: from,
        heartbeat: options.heartbeat,
        tx,
        split: options.split_large_events,
        reassembly: Reassembly::default(),
        stopped: std::collections::HashSet::new(),
    };
    tokio::spawn(async move {
        if let Err(e) = follower.run().await {
            let _ = follower.tx.send(Err(e)).await;
        }
    });
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

struct Follower {
    watched: Watched,
    /// What the stream serves, for errors (the table, or the database's tables).
    label: String,
    decoders: Vec<Decoder>,
    by_name: HashMap<String, usize>,
    at: StreamPosition,
    heartbeat: Duration,
    tx: mpsc::Sender<warp_core::Result<FeedItem>>,
    /// The server splits large events (`$changeStreamSplitLargeEvent`).
    split: bool,
    reassembly: Reassembly,
    /// Tables stopped at an event they cannot apply: nothing more is sent for them.
    stopped: std::collections::HashSet<usize>,
}

/// The receiver is gone: the engine stopped reading.
struct Closed;

impl Follower {
    async fn open(&self) -> warp_core::Result<ChangeStream<RawDocumentBuf>> {
        let token = self.at.resume_token()?;
        let (watch, mut pipeline) = match &self.watched {
            Watched::Collection(coll) => (coll.watch(), Vec::new()),
            // Only the served collections' events cross the wire; database-wide ones
            // (dropDatabase, invalidate) carry no collection and always pass.
            Watched::Database { db, collections } => (
                db.watch(),
                vec![doc! { "$match": { "$or": [
                    { "ns.coll": { "$in": collections.clone() } },
                    // A collection renamed onto a served one replaces its contents.
                    { "operationType": "rename", "to.coll": { "$in": collections.clone() } },
                    { "operationType": { "$in": ["dropDatabase", "invalidate"] } },
                ] } }],
            ),
        };
        // Rows come from the looked-up full document: the update description would only
        // make an event larger (with both, a large document can pass 16 MB twice over).
        pipeline.push(doc! { "$project": { "updateDescription": 0 } });
        if self.split {
            pipeline.push(split::stage());
        }
        let watch = watch
            .pipeline(pipeline)
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(MAX_AWAIT);
        let opened = if self.at.after_invalidate {
            watch.start_after(token).await
        } else {
            watch.resume_after(token).await
        };
        match opened.context("open change stream") {
            Ok(s) => Ok(s.with_type::<RawDocumentBuf>()),
            Err(e) => Err(self.lost_or(e)),
        }
    }

    fn lost_or(&self, e: MongoError) -> warp_core::Error {
        if e.is_position_lost() {
            return warp_core::Error::PositionLost {
                table: self.label.clone(),
                position: self.at.token.to_string(),
                detail: e.to_string(),
            };
        }
        e.into()
    }

    async fn send(&self, changes: Vec<TableChange>, commit: Option<Commit>) -> Result<(), Closed> {
        self.tx
            .send(Ok(FeedItem::Fragment { changes, commit }))
            .await
            .map_err(|_| Closed)
    }

    fn commit(&self, source_ts: Option<DateTime<Utc>>) -> warp_core::Result<Commit> {
        Ok(Commit {
            position: self.at.encode()?,
            source_ts,
        })
    }

    /// The served table of an event that cannot be decoded, and the event's resume
    /// token; `None` when either is missing (the stream cannot go past it then).
    fn undecodable_of(&self, doc: &Document) -> Option<(usize, serde_json::Value)> {
        let token = doc.get("_id")?.clone().into_canonical_extjson();
        let table = match &self.watched {
            Watched::Collection(_) => 0,
            Watched::Database { .. } => {
                let coll = doc.get_document("ns").ok()?.get_str("coll").ok()?;
                *self.by_name.get(coll)?
            }
        };
        Some((table, token))
    }

    /// The tables an event is about: its collection's, or every one for database-wide
    /// events.
    fn tables_of(&self, event: &Event) -> Vec<usize> {
        let tables: Vec<usize> = match (&self.watched, &event.collection) {
            (Watched::Collection(_), _) => vec![0],
            (Watched::Database { .. }, Some(c)) => {
                self.by_name.get(c).copied().into_iter().collect()
            }
            (Watched::Database { .. }, None) => (0..self.decoders.len()).collect(),
        };
        tables
            .into_iter()
            .filter(|t| !self.stopped.contains(t))
            .collect()
    }

    async fn run(&mut self) -> warp_core::Result<()> {
        let mut cs = self.open().await?;
        // The commit of a multi-document transaction whose end is not yet seen.
        let mut open_txn: Option<((Bson, i64), Commit)> = None;
        let mut last_beat = tokio::time::Instant::now();
        loop {
            let next = cs.next_if_any().await.context("read change stream");
            let raw = match next {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    // Nothing is sent while idle: notice a reader that went away.
                    if self.tx.is_closed() {
                        return Ok(());
                    }
                    if let Some((_, commit)) = open_txn.take() {
                        if self.send(Vec::new(), Some(commit)).await.is_err() {
                            return Ok(());
                        }
                    } else if last_beat.elapsed() >= self.heartbeat && !self.reassembly.pending() {
                        last_beat = tokio::time::Instant::now();
                        if let Some(t) = cs.resume_token() {
                            let moved = StreamPosition::new(&t)?;
                            if moved.token != self.at.token {
                                self.at = moved;
                            }
                        }
                        // Sent even when the token stands still: an answered getMore
                        // proves the stream alive (the engine reopens a silent feed). An
                        // empty answer means everything up to now was read: the time makes
                        // an idle collection's lag known (zero), as the binlog's heartbeats do.
                        let beat = self.commit(Some(Utc::now()))?;
                        if self.send(Vec::new(), Some(beat)).await.is_err() {
                            return Ok(());
                        }
                    }
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
                Err(e) => return Err(self.lost_or(e)),
            };
            let doc = Document::try_from(raw).map_err(|e| {
                warp_core::Error::source_transient(format!("undecodable change event: {e}"))
            })?;
            // A fragment of a split event: read on until the event is whole.
            let Some(doc) = self
                .reassembly
                .push(doc)
                .map_err(warp_core::Error::source_transient)?
            else {
                continue;
            };
            let event = match Event::parse(&doc) {
                Ok(event) => event,
                Err(reason) => {
                    // Only the event's own collection stops; the stream goes on past it.
                    let Some((table, token)) = self.undecodable_of(&doc) else {
                        return Err(warp_core::Error::source_transient(reason));
                    };
                    if let Some((_, commit)) = open_txn.take() {
                        if self.send(Vec::new(), Some(commit)).await.is_err() {
                            return Ok(());
                        }
                    }
                    let error = warp_core::Error::source_permanent(
                        format!("{}: a change event that cannot be applied: {reason}", self.label),
                        Some("the collection is stopped at this event and the others stream on: report the event's operation type and server version, then resync the collection (cartridge-warp resync)".to_owned()),
                    );
                    if self.stopped.insert(table)
                        && self
                            .tx
                            .send(Ok(FeedItem::TableFailed { table, error }))
                            .await
                            .is_err()
                    {
                        return Ok(());
                    }
                    self.at = StreamPosition {
                        token,
                        after_invalidate: false,
                    };
                    let commit = self.commit(None)?;
                    if self.send(Vec::new(), Some(commit)).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            };
            self.at = StreamPosition {
                token: event.token.clone().into_canonical_extjson(),
                after_invalidate: false,
            };
            // A transaction ends where an event of another (or none) begins.
            if let Some((txn, commit)) = open_txn.take() {
                if event.txn.as_ref() != Some(&txn)
                    && self.send(Vec::new(), Some(commit)).await.is_err()
                {
                    return Ok(());
                }
            }
            if event.op == "invalidate" {
                info!(watching = %self.label, "change stream invalidated (dropped or renamed); following what comes next");
                self.at.after_invalidate = true;
                let commit = self.commit(event.source_ts)?;
                if self.send(Vec::new(), Some(commit)).await.is_err() {
                    return Ok(());
                }
                cs = self.open().await?;
                continue;
            }
            // Told before the event's commit reaches the table as a heartbeat: a table
            // that committed past the rename would never see it again.
            if let Some(table) = replaced_table(&event, &self.by_name) {
                let error = warp_core::Error::Replaced {
                    table: event.renamed_to.clone().unwrap_or_default(),
                    how: format!(
                        "replaced by collection {} renamed onto it (renameCollection with dropTarget, $out or mapReduce)",
                        event.collection.as_deref().unwrap_or("?")
                    ),
                };
                let failed = FeedItem::TableFailed { table, error };
                if self.tx.send(Ok(failed)).await.is_err() {
                    return Ok(());
                }
            }
            let mut changes = Vec::new();
            for table in self.tables_of(&event) {
                let decoded = self.decoders[table].changes(&event).unwrap_or_default();
                changes.extend(
                    decoded
                        .into_iter()
                        .map(|change| TableChange { table, change }),
                );
            }
            let commit = self.commit(event.source_ts)?;
            let sent = match event.txn {
                Some(txn) => {
                    open_txn = Some((txn, commit));
                    self.send(changes, None).await
                }
                None => self.send(changes, Some(commit)).await,
            };
            if sent.is_err() {
                return Ok(());
            }
            last_beat = tokio::time::Instant::now();
        }
    }
}

/// The served table whose contents a rename event replaces: the collection renamed onto
/// (what `renameCollection` with `dropTarget`, `$out` and `mapReduce` end in). Its own
/// stream gets no event for it; only a database-level stream sees the rename.
fn replaced_table(event: &Event, served: &HashMap<String, usize>) -> Option<usize> {
    if event.op != "rename" {
        return None;
    }
    served.get(event.renamed_to.as_deref()?).copied()
}

/// A position for "now": the token a fresh change stream starts at.
pub async fn current(coll: &Collection<Document>) -> crate::error::Result<StreamPosition> {
    let cs = coll.watch().await.context("open change stream")?;
    token_of(coll, cs.resume_token())
}

/// A position for "now", taken in a causally consistent session: reads in that session
/// afterwards see every write at or before it ([`crate::snapshot::read`]).
pub async fn current_in(
    coll: &Collection<Document>,
) -> crate::error::Result<(StreamPosition, ClientSession)> {
    let mut session = coll
        .client()
        .start_session()
        .causal_consistency(true)
        .await
        .context("start session")?;
    let cs = coll
        .watch()
        .session(&mut session)
        .await
        .context("open change stream")?;
    let position = token_of(coll, cs.resume_token())?;
    Ok((position, session))
}

fn token_of(
    coll: &Collection<Document>,
    token: Option<mongodb::change_stream::event::ResumeToken>,
) -> crate::error::Result<StreamPosition> {
    let token = token.ok_or_else(|| MongoError::Unsupported {
        message: format!(
            "{}: the server gave the change stream no resume token",
            coll.name()
        ),
        hint: Some("change streams need MongoDB 4.0.7 or later".into()),
    })?;
    StreamPosition::new(&token).map_err(|e| MongoError::Unsupported {
        message: e.to_string(),
        hint: None,
    })
}

/// Encodes `current` for the engine.
pub async fn current_position(coll: &Collection<Document>) -> warp_core::Result<Position> {
    current(coll).await?.encode()
}

#[cfg(test)]
mod tests {
    use bson::{doc, oid::ObjectId, Timestamp};
    use warp_core::{Column, ColumnType, LandingVersion, SchemaChange, TableId, Value};

    use crate::ids::IdForm;

    use super::*;

    fn decoder() -> Decoder {
        let rules = Rules::default();
        let schema = rules.infer(TableId::new("db", "c"), &[doc! {"_id": 1, "a": 1}]);
        Decoder::new(rules, schema)
    }

    /// An update event as MongoDB 7 sends it with `updateLookup`.
    fn real_update(oid: ObjectId) -> Document {
        doc! {
            "_id": { "_data": "8265A1B2C3000000012B022C0100296E5A1004" },
            "operationType": "update",
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 1 },
            "wallTime": bson::DateTime::from_millis(1_700_000_000_250),
            "ns": { "db": "db", "coll": "c" },
            "documentKey": { "_id": oid },
            "updateDescription": { "updatedFields": { "b": "x" }, "removedFields": ["a"], "truncatedArrays": [] },
            "fullDocument": { "_id": oid, "b": "x", "when": bson::DateTime::from_millis(5) },
        }
    }

    #[test]
    fn real_update_events_become_full_rows_with_unset_fields_null() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let e = Event::parse(&real_update(oid)).unwrap();
        assert_eq!(
            e.source_ts,
            DateTime::from_timestamp_millis(1_700_000_000_250)
        );
        let changes = decoder().changes(&e).unwrap();
        assert_eq!(
            changes[0],
            Change::Schema(SchemaChange::AddColumn(Column::new(
                "b",
                ColumnType::Text { max_len: None }
            )))
        );
        let Change::Row(row) = changes.last().unwrap() else {
            panic!("row expected")
        };
        assert_eq!(row.op, Operation::Update);
        assert_eq!(row.key, vec![Value::Text(oid.to_hex())]);
        let after = row.after.as_ref().unwrap();
        assert_eq!(after.values[1], Value::Null, "$unset field a reads NULL");
        assert_eq!(after.values[2], Value::Text("x".into()));
    }

    /// An ObjectId `_id` and a string `_id` of the same 24 hex digits are two documents
    /// to MongoDB (the emulator refuses to store the pair, so the events are built in the
    /// server's shape). A table created since landing versions were recorded keeps them
    /// apart, the string quoted, and so do the copy's rows; a table created before keeps
    /// its keys' old texts (where the two meet, as docs/mongodb.md says).
    #[test]
    fn an_object_id_and_its_hex_string_stay_two_rows() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let insert = |id: Bson| {
            let mut e = real_update(oid);
            e.insert("operationType", "insert");
            e.remove("updateDescription");
            e.insert("documentKey", doc! { "_id": id.clone() });
            e.insert("fullDocument", doc! { "_id": id, "b": "x" });
            Event::parse(&e).unwrap()
        };
        let keys = |landing| {
            let rules = Rules {
                ids: IdForm::of(landing),
                ..Rules::default()
            };
            let schema = rules.infer(TableId::new("db", "c"), &[doc! {"_id": oid, "b": "x"}]);
            let mut decoder = Decoder::new(rules, schema.clone());
            let layout = Layout::new(rules, &schema);
            [Bson::ObjectId(oid), Bson::String(oid.to_hex())].map(|id| {
                let Some(Change::Row(row)) = decoder.changes(&insert(id.clone())).unwrap().pop()
                else {
                    panic!("row expected")
                };
                let copied = layout.row(&doc! { "_id": id, "b": "x" });
                assert_eq!(
                    row.after.unwrap().values[0],
                    copied.values[0],
                    "stream = copy"
                );
                row.key
            })
        };
        let [object, string] = keys(crate::ids::DISTINCT_IDS);
        assert_eq!(object, vec![Value::Text(oid.to_hex())]);
        assert_eq!(string, vec![Value::Text(format!("\"{}\"", oid.to_hex()))]);
        let [object, string] = keys(LandingVersion::UNRECORDED);
        assert_eq!(object, string, "the plain form is kept for older tables");
    }

    /// The parity matrix's stream half in the server's BSON (the emulator cannot store
    /// most of these types): an insert event carrying every BSON type at its extremes
    /// decodes to the row the copy reads from the same document, and each special value
    /// keeps what makes it itself (a timestamp's increment, code's scope, NaN, the far
    /// ends of decimal128 and of dates).
    #[test]
    fn every_bson_type_streams_as_it_is_copied() {
        use bson::spec::BinarySubtype;
        use bson::{Binary, Decimal128, JavaScriptCodeWithScope, Regex};
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let dec = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().unwrap());
        let bin = |subtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype, bytes });
        let doc = doc! {
            "_id": 1_i64,
            "nan": f64::NAN, "ninf": f64::NEG_INFINITY, "nzero": -0.0_f64,
            "dec_max": dec("9.999999999999999999999999999999999E+6144"),
            "dec_min": dec("1E-6143"), "dec_nan": dec("NaN"), "dec_scale": dec("1.000"),
            "date_10000": bson::DateTime::from_millis(253_402_300_800_000),
            "date_1": bson::DateTime::from_millis(-62_135_596_800_000),
            "ts": Timestamp { time: 1_700_000_000, increment: 7 },
            "min": Bson::MinKey, "max": Bson::MaxKey,
            "dbref": { "$ref": "other", "$id": oid },
            "re": Regex { pattern: "^a".into(), options: "i".into() },
            "scoped": JavaScriptCodeWithScope { code: "f(x)".into(), scope: doc! { "x": 1 } },
            "sym": Bson::Symbol("s".into()),
            "bin_user": bin(BinarySubtype::UserDefined(0x80), vec![9, 9]),
            "i64_min": i64::MIN,
        };
        let rules = Rules::default();
        let schema = rules.infer(TableId::new("db", "c"), std::slice::from_ref(&doc));
        let copied = Layout::new(rules, &schema).row(&doc);
        let event = Event::parse(&doc! {
            "_id": { "_data": "8265A1B2C3000000012B022C0100296E5A1004" },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 1 },
            "wallTime": bson::DateTime::from_millis(1_700_000_000_250),
            "ns": { "db": "db", "coll": "c" },
            "documentKey": { "_id": 1_i64 },
            "fullDocument": doc.clone(),
        })
        .unwrap();
        let mut d = Decoder::new(rules, schema.clone());
        let changes = d.changes(&event).unwrap();
        let Some(Change::Row(row)) = changes.last() else {
            panic!("{changes:?}")
        };
        let streamed = row.after.as_ref().unwrap();
        let at = |name: &str| schema.column_index(name).unwrap();
        for (i, c) in schema.columns.iter().enumerate() {
            let (a, b) = (&copied.values[i], &streamed.values[i]);
            let same = match (a, b) {
                (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
                _ => a == b,
            };
            assert!(same, "{}: copied {a:?}, streamed {b:?}", c.name);
        }
        let v = |name: &str| streamed.values[at(name)].clone();
        assert!(matches!(v("nan"), Value::Float64(f) if f.is_nan()));
        assert!(matches!(v("nzero"), Value::Float64(f) if f == 0.0 && f.is_sign_negative()));
        assert!(matches!(v("dec_max"), Value::Decimal(d) if d.as_str().len() == 6145));
        assert!(matches!(v("dec_min"), Value::Decimal(d) if d.as_str().ends_with("0001")));
        assert_eq!(
            v("ts"),
            Value::Json(serde_json::json!({"$timestamp": {"t": 1_700_000_000, "i": 7}}))
        );
        assert_eq!(
            v("scoped"),
            Value::Json(serde_json::json!({"$code": "f(x)", "$scope": {"x": 1}}))
        );
        assert!(
            matches!(v("date_10000"), Value::TimestampTz(t) if t.to_rfc3339().starts_with("+10000"))
        );
        assert_eq!(v("i64_min"), Value::Int(i64::MIN));
    }

    #[test]
    fn a_row_event_without_a_document_key_is_an_error_not_a_skip() {
        let event = doc! {
            "_id": { "_data": "82" }, "operationType": "delete",
            "ns": { "db": "shop", "coll": "orders" },
        };
        let e = Event::parse(&event).unwrap_err();
        assert!(e.contains("documentKey"), "{e}");
        let create = doc! {
            "_id": { "_data": "83" }, "operationType": "create",
            "ns": { "db": "shop", "coll": "orders" },
        };
        assert!(Event::parse(&create).is_ok(), "DDL events carry no key");
    }

    /// `$out` onto `orders` as a MongoDB 7.0 database stream reports it: the temporary
    /// collection renamed onto the target.
    #[test]
    fn a_rename_onto_a_served_collection_replaces_it() {
        let served: HashMap<String, usize> =
            [("orders".to_owned(), 0), ("users".to_owned(), 1)].into();
        let rename = |from: &str, to: &str| {
            Event::parse(&doc! {
                "_id": { "_data": "8266A1B2C3000000012B0229296E04" },
                "operationType": "rename",
                "clusterTime": bson::Timestamp { time: 1_700_000_000, increment: 1 },
                "wallTime": bson::DateTime::from_millis(1_700_000_000_000),
                "ns": { "db": "shop", "coll": from },
                "to": { "db": "shop", "coll": to },
            })
            .unwrap()
        };
        let out = rename("tmp.agg_out.65a1b2c3d4e5f60718293a4b", "orders");
        assert_eq!(replaced_table(&out, &served), Some(0));
        assert_eq!(replaced_table(&rename("users", "archive"), &served), None);
        assert_eq!(replaced_table(&rename("orders", "users"), &served), Some(1));
        let mut insert = out.clone();
        insert.op = "insert".into();
        assert_eq!(replaced_table(&insert, &served), None);
    }

    /// The expanded events a 6.0+ server sends with `showExpandedEvents` (its shapes from
    /// the change-events reference): DDL on a served collection carries no row, changes
    /// nothing and is no error.
    #[test]
    fn expanded_ddl_events_carry_no_rows() {
        let mut d = decoder();
        let ns = doc! { "db": "db", "coll": "c" };
        let uuid = bson::Binary {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: vec![7; 16],
        };
        let events = [
            doc! { "operationType": "create", "collectionUUID": uuid.clone(),
            "operationDescription": { "idIndex": { "v": 2, "key": { "_id": 1 }, "name": "_id_" } } },
            doc! { "operationType": "createIndexes", "collectionUUID": uuid.clone(),
            "operationDescription": { "indexes": [{ "v": 2, "key": { "sku": 1 }, "name": "sku_1" }] } },
            doc! { "operationType": "dropIndexes", "collectionUUID": uuid.clone(),
            "operationDescription": { "indexes": [{ "v": 2, "key": { "sku": 1 }, "name": "sku_1" }] } },
            doc! { "operationType": "modify", "collectionUUID": uuid.clone(),
            "operationDescription": { "index": { "name": "sku_1", "hidden": true } },
            "stateBeforeChange": { "collectionOptions": { "uuid": uuid.clone() } } },
            doc! { "operationType": "shardCollection", "collectionUUID": uuid,
            "operationDescription": { "shardKey": { "sku": 1 }, "unique": false } },
        ];
        for (i, mut event) in events.into_iter().enumerate() {
            event.insert("_id", doc! { "_data": format!("82{i:02}") });
            event.insert(
                "clusterTime",
                Timestamp {
                    time: 1_700_000_000,
                    increment: 1,
                },
            );
            event.insert("wallTime", bson::DateTime::from_millis(1_700_000_000_000));
            event.insert("ns", ns.clone());
            let op = event.get_str("operationType").unwrap().to_owned();
            let e = Event::parse(&event).unwrap_or_else(|e| panic!("{op}: {e}"));
            assert_eq!(d.changes(&e), Some(Vec::new()), "{op}");
        }
    }

    #[test]
    fn deletes_drops_invalidates_and_transactions() {
        let mut d = decoder();
        let delete = doc! {
            "_id": { "_data": "82" }, "operationType": "delete",
            "clusterTime": Timestamp { time: 1, increment: 1 },
            "documentKey": { "_id": 7 },
            "lsid": { "id": 1 }, "txnNumber": 3_i64,
        };
        let e = Event::parse(&delete).unwrap();
        assert_eq!(e.txn.as_ref().map(|t| t.1), Some(3));
        let changes = d.changes(&e).unwrap();
        assert!(
            matches!(&changes[..], [Change::Row(r)] if r.op == Operation::Delete && r.key == vec![Value::Text("7".into())])
        );
        let drop = doc! { "_id": { "_data": "83" }, "operationType": "drop" };
        assert_eq!(
            d.changes(&Event::parse(&drop).unwrap()).unwrap(),
            vec![Change::Truncate]
        );
        let inv = doc! { "_id": { "_data": "84" }, "operationType": "invalidate" };
        assert!(d.changes(&Event::parse(&inv).unwrap()).is_none());
        // An update whose document was deleted before the lookup yields nothing, and is
        // counted.
        let gone = doc! { "_id": { "_data": "85" }, "operationType": "update", "documentKey": { "_id": 7 }, "fullDocument": null };
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut d = d.labelled("shop");
        let changes = metrics::with_local_recorder(&recorder, || {
            d.changes(&Event::parse(&gone).unwrap()).unwrap()
        });
        assert!(changes.is_empty());
        let scrape = handle.render();
        assert!(
            scrape.contains(
                "cartridge_warp_updates_without_document_total{schema=\"shop\",table=\"c\"} 1"
            ),
            "{scrape}"
        );
        assert!(Event::parse(&doc! { "operationType": "insert" }).is_err());
    }
}
