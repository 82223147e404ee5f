//! Streaming phase: a reader task feeds a bounded queue (backpressure); the writer
//! coalesces into batches bounded by rows, bytes and time, and commits each batch with
//! its checkpoint. A source transaction is never split across two commits.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::batch::{split_key_change, Batch};
use super::read_ahead::ReadAhead;
use super::recopy::{Recopy, Step, TakesResyncs};
use super::table::TableWorker;
use crate::control::TableState;
use crate::error::{Error, Result};
use crate::event::{Change, ChangeEvent, Commit, Operation, StreamFragment};
use crate::metrics::{
    BATCH_DURATION_SECONDS, BATCH_ROWS, EVENTS_TOTAL, LAST_CHECKPOINT_TIMESTAMP_SECONDS,
    QUEUE_DEPTH, REPLICATION_LAG_SECONDS, SCHEMA_CHANGES_TOTAL,
};
use crate::position::Position;
use crate::sink::{CheckpointUpdate, FencingToken, SinkTransaction};
use crate::source::{ChangeStrategy, KeyRange};
use crate::value::cmp_keys;

/// Writer-side state of one streaming session.
struct Writer {
    token: FencingToken,
    batch: Batch,
    open: Option<Box<dyn SinkTransaction>>,
    /// End of the last complete source transaction in hand.
    pending: Option<Commit>,
    /// Per-operation counts of changes applied but not yet committed.
    applied: [u64; 4],
    schema_changes: Vec<&'static str>,
    handover: Vec<(KeyRange, Position)>,
    deadline: Option<tokio::time::Instant>,
    last_checkpoint: tokio::time::Instant,
    /// The last committed position.
    position: Position,
    /// The source shape the checkpoint holds, as far as this attempt knows.
    recorded_shape: Option<crate::TableSchema>,
    /// A re-copy in progress between batches.
    recopy: Option<Recopy>,
    /// When its last step ended, and how long that step took.
    last_copy_step: tokio::time::Instant,
    last_copy_took: Duration,
    /// What the stream did since.
    copy_gap: CopyGap,
}

/// The stream since a copy's last step.
#[derive(Default)]
struct CopyGap {
    /// The log's end when the step ended.
    head: Option<Position>,
    /// A transaction at or past `head` was read.
    caught_up: bool,
    /// Fragments read.
    fragments: u64,
}

/// How often a copy inside the stream takes a step while the stream has changes queued.
const COPY_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    /// When a copy's next step is due if nothing else happens first: at once for an idle
    /// table, else once the stream had as long as the last step took.
    fn next_copy_step(&self) -> tokio::time::Instant {
        if self.copy_gap.fragments == 0 {
            self.last_copy_step
        } else {
            self.last_copy_step + self.last_copy_took.min(COPY_EVERY)
        }
    }
}

fn op_index(op: Operation) -> usize {
    match op {
        Operation::Read => 0,
        Operation::Insert => 1,
        Operation::Update => 2,
        Operation::Delete => 3,
    }
}

impl TableWorker {
    pub(super) async fn stream(
        &mut self,
        token: FencingToken,
        position: Position,
        handover: Vec<(KeyRange, Position)>,
        recopy: Option<crate::sink::CopyInStream>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut rx = self.open_upstream(&position).await?;
        self.ctx.status.update(&self.key, |s| {
            s.state = TableState::Streaming;
            s.position = Some(position.to_string());
        });
        info!(%position, "streaming");

        let key_columns = self.key_columns()?;
        let mut w = Writer {
            token,
            batch: Batch::new(key_columns),
            open: None,
            pending: None,
            applied: [0; 4],
            schema_changes: Vec::new(),
            handover,
            deadline: None,
            last_checkpoint: tokio::time::Instant::now(),
            position,
            recorded_shape: self.recorded_shape.clone(),
            recopy: recopy.map(Recopy::resume),
            last_copy_step: tokio::time::Instant::now(),
            last_copy_took: Duration::ZERO,
            copy_gap: CopyGap::default(),
        };
        let detect_every = self.settings.delete_detection_interval;
        let mut next_detection = detect_every.map(|d| tokio::time::Instant::now() + d);
        let idle_interval = self.ctx.settings.idle_checkpoint_interval;
        let mut held: Vec<Change> = Vec::new();
        let mut in_txn = false;
        let max_wait = self.ctx.settings.batch_max_wait;
        let (max_rows, max_bytes) = (
            self.settings.batch_size.max(1),
            self.ctx.settings.batch_max_bytes,
        );
        let control = Arc::clone(&self.control);
        let _takes = TakesResyncs::mark(&control, self.ctx.source.recopies_while_streaming());

        loop {
            // Between a copy's steps the stream catches up: the next step waits until it
            // has read past the log's end as of the last step, or nothing arrived since
            // (an idle table), or its queue is empty and it had as long as the last step
            // took (the queue holds a few transactions only: empty alone does not mean
            // caught up) — at most `COPY_EVERY` under a load it cannot catch up with.
            // So a copy holds the stream back by one step at a time.
            let since = w.last_copy_step.elapsed();
            let copy_due = since >= COPY_EVERY
                || w.copy_gap.caught_up
                || (rx.len() == 0 && (w.copy_gap.fragments == 0 || since >= w.last_copy_took));
            if !in_txn && copy_due {
                self.recopy_between_batches(&mut w).await?;
            }
            let deadline = w.deadline;
            let item = tokio::select! {
                biased;
                () = shutdown.cancelled(), if !in_txn => {
                    if w.pending.is_some() {
                        self.flush(&mut w).await?;
                    }
                    return Ok(());
                }
                () = sleep_until(deadline), if deadline.is_some() && !in_txn => {
                    let idle = w.batch.is_empty() && w.open.is_none();
                    if !idle || w.last_checkpoint.elapsed() >= idle_interval {
                        self.flush(&mut w).await?;
                    } else {
                        // Heartbeats only: advance the checkpoint, but not on every one.
                        w.deadline = Some(w.last_checkpoint + idle_interval);
                    }
                    continue;
                }
                () = sleep_until(next_detection), if next_detection.is_some() && !in_txn => {
                    if self.detect_deletes(&mut w).await? {
                        // What the queue holds was read before the source scan and may
                        // carry a row deleted since: applied now, it would bring the row
                        // back. Read again from the deletes' position instead.
                        rx = self.open_upstream(&w.position).await?;
                    }
                    next_detection = detect_every.map(|d| tokio::time::Instant::now() + d);
                    continue;
                }
                () = control.requested.notified(), if w.recopy.is_none() && !in_txn => continue,
                item = rx.next() => item,
                // A re-copy goes on between fragments, and without them while idle, once
                // its next step is due.
                () = tokio::time::sleep_until(w.next_copy_step()), if w.recopy.is_some() && !in_txn => continue,
            };
            metrics::gauge!(QUEUE_DEPTH, "schema" => self.key.schema.clone(), "table" => self.key.table.clone())
                .set(rx.len() as f64);
            let fragment = match item {
                Some(Ok(f)) => f,
                Some(Err(e)) => return self.stop_stream(&mut w, in_txn, e).await,
                None => {
                    let e = Error::source_transient("change stream ended unexpectedly");
                    return self.stop_stream(&mut w, in_txn, e).await;
                }
            };
            let StreamFragment { changes, commit } = fragment;
            self.note_copy_gap(&mut w.copy_gap, commit.as_ref());
            for change in changes {
                if let Some(c) = self
                    .projection
                    .change(change)
                    .map_err(|m| self.table_error(m))?
                {
                    held.push(c);
                }
            }
            match &commit {
                None => {
                    in_txn = true;
                    // While handover filtering is active the whole transaction is held, since
                    // the filter needs its commit position, and so is the rest of one with a
                    // chained foreign-key action (it waits for that position); otherwise it
                    // flows into the batch.
                    if w.handover.is_empty() && !held.iter().any(is_chained) {
                        self.push(&mut w, std::mem::take(&mut held))?;
                        if w.batch.len() >= max_rows || w.batch.bytes() >= max_bytes {
                            self.spill(&mut w).await?;
                        }
                    }
                }
                Some(c) => {
                    in_txn = false;
                    let changes = std::mem::take(&mut held);
                    let mut changes = self.filter_handover(changes, &c.position, &w.handover)?;
                    if changes.iter().any(is_chained) {
                        self.resolve_chains(&mut changes, &c.position, shutdown)
                            .await?;
                    }
                    self.push(&mut w, changes)?;
                    let pending = w.batch.len() as u64 + w.applied.iter().sum::<u64>();
                    self.ctx.status.update(&self.key, |s| {
                        s.pending_changes = pending;
                        if c.source_ts.is_some() {
                            s.last_source_ts = c.source_ts;
                        }
                    });
                    w.pending = commit;
                    // Changes are written `max_wait` after they arrive at the latest, even
                    // when heartbeats had put the deadline off to the idle checkpoint.
                    let due = tokio::time::Instant::now() + max_wait;
                    let work = !w.batch.is_empty() || w.open.is_some();
                    if w.deadline.is_none_or(|d| work && d > due) {
                        w.deadline = Some(due);
                    }
                    if w.batch.len() >= max_rows || w.batch.bytes() >= max_bytes {
                        self.flush(&mut w).await?;
                    }
                }
            }
        }
    }

    /// Takes a resync request, and copies the next chunk of a re-copy in progress once
    /// the changes in hand are committed (the chunk's position is then at or after
    /// theirs).
    async fn recopy_between_batches(&self, w: &mut Writer) -> Result<()> {
        if w.recopy.is_none() {
            w.recopy = self.take_resync().await?;
        }
        if w.recopy.is_none() {
            return Ok(());
        }
        if w.pending.is_some() {
            self.flush(w).await?;
        }
        let Writer {
            recopy: Some(r),
            token,
            position,
            handover,
            ..
        } = w
        else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        if let Step::Done = self.recopy_step(r, *token, position, handover).await? {
            w.recopy = None;
        }
        w.last_copy_step = tokio::time::Instant::now();
        w.last_copy_took = started.elapsed();
        if w.recopy.is_none() {
            return Ok(());
        }
        // The log's end now: the stream has caught up once it reads past it. Unknown,
        // the other rules decide.
        let head = (self.ctx.source)
            .current_position(self.projection.source_schema(), &self.read)
            .await
            .ok();
        w.copy_gap = CopyGap {
            head,
            ..CopyGap::default()
        };
        w.last_checkpoint = tokio::time::Instant::now();
        Ok(())
    }

    /// Counts a fragment read between a copy's steps, and whether it reaches the log's end
    /// as of the last step.
    fn note_copy_gap(&self, gap: &mut CopyGap, commit: Option<&Commit>) {
        gap.fragments += 1;
        if let (Some(head), Some(c)) = (&gap.head, commit) {
            let reached = self.ctx.source.compare_positions(&c.position, head);
            gap.caught_up |= reached.is_ok_and(|o| o != Ordering::Less);
        }
    }

    /// The table's changes from `position`, read ahead into a bounded queue.
    async fn open_upstream(&self, position: &Position) -> Result<ReadAhead<StreamFragment>> {
        let upstream = match self.ctx.source.change_strategy() {
            ChangeStrategy::Feed => self.ctx.feed.subscribe(
                crate::FeedTable {
                    schema: self.projection.source_schema().clone(),
                    read: self.read.clone(),
                },
                position.clone(),
            ),
            ChangeStrategy::Poller => {
                self.ctx
                    .source
                    .stream(self.projection.source_schema(), &self.read, position)
                    .await?
            }
        };
        // A read is a fragment carrying changes: position-only fragments (heartbeats, other
        // tables' commits) would make the pass count depend on unrelated traffic.
        let upstream = upstream
            .inspect(|f| {
                if f.as_ref().is_ok_and(|f| !f.changes.is_empty()) {
                    crate::failpoint::hit(crate::failpoint::Point::AfterRead);
                }
            })
            .boxed();
        // A feed subscription is already a queue of `queue_capacity` filled by the feed's
        // own task: a second one in front of it would only double what a stalled table
        // holds in memory.
        let depth = match self.ctx.source.change_strategy() {
            ChangeStrategy::Feed => 1,
            ChangeStrategy::Poller => self.ctx.settings.queue_capacity,
        };
        Ok(ReadAhead::spawn(upstream, depth))
    }

    /// Delete detection for sources that cannot see deletes (polling): keys live at the
    /// destination but gone from the source become deletes. The destination is read
    /// first, after committing what is in hand, so it never holds a row the source scan
    /// could not have seen. Returns whether rows were deleted (the caller then discards
    /// what was read before the scan).
    async fn detect_deletes(&self, w: &mut Writer) -> Result<bool> {
        if w.pending.is_some() {
            self.flush(w).await?;
        }
        let live = self
            .ctx
            .sink
            .live_keys(&self.target, &self.projection.destination_schema())
            .await?;
        let Some(mut present) = self
            .ctx
            .source
            .live_keys(self.projection.source_schema(), &self.read)
            .await?
        else {
            return Ok(false);
        };
        present.sort_by(|a, b| cmp_keys(a, b));
        let now = Utc::now();
        let mut gone = 0u64;
        for key in live {
            if present.binary_search_by(|p| cmp_keys(p, &key)).is_err() {
                gone += 1;
                w.batch.push(Change::Row(ChangeEvent {
                    op: Operation::Delete,
                    key,
                    before: None,
                    after: None,
                    source_ts: Some(now),
                }));
            }
        }
        if gone == 0 {
            return Ok(false);
        }
        info!(
            deleted = gone,
            "delete detection: rows gone from the source"
        );
        w.pending = Some(Commit {
            position: w.position.clone(),
            source_ts: Some(now),
        });
        self.flush(w).await?;
        Ok(true)
    }

    /// On a source error: commit what is complete, then report the error.
    async fn stop_stream(&self, w: &mut Writer, in_txn: bool, e: Error) -> Result<()> {
        if !in_txn && w.pending.is_some() {
            self.flush(w).await?;
        }
        Err(e)
    }

    fn table_error(&self, message: String) -> Error {
        Error::Table {
            table: self.key.to_string(),
            message,
            hint: None,
        }
    }

    fn key_columns(&self) -> Result<Vec<usize>> {
        self.projection
            .destination_schema()
            .key_indexes()
            .map_err(|e| self.table_error(e.to_string()))
    }

    fn push(&self, w: &mut Writer, changes: Vec<Change>) -> Result<()> {
        for change in changes {
            if let Change::Schema(sc) = &change {
                w.schema_changes.push(sc.kind());
                w.batch.push(change);
                // Key columns may be renamed; positions are stable, but re-derive anyway.
                w.batch.set_key_columns(self.key_columns()?);
                continue;
            }
            w.batch.push(change);
        }
        Ok(())
    }

    /// Drops changes already contained in chunks that were read after `position`.
    fn filter_handover(
        &self,
        changes: Vec<Change>,
        position: &Position,
        handover: &[(KeyRange, Position)],
    ) -> Result<Vec<Change>> {
        let source = &self.ctx.source;
        let mut covering = Vec::new();
        for (range, chunk_pos) in handover {
            if source.compare_positions(position, chunk_pos)? != Ordering::Greater {
                covering.push(range);
            }
        }
        if covering.is_empty() {
            return Ok(changes);
        }
        let key_columns = self.key_columns()?;
        let id = &self.projection.source_schema().id;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Row(e) => {
                    for part in split_key_change(e, &key_columns) {
                        if covering
                            .iter()
                            .any(|r| source.chunk_contains(id, r, &part.key))
                        {
                            debug!("change already in a later snapshot chunk; skipped");
                        } else {
                            out.push(Change::Row(part));
                        }
                    }
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Writes the batch into the open destination transaction without committing (a
    /// large source transaction in progress).
    async fn spill(&self, w: &mut Writer) -> Result<()> {
        let changes = w.batch.take();
        count(&mut w.applied, &changes);
        let tx = match w.open.as_mut() {
            Some(tx) => tx,
            None => w
                .open
                .insert(self.ctx.sink.begin(&self.target, w.token).await?),
        };
        tx.apply(changes).await
    }

    /// Commits the batch in hand; with `correlation_id_enabled`, every log line of the
    /// batch carries one id.
    async fn flush(&self, w: &mut Writer) -> Result<()> {
        if !self.ctx.settings.correlation_ids {
            return self.flush_batch(w).await;
        }
        let span = tracing::info_span!("batch", correlation_id = %correlation_id());
        tracing::Instrument::instrument(self.flush_batch(w), span).await
    }

    async fn flush_batch(&self, w: &mut Writer) -> Result<()> {
        let Some(commit) = w.pending.take() else {
            return Ok(());
        };
        let started = Instant::now();
        let changes = w.batch.take();
        count(&mut w.applied, &changes);
        let mut tx = match w.open.take() {
            Some(tx) => tx,
            None => self.ctx.sink.begin(&self.target, w.token).await?,
        };
        if !changes.is_empty() {
            crate::failpoint::hit(crate::failpoint::Point::BeforeWrite);
            tx.apply(changes).await?;
        }
        crate::failpoint::hit(crate::failpoint::Point::AfterWrite);
        let mut remaining = Vec::with_capacity(w.handover.len());
        for (range, p) in w.handover.drain(..) {
            if self.ctx.source.compare_positions(&p, &commit.position)? == Ordering::Greater {
                remaining.push((range, p));
            }
        }
        w.handover = remaining;
        // The shape after the batch's last change is the shape at its position; only a
        // schema change moves it from the one recorded.
        let stale = w.recorded_shape.is_none() || !w.schema_changes.is_empty();
        let shape = stale.then(|| self.projection.source_schema().clone());
        let update = CheckpointUpdate::Streaming {
            position: commit.position.clone(),
            source_ts: commit.source_ts,
            handover: w.handover.clone(),
            shape: shape.clone(),
            recopy: w.recopy.as_ref().map(Recopy::recorded),
        };
        self.ctx.commit(tx, &self.key, w.token, update).await?;
        if shape.is_some() {
            w.recorded_shape = shape;
        }

        let applied = std::mem::take(&mut w.applied);
        let total: u64 = applied.iter().sum();
        self.publish_batch(
            &applied,
            std::mem::take(&mut w.schema_changes),
            started.elapsed(),
        );
        let now = Utc::now();
        let bytes = self.ctx.source.bytes_processed(&self.key.table);
        self.ctx.status.update(&self.key, |s| {
            s.commits += 1;
            s.source_bytes = bytes.or(s.source_bytes);
            s.events_applied += total;
            s.pending_changes = 0;
            s.position = Some(commit.position.to_string());
            s.last_commit_at = Some(now);
            s.attempts = 0;
            if s.state != TableState::Streaming {
                s.state = TableState::Streaming;
                s.last_error = None;
                s.hint = None;
            }
        });
        debug!(changes = total, position = %commit.position, "batch committed");
        w.position = commit.position;
        w.deadline = None;
        w.last_checkpoint = tokio::time::Instant::now();
        Ok(())
    }

    fn publish_batch(&self, applied: &[u64; 4], schema_changes: Vec<&'static str>, took: Duration) {
        let (schema, table) = (self.key.schema.clone(), self.key.table.clone());
        let ops = [
            Operation::Read,
            Operation::Insert,
            Operation::Update,
            Operation::Delete,
        ];
        for op in ops {
            let n = applied[op_index(op)];
            if n > 0 {
                metrics::counter!(EVENTS_TOTAL, "schema" => schema.clone(), "table" => table.clone(), "operation" => op.metric_label())
                    .increment(n);
            }
        }
        for kind in schema_changes {
            metrics::counter!(SCHEMA_CHANGES_TOTAL, "schema" => schema.clone(), "table" => table.clone(), "change_type" => kind)
                .increment(1);
        }
        let total: u64 = applied.iter().sum();
        metrics::histogram!(BATCH_ROWS, "schema" => schema.clone(), "table" => table.clone())
            .record(total as f64);
        metrics::histogram!(BATCH_DURATION_SECONDS, "schema" => schema.clone(), "table" => table.clone())
            .record(took.as_secs_f64());
        let now = Utc::now();
        metrics::gauge!(LAST_CHECKPOINT_TIMESTAMP_SECONDS, "schema" => schema.clone(), "table" => table.clone())
            .set(now.timestamp_millis() as f64 / 1000.0);
        if let Some(lag) = self
            .ctx
            .status
            .get(&self.key)
            .and_then(|s| s.lag_seconds(now))
        {
            metrics::gauge!(REPLICATION_LAG_SECONDS, "schema" => schema, "table" => table).set(lag);
        }
    }
}

/// Unique within the process and across restarts (time-seeded).
fn correlation_id() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{seq:x}")
}

/// A foreign-key action that reaches the table through others.
fn is_chained(change: &Change) -> bool {
    matches!(change, Change::Cascade(c) if c.is_chained())
}

fn count(applied: &mut [u64; 4], changes: &[Change]) {
    for c in changes {
        if let Change::Row(e) = c {
            applied[op_index(e.op)] += 1;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
