//! The shared change feed: a source with one log for the whole database (binlog, change
//! stream) is read once per pipeline, from the earliest position any running table needs,
//! and each table's changes are routed to that table's writer.
//!
//! To a table worker a subscription looks exactly like a per-table stream: committed
//! transactions strictly after its own position, heartbeats while idle. A table that is
//! behind the feed when it joins makes the feed reopen from its position (the others skip
//! what they already have); a table that is ahead waits until the feed reaches it.
//!
//! Backpressure is per table: each subscriber has a bounded queue. A writer that stops
//! taking (a lock on its landing table) holds the feed for at most [`FeedTiming::stall`];
//! then it is detached, the feed goes on for the others, and the table rejoins from its
//! own position once its writer takes again. Nothing is buffered without bound and
//! nothing is skipped: a detached table resumes from the last transaction it received.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::event::{Change, Commit, FeedItem, StreamFragment, TableChange};
use crate::position::Position;
use crate::read_settings::FeedTable;
use crate::source::Source;

/// How long the feed waits, and how often it tells idle tables where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FeedTiming {
    /// A subscriber whose queue stays full this long is detached (it rejoins later).
    pub stall: Duration,
    /// Joins arriving within this window share one (re)open of the feed.
    pub settle: Duration,
    /// Tables without changes hear of the feed's position at most this often.
    pub heartbeat: Duration,
    /// Fragments queued per subscriber.
    pub depth: usize,
    /// A feed silent this long — no change, no heartbeat — is presumed dead (a half-open
    /// connection) and reopened (`performance.read_timeout`).
    pub silence: Duration,
}

impl Default for FeedTiming {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(5),
            settle: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            depth: 16,
            silence: Duration::from_secs(60),
        }
    }
}

type Delivery = mpsc::Sender<Result<StreamFragment>>;

/// A table asking for its changes after `from`.
struct Join {
    table: FeedTable,
    from: Position,
    tx: Delivery,
}

/// The pipeline's handle on its feed; the feed task starts with the first subscription
/// and ends when the handle is dropped.
pub(crate) struct FeedHub {
    source: Arc<dyn Source>,
    timing: FeedTiming,
    control: Mutex<Option<mpsc::UnboundedSender<Join>>>,
}

impl FeedHub {
    pub fn new(source: Arc<dyn Source>, timing: FeedTiming) -> Self {
        Self {
            source,
            timing,
            control: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::UnboundedSender<Join> {
        let mut control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        control
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = Router::new(Arc::clone(&self.source), self.timing);
                tokio::spawn(task.run(rx));
                tx
            })
            .clone()
    }

    /// `table`'s committed transactions strictly after `from`, as a per-table stream.
    pub fn subscribe(
        &self,
        table: FeedTable,
        from: Position,
    ) -> BoxStream<'static, Result<StreamFragment>> {
        let sub = Subscription {
            control: self.sender(),
            source: Arc::clone(&self.source),
            depth: self.timing.depth,
            table,
            delivered: from,
            in_txn: false,
            rx: None,
        };
        stream::unfold(Some(sub), |state| async move {
            let mut sub = state?;
            match sub.next().await {
                Ok(fragment) => Some((Ok(fragment), Some(sub))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// The subscriber's side: joins, and rejoins after a detach.
struct Subscription {
    control: mpsc::UnboundedSender<Join>,
    source: Arc<dyn Source>,
    depth: usize,
    /// The table's shape as of the last change received (a rejoin reads with it).
    table: FeedTable,
    /// The last commit received: a rejoin starts after it.
    delivered: Position,
    in_txn: bool,
    rx: Option<mpsc::Receiver<Result<StreamFragment>>>,
}

impl Subscription {
    async fn next(&mut self) -> Result<StreamFragment> {
        loop {
            let rx = match &mut self.rx {
                Some(rx) => rx,
                None => {
                    let (tx, rx) = mpsc::channel(self.depth.max(1));
                    let join = Join {
                        table: self.table.clone(),
                        from: self.delivered.clone(),
                        tx,
                    };
                    if self.control.send(join).is_err() {
                        return Err(Error::Cancelled);
                    }
                    self.rx.insert(rx)
                }
            };
            match rx.recv().await {
                Some(Ok(fragment)) => {
                    for change in &fragment.changes {
                        if let Change::Schema(sc) = change {
                            // The worker's projection reports a change it cannot apply.
                            let _ = self.table.schema.apply(sc);
                        }
                    }
                    match &fragment.commit {
                        Some(c) => {
                            // Heartbeats may race a rejoin; never move backwards.
                            if self.source.compare_positions(&c.position, &self.delivered)?
                                == Ordering::Greater
                            {
                                self.delivered = c.position.clone();
                            }
                            self.in_txn = false;
                        }
                        None => self.in_txn = true,
                    }
                    return Ok(fragment);
                }
                Some(Err(e)) => return Err(e),
                // Detached for stalling: rejoin from the last commit received. Inside a
                // transaction the writer holds part of it, so its attempt must restart.
                None if self.in_txn => {
                    return Err(Error::source_transient(format!(
                        "{}: detached from the shared change feed inside a large transaction (its writes stalled); resuming from the checkpoint",
                        self.table.schema.id
                    )))
                }
                None => {
                    debug!(table = %self.table.schema.id, "rejoining the shared change feed");
                    self.rx = None;
                }
            }
        }
    }
}

/// One table the feed serves.
struct Member {
    table: FeedTable,
    tx: Delivery,
    /// Every change of the table up to here was delivered (or is in its checkpoint).
    served: Position,
    /// The feed is at or past `served`: transactions from now on are new to the table.
    caught_up: bool,
    /// Received part of the transaction in progress.
    in_txn: bool,
}

/// An open source feed and which member each of its table indexes is.
struct OpenFeed {
    items: BoxStream<'static, Result<FeedItem>>,
    members: Vec<u64>,
    start: Position,
    /// The last commit read: the feed is between transactions there.
    at: Position,
    in_txn: bool,
    yielded: bool,
    /// When the feed last yielded anything.
    heard: Instant,
}

/// The feed task: opens the source feed for the members and routes what it yields.
struct Router {
    source: Arc<dyn Source>,
    timing: FeedTiming,
    members: BTreeMap<u64, Member>,
    next_id: u64,
    joining: Vec<Join>,
    reopen_at: Option<Instant>,
    feed: Option<OpenFeed>,
    /// The smallest `served` of members not caught up (checked on each commit).
    next_catch_up: Option<Position>,
    last_beat: Instant,
}

impl Router {
    fn new(source: Arc<dyn Source>, timing: FeedTiming) -> Self {
        Self {
            source,
            timing,
            members: BTreeMap::new(),
            next_id: 0,
            joining: Vec::new(),
            reopen_at: None,
            feed: None,
            next_catch_up: None,
            last_beat: Instant::now(),
        }
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Join>) {
        loop {
            let between = self.feed.as_ref().is_none_or(|f| !f.in_txn);
            let reopen_at = self.reopen_at;
            tokio::select! {
                biased;
                join = control.recv() => match join {
                    Some(join) => {
                        self.joining.push(join);
                        self.reopen_at
                            .get_or_insert_with(|| Instant::now() + self.timing.settle);
                    }
                    None => return,
                },
                () = sleep_until(reopen_at), if reopen_at.is_some() && between => {
                    self.reopen_at = None;
                    self.reopen().await;
                }
                item = next_item(&mut self.feed, self.timing.silence) => self.route(item).await,
            }
        }
    }

    fn compare(&self, a: &Position, b: &Position) -> Result<Ordering> {
        self.source.compare_positions(a, b)
    }

    /// Opens the feed again for the members plus the joiners, from the earliest position
    /// any of them needs.
    async fn reopen(&mut self) {
        let at = self.feed.take().map(|f| f.at);
        self.members.retain(|_, m| !m.tx.is_closed());
        for m in self.members.values_mut() {
            if let (true, Some(at)) = (m.caught_up, &at) {
                m.served = at.clone();
            }
        }
        for join in std::mem::take(&mut self.joining) {
            if join.tx.is_closed() {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.members.insert(
                id,
                Member {
                    table: join.table,
                    tx: join.tx,
                    served: join.from,
                    caught_up: false,
                    in_txn: false,
                },
            );
        }
        if self.members.is_empty() {
            return;
        }
        let start = match self.earliest() {
            Ok(p) => p,
            Err(e) => return self.fail_all(e).await,
        };
        for m in self.members.values_mut() {
            m.caught_up =
                self.source.compare_positions(&m.served, &start).ok() == Some(Ordering::Equal);
            m.in_txn = false;
        }
        self.next_catch_up = self.earliest_behind();
        let ids: Vec<u64> = self.members.keys().copied().collect();
        let tables: Vec<FeedTable> = self.members.values().map(|m| m.table.clone()).collect();
        info!(tables = tables.len(), from = %start, "opening the shared change feed");
        match self.source.open_feed(&tables, &start).await {
            Ok(items) => {
                self.feed = Some(OpenFeed {
                    items,
                    members: ids,
                    start: start.clone(),
                    at: start,
                    in_txn: false,
                    yielded: false,
                    heard: Instant::now(),
                });
            }
            Err(e) => self.fail_all(e).await,
        }
    }

    fn earliest(&self) -> Result<Position> {
        let mut min: Option<&Position> = None;
        for m in self.members.values() {
            if min.is_none_or(|p| self.compare(&m.served, p).is_ok_and(Ordering::is_lt)) {
                min = Some(&m.served);
            }
        }
        min.cloned()
            .ok_or_else(|| Error::source_transient("shared change feed with no tables"))
    }

    fn earliest_behind(&self) -> Option<Position> {
        let mut min: Option<&Position> = None;
        for m in self.members.values().filter(|m| !m.caught_up) {
            if min.is_none_or(|p| self.compare(&m.served, p).is_ok_and(Ordering::is_lt)) {
                min = Some(&m.served);
            }
        }
        min.cloned()
    }

    async fn route(&mut self, item: Option<Result<FeedItem>>) {
        match item {
            Some(Ok(FeedItem::Fragment { changes, commit })) => {
                if let Some(f) = &mut self.feed {
                    f.yielded = true;
                }
                self.fragment(changes, commit).await;
            }
            Some(Ok(FeedItem::TableFailed { table, error })) => {
                if let Some(id) = self.member_id(table) {
                    if let Some(m) = self.members.remove(&id) {
                        warn!(table = %m.table.schema.id, error = %error, "table stopped by the shared change feed");
                        let _ = m.tx.send_timeout(Err(error), self.timing.stall).await;
                    }
                }
            }
            Some(Err(e)) => self.feed_error(e).await,
            None => {
                self.feed_error(Error::source_transient("change feed ended unexpectedly"))
                    .await;
            }
        }
    }

    fn member_id(&self, index: usize) -> Option<u64> {
        self.feed.as_ref()?.members.get(index).copied()
    }

    async fn fragment(&mut self, changes: Vec<TableChange>, commit: Option<Commit>) {
        let mut per_member: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
        for TableChange { table, change } in changes {
            if let Some(id) = self.member_id(table) {
                per_member.entry(id).or_default().push(change);
            }
        }
        // A member inside this transaction hears its commit even with no changes left.
        if commit.is_some() {
            for (id, m) in &self.members {
                if m.in_txn {
                    per_member.entry(*id).or_default();
                }
            }
        }
        let mut delivered = BTreeSet::new();
        for (id, changes) in per_member {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            if !m.caught_up {
                continue;
            }
            for change in &changes {
                if let Change::Schema(sc) = change {
                    let _ = m.table.schema.apply(sc);
                }
            }
            m.in_txn = commit.is_none();
            let fragment = StreamFragment {
                changes,
                commit: commit.clone(),
            };
            delivered.insert(id);
            match m.tx.send_timeout(Ok(fragment), self.timing.stall).await {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    info!(table = %m.table.schema.id, stall_s = self.timing.stall.as_secs_f64(), "table's writes stalled: detached from the shared change feed; it rejoins from its own position");
                    self.members.remove(&id);
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                    self.members.remove(&id);
                }
            }
        }
        let Some(commit) = commit else {
            if let Some(f) = &mut self.feed {
                f.in_txn = true;
            }
            return;
        };
        if let Some(f) = &mut self.feed {
            f.in_txn = false;
            f.at = commit.position.clone();
        }
        self.catch_up(&commit.position);
        if self.last_beat.elapsed() >= self.timing.heartbeat {
            self.last_beat = Instant::now();
            self.beat(&commit, &delivered);
        }
        if self.members.is_empty() && self.joining.is_empty() {
            // No table left to serve: release the source's connection.
            self.feed = None;
        }
    }

    /// Members whose position the feed reached take transactions from now on.
    fn catch_up(&mut self, at: &Position) {
        let Some(next) = &self.next_catch_up else {
            return;
        };
        if self.compare(at, next).is_ok_and(Ordering::is_lt) {
            return;
        }
        let source = Arc::clone(&self.source);
        for m in self.members.values_mut().filter(|m| !m.caught_up) {
            m.caught_up = source
                .compare_positions(at, &m.served)
                .is_ok_and(Ordering::is_ge);
        }
        self.next_catch_up = self.earliest_behind();
    }

    /// Tells idle members the feed's position, without waiting on anyone: a heartbeat a
    /// full queue cannot take is dropped (a later one carries a later position).
    fn beat(&mut self, commit: &Commit, skip: &BTreeSet<u64>) {
        let mut closed = Vec::new();
        for (id, m) in &self.members {
            if !m.caught_up || m.in_txn || skip.contains(id) {
                continue;
            }
            let beat = StreamFragment::heartbeat(commit.clone());
            if let Err(mpsc::error::TrySendError::Closed(_)) = m.tx.try_send(Ok(beat)) {
                closed.push(*id);
            }
        }
        for id in closed {
            self.members.remove(&id);
        }
    }

    /// The feed failed. A position lost before anything was read concerns only the tables
    /// that start there; anything else ends every member's stream (each retries).
    async fn feed_error(&mut self, e: Error) {
        let feed = self.feed.take();
        if let (
            Error::PositionLost {
                position, detail, ..
            },
            Some(f),
        ) = (&e, &feed)
        {
            if !f.yielded {
                let lost: Vec<u64> = self
                    .members
                    .iter()
                    .filter(|(_, m)| self.compare(&m.served, &f.start).is_ok_and(Ordering::is_eq))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    if let Some(m) = self.members.remove(&id) {
                        let e = Error::PositionLost {
                            table: m.table.schema.id.to_string(),
                            position: position.clone(),
                            detail: detail.clone(),
                        };
                        let _ = m.tx.send_timeout(Err(e), self.timing.stall).await;
                    }
                }
                // The others go on from their own positions.
                if let Some(at) = feed.map(|f| f.at) {
                    for m in self.members.values_mut().filter(|m| m.caught_up) {
                        m.served = at.clone();
                    }
                }
                self.reopen_at = Some(Instant::now());
                return;
            }
        }
        self.fail_all(e).await;
    }

    async fn fail_all(&mut self, e: Error) {
        self.feed = None;
        for (_, m) in std::mem::take(&mut self.members) {
            let _ = m.tx.send_timeout(Err(e.clone()), self.timing.stall).await;
        }
    }
}

/// The feed's next item; a transient error when it stays silent for `silence` (sources
/// send heartbeats every second while idle, so silence means a dead connection).
async fn next_item(feed: &mut Option<OpenFeed>, silence: Duration) -> Option<Result<FeedItem>> {
    let Some(f) = feed else {
        return std::future::pending().await;
    };
    // The deadline is absolute: this future is remade on every turn of the router.
    match tokio::time::timeout_at(f.heard + silence, f.items.next()).await {
        Ok(item) => {
            f.heard = Instant::now();
            item
        }
        Err(_) => {
            f.heard = Instant::now();
            Some(Err(Error::source_transient(format!(
                "the change feed sent nothing, not even a heartbeat, for {}s (read_timeout): its connection is presumed dead and is reopened",
                silence.as_secs_f64()
            ))))
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A feed of one table as a per-table stream (sources use it to offer
/// [`Source::stream`] on top of their feed).
pub fn single_table(
    feed: BoxStream<'static, Result<FeedItem>>,
) -> BoxStream<'static, Result<StreamFragment>> {
    feed.map(|item| match item? {
        FeedItem::Fragment { changes, commit } => Ok(StreamFragment {
            changes: changes.into_iter().map(|c| c.change).collect(),
            commit,
        }),
        FeedItem::TableFailed { error, .. } => Err(error),
    })
    .boxed()
}
