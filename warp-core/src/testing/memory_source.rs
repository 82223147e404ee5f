//! An in-memory source: tables of rows plus a change log whose positions are sequence
//! numbers. Every write is one source transaction.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::sync::Notify;

use super::faults::{FailPoint, Faults};
use crate::engine::OrdKey;
use crate::error::{Error, Result};
use crate::event::{Change, ChangeEvent, Commit, FeedItem, Operation, StreamFragment, TableChange};
use crate::position::Position;
use crate::read_settings::{FeedTable, ReadSettings, TableReads};
use crate::schema::{Column, ColumnType, LandingVersion, SchemaChange, TableId, TableSchema};
use crate::source::{ChangeStrategy, ChunkPage, ChunkRead, KeyRange, SnapshotPlan, Source};
use crate::value::{Key, Row, Value};

type ChunkHook = Arc<dyn Fn(&MemorySource) + Send + Sync>;

struct Table {
    schema: TableSchema,
    key_columns: Vec<usize>,
    rows: BTreeMap<OrdKey, Row>,
}

/// A log entry as the shared feed reads it: sequence, table index, changes, replaced.
type FeedEntry = (u64, usize, Vec<Change>, bool);

struct LogEntry {
    seq: u64,
    table: String,
    changes: Vec<Change>,
    /// The table's contents were replaced without row events ([`MemorySource::replace_contents`]).
    replaced: bool,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<String, Table>,
    log: Vec<LogEntry>,
    seq: u64,
    chunk_reads: Vec<(String, KeyRange)>,
    /// The read settings each call was given, by table (the last one wins).
    reads: BTreeMap<String, ReadSettings>,
    changes_per_key: BTreeMap<(String, OrdKey), u64>,
    /// Like a document source: a chunk read with a narrower shape than the data's asks
    /// the engine to reshape instead of returning rows.
    infer_shape: bool,
    /// Like a polling source: a stream delivers each changed row as it is when read
    /// (nothing for a row gone by then).
    polls_current_state: bool,
    /// Log entries the per-table streams have handed out.
    entries_read: u64,
}

/// Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MemorySource {
    database: String,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    faults: Faults,
    chunk_hook: Arc<Mutex<Option<ChunkHook>>>,
    heartbeat: Duration,
    /// Serve changes through one shared feed (like a binlog) instead of per table.
    feed: bool,
    /// Feeds opened so far (one per open of the shared feed).
    feeds_opened: Arc<std::sync::atomic::AtomicUsize>,
    /// Feeds opened before this count never answer again (a half-open connection).
    feeds_hung: Arc<std::sync::atomic::AtomicUsize>,
    /// The landing version new tables record ([`Source::landing_version`]).
    landing: LandingVersion,
    /// Its stream replays DDL in log order ([`Source::follows_schema_in_log`]).
    schema_in_log: bool,
    /// A resync re-copies while streaming ([`Source::recopies_while_streaming`]).
    recopies_streaming: bool,
}

impl MemorySource {
    pub fn new(database: &str) -> Self {
        Self {
            database: database.to_owned(),
            state: Arc::default(),
            notify: Arc::default(),
            faults: Faults::default(),
            chunk_hook: Arc::default(),
            heartbeat: Duration::from_millis(20),
            feed: false,
            feeds_opened: Arc::default(),
            landing: LandingVersion::UNRECORDED,
            feeds_hung: Arc::default(),
            schema_in_log: false,
            recopies_streaming: false,
        }
    }

    /// The same source, delivering changes through one shared feed for all tables.
    pub fn with_feed(mut self) -> Self {
        self.feed = true;
        self
    }

    /// The same source, streaming each table on its own (a polling source).
    pub fn without_feed(mut self) -> Self {
        self.feed = false;
        self
    }

    /// Every feed open now goes silent for good, as over a connection whose peer vanished
    /// without a FIN: no change, no heartbeat, no error. Feeds opened later work.
    pub fn hang_open_feeds(&self) {
        let opened = self.feeds_opened();
        self.feeds_hung
            .store(opened, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many times the shared feed was opened.
    pub fn feeds_opened(&self) -> usize {
        self.feeds_opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A source with one table `(id bigint key, name text, qty bigint)` of `rows` rows.
    pub fn with_sample_table(database: &str, table: &str, rows: i64) -> Self {
        let s = Self::new(database);
        s.create_table(table);
        for id in 1..=rows {
            s.insert(table, sample_row(id, 0));
        }
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Runs `hook` right after each chunk's rows are taken (before they reach the engine):
    /// writes made there happen "during the snapshot".
    pub fn on_chunk_read(&self, hook: impl Fn(&MemorySource) + Send + Sync + 'static) {
        *self
            .chunk_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Creates `(id bigint key, name text, qty bigint)`.
    pub fn create_table(&self, name: &str) {
        let schema = TableSchema {
            id: TableId::new(&self.database, name),
            columns: vec![
                Column::new("id", ColumnType::Int64).not_null(),
                Column::new("name", ColumnType::Text { max_len: None }),
                Column::new("qty", ColumnType::Int64),
            ],
            primary_key: vec!["id".into()],
        };
        self.create_table_with(schema);
    }

    pub fn create_table_with(&self, schema: TableSchema) {
        let key_columns = schema.key_indexes().unwrap_or_default();
        self.lock().tables.insert(
            schema.id.name.clone(),
            Table {
                schema,
                key_columns,
                rows: BTreeMap::new(),
            },
        );
    }

    fn log(&self, state: &mut State, table: &str, changes: Vec<Change>) {
        state.seq += 1;
        let seq = state.seq;
        state.log.push(LogEntry {
            seq,
            table: table.to_owned(),
            changes,
            replaced: false,
        });
        self.notify.notify_waiters();
    }

    /// Replaces `table`'s rows wholesale with no row events, as MongoDB's `$out` or a
    /// rename onto a collection does; the shared feed reports the table replaced.
    pub fn replace_contents(&self, table: &str, rows: Vec<Row>) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        let key_columns = t.key_columns.clone();
        t.rows = rows
            .into_iter()
            .map(|r| (OrdKey(r.key(&key_columns)), r))
            .collect();
        st.changes_per_key.retain(|(name, _), _| name != table);
        st.seq += 1;
        let seq = st.seq;
        st.log.push(LogEntry {
            seq,
            table: table.to_owned(),
            changes: Vec::new(),
            replaced: true,
        });
        self.notify.notify_waiters();
    }

    fn write(&self, table: &str, op: Operation, row: Option<Row>, key: Option<Key>) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        let key = key.unwrap_or_else(|| row.as_ref().expect("row").key(&t.key_columns));
        let before = t.rows.get(&OrdKey(key.clone())).cloned();
        match &row {
            Some(r) => t.rows.insert(OrdKey(key.clone()), r.clone()),
            None => t.rows.remove(&OrdKey(key.clone())),
        };
        let op = match (op, &before) {
            (Operation::Insert, Some(_)) => Operation::Update,
            (op, _) => op,
        };
        let event = ChangeEvent {
            op,
            key: key.clone(),
            before,
            after: row,
            source_ts: Some(Utc::now()),
        };
        *st.changes_per_key
            .entry((table.to_owned(), OrdKey(key)))
            .or_default() += 1;
        self.log(&mut st, table, vec![Change::Row(event)]);
    }

    pub fn insert(&self, table: &str, row: Row) {
        self.write(table, Operation::Insert, Some(row), None);
    }

    pub fn update(&self, table: &str, row: Row) {
        self.write(table, Operation::Update, Some(row), None);
    }

    pub fn delete(&self, table: &str, key: Key) {
        self.write(table, Operation::Delete, None, Some(key));
    }

    /// Removes a row without a change-log entry, as a polling source sees a delete:
    /// only delete detection can find it.
    pub fn delete_unlogged(&self, table: &str, key: Key) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        t.rows.remove(&OrdKey(key));
    }

    /// Several row writes as one source transaction.
    pub fn transaction(&self, table: &str, rows: Vec<Row>) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        let mut changes = Vec::new();
        let mut keys = Vec::new();
        for row in rows {
            let key = row.key(&t.key_columns);
            let before = t.rows.insert(OrdKey(key.clone()), row.clone());
            let op = if before.is_some() {
                Operation::Update
            } else {
                Operation::Insert
            };
            changes.push(Change::Row(ChangeEvent {
                op,
                key: key.clone(),
                before,
                after: Some(row),
                source_ts: Some(Utc::now()),
            }));
            keys.push(key);
        }
        for key in keys {
            *st.changes_per_key
                .entry((table.to_owned(), OrdKey(key)))
                .or_default() += 1;
        }
        self.log(&mut st, table, changes);
    }

    /// Behave like a document source whose shape comes from the data: a chunk read
    /// with fewer columns than the table has now answers [`ChunkPage::Reshape`].
    pub fn infer_shape(&self) {
        self.lock().infer_shape = true;
    }

    /// Behave like a polling source: a per-table stream reads each changed row as it is
    /// at the moment the stream reads it, and cannot see a row that is gone.
    pub fn poll_current_state(&self) {
        self.lock().polls_current_state = true;
    }

    /// Log entries the per-table streams have read so far.
    pub fn entries_read(&self) -> u64 {
        self.lock().entries_read
    }

    /// Adds a nullable column; existing rows read `default` for it.
    pub fn add_column(&self, table: &str, column: Column) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        let fill = column.default.clone().unwrap_or(Value::Null);
        t.schema.columns.push(column.clone());
        for row in t.rows.values_mut() {
            row.values.push(fill.clone());
        }
        self.log(
            &mut st,
            table,
            vec![Change::Schema(SchemaChange::AddColumn(column))],
        );
    }

    /// Current rows, in key order.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        self.lock()
            .tables
            .get(table)
            .map(|t| t.rows.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Source writes per key so far (`_cartridge_version` must never exceed it).
    pub fn changes_for(&self, table: &str, key: &Key) -> u64 {
        self.lock()
            .changes_per_key
            .get(&(table.to_owned(), OrdKey(key.clone())))
            .copied()
            .unwrap_or(0)
    }

    pub fn head(&self) -> Position {
        seq_position(self.lock().seq)
    }

    /// A source whose new tables record `landing` (like one that changed how it lands
    /// values).
    #[must_use]
    pub fn with_landing_version(mut self, landing: LandingVersion) -> Self {
        self.landing = landing;
        self
    }

    /// A source whose stream replays its DDL in log order, like a binlog: a restart
    /// resumes from the shape recorded at the checkpoint.
    #[must_use]
    pub fn with_schema_in_log(mut self) -> Self {
        self.schema_in_log = true;
        self
    }

    /// A source whose resyncs re-copy while the table streams (its chunk positions are
    /// exact points of its log, like a binlog's).
    #[must_use]
    pub fn with_recopy_while_streaming(mut self) -> Self {
        self.recopies_streaming = true;
        self
    }

    /// Renames a column; the log carries the rename at this position.
    pub fn rename_column(&self, table: &str, from: &str, to: &str) {
        let mut st = self.lock();
        let t = st.tables.get_mut(table).expect("table exists");
        let change = SchemaChange::RenameColumn {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        t.schema.apply(&change).expect("the column exists");
        self.log(&mut st, table, vec![Change::Schema(change)]);
    }

    /// Chunks read so far, in order: (table, range).
    pub fn chunk_reads(&self) -> Vec<(String, KeyRange)> {
        self.lock().chunk_reads.clone()
    }

    /// The read settings the engine last passed for `table` (snapshot, stream or feed).
    pub fn read_settings_seen(&self, table: &str) -> Option<ReadSettings> {
        self.lock().reads.get(table).cloned()
    }

    fn saw(&self, table: &TableSchema, read: &ReadSettings) {
        self.lock()
            .reads
            .insert(table.id.name.clone(), read.clone());
    }

    fn table_schema(&self, table: &str) -> Result<TableSchema> {
        self.lock()
            .tables
            .get(table)
            .map(|t| t.schema.clone())
            .ok_or_else(|| Error::source_permanent(format!("no table {table}"), None))
    }

    /// The first log entry after `after` touching one of `tables`, and the log's head.
    fn next_entry_of(&self, tables: &[String], after: u64) -> (Option<FeedEntry>, u64) {
        let st = self.lock();
        let start = st.log.partition_point(|e| e.seq <= after);
        let found = st.log[start..].iter().find_map(|e| {
            let i = tables.iter().position(|t| *t == e.table)?;
            Some((e.seq, i, e.changes.clone(), e.replaced))
        });
        (found, st.seq)
    }

    fn next_entry(&self, table: &str, after: u64) -> (Option<(u64, Vec<Change>)>, u64) {
        let mut st = self.lock();
        let start = st.log.partition_point(|e| e.seq <= after);
        let found = st.log[start..]
            .iter()
            .find(|e| e.table == table)
            .map(|e| (e.seq, e.changes.clone()));
        let Some((seq, mut changes)) = found else {
            return (None, st.seq);
        };
        st.entries_read += 1;
        if st.polls_current_state {
            let rows = &st.tables[table].rows;
            changes.retain_mut(|c| match c {
                Change::Row(e) => match rows.get(&OrdKey(e.key.clone())) {
                    Some(now) => {
                        e.op = Operation::Update;
                        e.after = Some(now.clone());
                        true
                    }
                    None => false,
                },
                _ => true,
            });
        }
        (Some((seq, changes)), st.seq)
    }
}

/// `(id, "name-{id}-{generation}", id * 10 + generation)`.
pub fn sample_row(id: i64, generation: i64) -> Row {
    Row::new(vec![
        Value::Int(id),
        Value::Text(format!("name-{id}-{generation}")),
        Value::Int(id * 10 + generation),
    ])
}

fn seq_position(seq: u64) -> Position {
    Position::from_json(serde_json::json!({ "seq": seq }))
}

fn seq_of(p: &Position) -> Result<u64> {
    p.as_json()
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Position(format!("not a memory position: {p}")))
}

#[async_trait]
impl Source for MemorySource {
    async fn check(&self) -> Result<crate::ConnectionSecurity> {
        Ok(crate::ConnectionSecurity::plain())
    }

    async fn discover(&self, _reads: &dyn TableReads) -> Result<Vec<TableSchema>> {
        self.faults.check(FailPoint::Discover, "*", false)?;
        Ok(self
            .lock()
            .tables
            .values()
            .map(|t| t.schema.clone())
            .collect())
    }

    async fn plan_snapshot(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk_rows: usize,
    ) -> Result<SnapshotPlan> {
        self.saw(table, read);
        self.faults
            .check(FailPoint::PlanSnapshot, &table.id.name, false)?;
        let st = self.lock();
        let t = st
            .tables
            .get(&table.id.name)
            .ok_or_else(|| Error::source_permanent("no table", None))?;
        let keys: Vec<&OrdKey> = t.rows.keys().collect();
        let bounds: Vec<Key> = keys
            .iter()
            .step_by(chunk_rows.max(1))
            .skip(1)
            .map(|k| k.0.clone())
            .collect();
        let chunks = KeyRange::split_at(bounds);
        Ok(SnapshotPlan {
            start: seq_position(st.seq),
            chunks,
        })
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk: &KeyRange,
    ) -> Result<ChunkRead> {
        self.saw(table, read);
        let name = table.id.name.clone();
        self.faults.check(FailPoint::ReadChunk, &name, false)?;
        let (position, rows) = {
            let mut st = self.lock();
            st.chunk_reads.push((name.clone(), chunk.clone()));
            let t = st
                .tables
                .get(&name)
                .ok_or_else(|| Error::source_permanent("no table", None))?;
            if st.infer_shape && t.schema.columns.len() > table.columns.len() {
                let missing = t.schema.columns[table.columns.len()..]
                    .iter()
                    .map(|c| SchemaChange::AddColumn(c.clone()))
                    .collect();
                let page = Ok(ChunkPage::Reshape(missing));
                return Ok(ChunkRead {
                    position: seq_position(st.seq),
                    rows: stream::iter([page]).boxed(),
                });
            }
            let rows: Vec<Row> = t
                .rows
                .iter()
                .filter(|(k, _)| chunk.contains(&k.0))
                .map(|(_, r)| r.clone())
                .collect();
            (seq_position(st.seq), rows)
        };
        let hook = self
            .chunk_hook
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(self);
        }
        let faults = self.faults.clone();
        let pages: Vec<Vec<Row>> = rows.chunks(64).map(<[Row]>::to_vec).collect();
        let rows = stream::iter(pages.into_iter().enumerate())
            .map(move |(i, page)| {
                if i > 0 {
                    faults.check(FailPoint::ChunkRows, &name, false)?;
                }
                Ok(ChunkPage::Rows(page))
            })
            .boxed();
        Ok(ChunkRead { position, rows })
    }

    async fn live_keys(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> Result<Option<Vec<Key>>> {
        self.saw(table, read);
        Ok(self
            .lock()
            .tables
            .get(&table.id.name)
            .map(|t| t.rows.keys().map(|k| k.0.clone()).collect()))
    }

    async fn estimate_rows(&self, table: &TableSchema) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .tables
            .get(&table.id.name)
            .map(|t| t.rows.len() as u64))
    }

    async fn current_position(&self, table: &TableSchema, read: &ReadSettings) -> Result<Position> {
        self.saw(table, read);
        Ok(self.head())
    }

    async fn stream(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        from: &Position,
    ) -> Result<BoxStream<'static, Result<StreamFragment>>> {
        self.saw(table, read);
        let name = table.id.name.clone();
        self.faults.check(FailPoint::OpenStream, &name, false)?;
        self.table_schema(&name)?;
        let after = seq_of(from)?;
        let this = self.clone();
        let s = stream::unfold((this, name, after), |(this, name, after)| async move {
            loop {
                if let Err(e) = this.faults.check(FailPoint::StreamNext, &name, false) {
                    return Some((Err(e), (this, name, after)));
                }
                let notify = Arc::clone(&this.notify);
                let notified = notify.notified();
                let (entry, head) = this.next_entry(&name, after);
                if let Some((seq, changes)) = entry {
                    drop(notified);
                    let commit = Commit {
                        position: seq_position(seq),
                        source_ts: Some(Utc::now()),
                    };
                    return Some((
                        Ok(StreamFragment::transaction(changes, commit)),
                        (this, name, seq),
                    ));
                }
                // Nothing for this table up to `head`: wait for news or send a heartbeat.
                let timed_out = tokio::time::timeout(this.heartbeat, notified)
                    .await
                    .is_err();
                if timed_out && head > after {
                    let commit = Commit {
                        position: seq_position(head),
                        source_ts: Some(Utc::now()),
                    };
                    return Some((Ok(StreamFragment::heartbeat(commit)), (this, name, head)));
                }
            }
        });
        Ok(s.boxed())
    }

    fn change_strategy(&self) -> ChangeStrategy {
        if self.feed {
            ChangeStrategy::Feed
        } else {
            ChangeStrategy::Poller
        }
    }

    async fn open_feed(
        &self,
        tables: &[FeedTable],
        from: &Position,
    ) -> Result<BoxStream<'static, Result<FeedItem>>> {
        for t in tables {
            self.saw(&t.schema, &t.read);
        }
        let names: Vec<String> = tables.iter().map(|t| t.schema.id.name.clone()).collect();
        for name in &names {
            self.faults.check(FailPoint::OpenStream, name, false)?;
        }
        let number = self
            .feeds_opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let after = seq_of(from)?;
        let feed = MemoryFeed {
            number,
            source: self.clone(),
            names,
            after,
            queued: std::collections::VecDeque::new(),
        };
        let s = stream::unfold(feed, |mut feed| async move {
            let item = feed.next().await;
            Some((item, feed))
        });
        Ok(s.boxed())
    }

    fn landing_version(&self) -> LandingVersion {
        self.landing
    }

    fn follows_schema_in_log(&self) -> bool {
        self.schema_in_log
    }

    fn recopies_while_streaming(&self) -> bool {
        self.recopies_streaming
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> Result<Ordering> {
        Ok(seq_of(a)?.cmp(&seq_of(b)?))
    }
}

/// Changes per fragment of the shared feed (larger transactions come in parts).
const FEED_FRAGMENT: usize = 100;

struct MemoryFeed {
    /// Which open of the feed this is (0 for the first).
    number: usize,
    source: MemorySource,
    names: Vec<String>,
    after: u64,
    queued: std::collections::VecDeque<FeedItem>,
}

impl MemoryFeed {
    async fn next(&mut self) -> Result<FeedItem> {
        if self.number
            < self
                .source
                .feeds_hung
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return std::future::pending().await;
        }
        loop {
            if let Some(item) = self.queued.pop_front() {
                return Ok(item);
            }
            for name in &self.names {
                self.source
                    .faults
                    .check(FailPoint::StreamNext, name, false)?;
            }
            let notify = Arc::clone(&self.source.notify);
            let notified = notify.notified();
            let (entry, head) = self.source.next_entry_of(&self.names, self.after);
            if let Some((seq, table, changes, replaced)) = entry {
                drop(notified);
                if replaced {
                    self.after = seq;
                    return Ok(FeedItem::TableFailed {
                        table,
                        error: crate::Error::Replaced {
                            table: self.names[table].clone(),
                            how: "contents replaced".into(),
                        },
                    });
                }
                let mut parts: Vec<Vec<TableChange>> = Vec::new();
                for change in changes {
                    if parts.last().is_none_or(|p| p.len() >= FEED_FRAGMENT) {
                        parts.push(Vec::new());
                    }
                    if let Some(p) = parts.last_mut() {
                        p.push(TableChange { table, change });
                    }
                }
                let last = parts.len().saturating_sub(1);
                for (i, changes) in parts.into_iter().enumerate() {
                    let commit = (i == last).then(|| Commit {
                        position: seq_position(seq),
                        source_ts: Some(Utc::now()),
                    });
                    self.queued
                        .push_back(FeedItem::Fragment { changes, commit });
                }
                self.after = seq;
                continue;
            }
            let timed_out = tokio::time::timeout(self.source.heartbeat, notified)
                .await
                .is_err();
            // Like a binlog server: a heartbeat at the head whenever idle.
            if timed_out && head >= self.after {
                self.after = head;
                let commit = Some(Commit {
                    position: seq_position(head),
                    source_ts: Some(Utc::now()),
                });
                return Ok(FeedItem::Fragment {
                    changes: Vec::new(),
                    commit,
                });
            }
        }
    }
}
