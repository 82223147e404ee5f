//! A resync while the table streams: its chunks are copied again one at a time between
//! the stream's batches, each handed over like a snapshot's late chunk, and the rows the
//! source no longer has are swept at the end (docs/guarantees.md, "Re-copies while
//! streaming"). The stream never stops: its lag grows by one chunk's copy at most.
//!
//! Why no change is lost or applied twice: a chunk is read after the stream's batch in
//! hand is committed, so its position `Pc` is at or after the stream's `Ps`. Its rows
//! (the source's state at `Pc`) replace the landing rows of its key range, and the
//! stream then skips the changes at or before `Pc` to keys of that range (the hand-over
//! filter, recorded in the same commit as the rows): each key ends with every change
//! after `Pc` applied once over the state at `Pc`. Every streaming checkpoint records the
//! chunks still to copy, so a restart resumes the stream with its hand-over and the
//! re-copy from its next chunk.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;

use tracing::info;

use super::read_ahead::ReadAhead;
use super::table::TableWorker;
use crate::error::{Error, Result};
use crate::metrics::SNAPSHOT_ROWS_TOTAL;
use crate::position::Position;
use crate::sink::{ChunkScope, CopyInStream, FencingToken};
use crate::source::{ChunkPage, KeyRange};

/// How often an owner with its copy window open looks whether the other replicas'
/// chunks are copied.
const WINDOW_POLL: Duration = Duration::from_millis(50);

/// How long an owner keeps its copy window open for claims at least: other replicas
/// look for chunks every 200 ms.
const MIN_WINDOW: Duration = Duration::from_millis(300);

/// A chunk copied inside the stream is a snapshot chunk's size divided by this (unless
/// `snapshot_chunk_size` is set), and at least `MIN_IN_STREAM_ROWS` rows.
const IN_STREAM_DIVISOR: usize = 5;
const MIN_IN_STREAM_ROWS: usize = 1_000;

/// Pages of a chunk read ahead while the previous one is written.
const READ_AHEAD_PAGES: usize = 2;

/// The chunks of a copy inside the stream still to copy (recorded with every streaming
/// checkpoint, so it goes on after a restart).
pub(super) struct Recopy {
    chunks: VecDeque<KeyRange>,
    sweep: bool,
    total: usize,
    rows: u64,
    /// Shared between replicas: the chunks were published as work items in this
    /// attempt (after reconciling with what the store recorded before a restart).
    published: bool,
    /// Tables whose landing table this replica's sink knows (for the shared copy path).
    ready: super::helper::Ready,
}

impl Recopy {
    /// A copy recorded at a checkpoint, from its next chunk.
    pub(super) fn resume(recorded: CopyInStream) -> Self {
        info!(
            chunks = recorded.chunks.len(),
            "copying the chunks the checkpoint records while the table streams"
        );
        Self::new(recorded)
    }

    fn new(recorded: CopyInStream) -> Self {
        Self {
            total: recorded.chunks.len(),
            chunks: recorded.chunks.into(),
            sweep: recorded.sweep,
            rows: 0,
            published: false,
            ready: super::helper::Ready::default(),
        }
    }

    /// What the next checkpoint records of it.
    pub(super) fn recorded(&self) -> CopyInStream {
        CopyInStream {
            chunks: self.chunks.iter().cloned().collect(),
            sweep: self.sweep,
        }
    }
}

/// What one step of a re-copy did.
pub(super) enum Step {
    /// A chunk was copied; more remain, or the sweep.
    Copied,
    /// The last step (the sweep) is done.
    Done,
}

/// Marks the worker as taking resync requests in its stream while it lives.
pub(super) struct TakesResyncs<'a>(&'a super::TableControl);

impl<'a> TakesResyncs<'a> {
    pub(super) fn mark(control: &'a super::TableControl, takes: bool) -> Self {
        control.streaming_recopy.store(takes, Ordering::SeqCst);
        Self(control)
    }
}

impl Drop for TakesResyncs<'_> {
    fn drop(&mut self) {
        self.0.streaming_recopy.store(false, Ordering::SeqCst);
    }
}

impl TableWorker {
    /// A resync request, taken in the stream: the re-copy to run between its batches.
    pub(super) async fn take_resync(&self) -> Result<Option<Recopy>> {
        if !self.control.streaming_recopy.load(Ordering::SeqCst)
            || !self.control.resync.swap(false, Ordering::SeqCst)
        {
            return Ok(None);
        }
        Ok(Some(self.plan_recopy().await?))
    }

    /// Whether the table's first copy runs inside its stream (`stream_during_copy`, where
    /// the source's chunk positions are points of its log).
    pub(super) fn copies_in_stream(&self) -> bool {
        let wanted = self.settings.stream_during_copy;
        let able = self.ctx.source.recopies_while_streaming();
        if wanted && !able {
            tracing::warn!("stream_during_copy: this source's chunk positions are not points of its change log; the table is copied before it streams");
        }
        wanted && able
    }

    /// A first copy inside the stream: the stream starts at the log's current end, and
    /// the copy's chunks are recorded with that first checkpoint (a crash before the
    /// first chunk still copies them all). Nothing is swept at the end unless the landing
    /// table already held rows.
    pub(super) async fn begin_copy_in_stream(
        &self,
        token: FencingToken,
        emptied: Vec<crate::event::Change>,
    ) -> Result<(Position, CopyInStream)> {
        let position = (self.ctx.source)
            .current_position(self.projection.source_schema(), &self.read)
            .await?;
        let sweep = emptied.is_empty() && self.holds_rows().await?;
        let copy = CopyInStream {
            chunks: self.plan_chunks().await?,
            sweep,
        };
        let mut tx = self.ctx.sink.begin(&self.target, token).await?;
        tx.apply(emptied).await?;
        self.commit_streaming(tx, token, &position, Vec::new(), Some(copy.clone()))
            .await?;
        info!(chunks = copy.chunks.len(), %position, "copy planned inside the stream: the table streams from here while its chunks are copied");
        Ok((position, copy))
    }

    /// Plans a re-copy of the table as the source holds it now.
    pub(super) async fn plan_recopy(&self) -> Result<Recopy> {
        let chunks = self.plan_chunks().await?;
        info!(
            chunks = chunks.len(),
            "resync requested: the table is copied again while it streams"
        );
        Ok(Recopy::new(CopyInStream {
            chunks,
            sweep: true,
        }))
    }

    /// The table's chunks as the source holds it now, shown as the progress to come.
    async fn plan_chunks(&self) -> Result<Vec<KeyRange>> {
        let table = self.projection.source_schema();
        // The stream waits while a step copies: unless configured, steps copy a fifth of
        // a snapshot's chunk, so a step takes a fraction of a second.
        let chunk_rows = match self.settings.snapshot_chunk_size {
            Some(rows) => rows,
            None => (self.chunk_rows(table).await / IN_STREAM_DIVISOR).max(MIN_IN_STREAM_ROWS),
        };
        let plan = (self.ctx.source)
            .plan_snapshot(table, &self.read, chunk_rows)
            .await?;
        self.ctx.status.update(&self.key, |s| {
            s.chunks_total = plan.chunks.len();
            s.chunks_done = 0;
        });
        Ok(plan.chunks)
    }

    /// Copies the next chunk of `recopy` (or, once none is left, sweeps the rows the
    /// source no longer has), committed with a streaming checkpoint at `position` that
    /// adds the chunk to `handover`. The caller has committed every change it holds.
    pub(super) async fn recopy_step(
        &self,
        recopy: &mut Recopy,
        token: FencingToken,
        position: &Position,
        handover: &mut Vec<(KeyRange, Position)>,
    ) -> Result<Step> {
        if self.ctx.shares_chunks() && !recopy.chunks.is_empty() {
            return self.shared_step(recopy, token, position, handover).await;
        }
        let Some(range) = recopy.chunks.pop_front() else {
            let mut tx = self.ctx.sink.begin(&self.target, token).await?;
            if recopy.sweep {
                self.sweep(tx.as_mut()).await?;
            }
            self.commit_streaming(tx, token, position, handover.clone(), None)
                .await?;
            info!(
                rows = recopy.rows,
                chunks = recopy.total,
                "copy inside the stream done"
            );
            return Ok(Step::Done);
        };
        let read = (self.ctx.source)
            .read_chunk(self.projection.source_schema(), &self.read, &range)
            .await?;
        let mut tx = self.ctx.sink.begin(&self.target, token).await?;
        let mut pages = ReadAhead::spawn(read.rows, READ_AHEAD_PAGES);
        let mut rows = 0u64;
        while let Some(page) = pages.next().await {
            match page? {
                ChunkPage::Rows(page) => {
                    rows += page.len() as u64;
                    tx.write_snapshot_rows(self.projection.rows(page)).await?;
                }
                // The copy needs a wider shape than the stream's: the snapshot path
                // evolves it, so the resync continues as a full one (nothing of this
                // chunk lands: its transaction is dropped).
                ChunkPage::Reshape(_) => {
                    info!("the re-copy needs a wider shape: the table is copied again in full");
                    (self.control.resync).store(true, Ordering::SeqCst);
                    return Err(Error::Cancelled);
                }
            }
        }
        handover.push((range, read.position));
        let left = Some(recopy.recorded());
        self.commit_streaming(tx, token, position, handover.clone(), left)
            .await?;
        recopy.rows += rows;
        metrics::counter!(SNAPSHOT_ROWS_TOTAL, "schema" => self.key.schema.clone(), "table" => self.key.table.clone())
            .increment(rows);
        let done = recopy.total - recopy.chunks.len();
        self.ctx.status.update(&self.key, |s| {
            s.chunks_done = done;
            s.rows_copied += rows;
        });
        Ok(Step::Copied)
    }
}

impl TableWorker {
    /// One window of a copy inside the stream shared between replicas (docs/guarantees.md,
    /// "Copies shared between replicas"). The changes in hand are committed (`position`);
    /// the window opens, and until it closes this replica commits nothing for the table
    /// while every replica copies chunks — each read after the window opened, so at or
    /// after `position`. The window closes once those copies are recorded (or after a
    /// patience of twice this replica's own copying; a copy still running then cannot
    /// record and its chunk goes to a later window), and the chunks recorded join the
    /// hand-over in the next checkpoint. Chunks recorded before a crash are found the
    /// same way on the first window after it.
    async fn shared_step(
        &self,
        recopy: &mut Recopy,
        token: FencingToken,
        position: &Position,
        handover: &mut Vec<(KeyRange, Position)>,
    ) -> Result<Step> {
        let store = &self.ctx.checkpoints;
        if !recopy.published {
            self.take_recorded(recopy, token, handover).await?;
            let chunks: Vec<KeyRange> = recopy.chunks.iter().cloned().collect();
            store.plan_shared_copy(&self.key, token, &chunks).await?;
            recopy.published = true;
        }
        let window = store.open_copy_window(&self.key, token).await?;
        let started = tokio::time::Instant::now();
        let copied = self.copy_own_chunks(recopy, started).await;
        let patience = (started.elapsed() * 2).max(Duration::from_secs(1));
        let waited = async {
            while store.drain_copy_window(&self.key, window).await? > 0 {
                tokio::time::sleep(WINDOW_POLL).await;
            }
            Ok::<_, Error>(())
        };
        let waited = tokio::time::timeout(patience, waited)
            .await
            .unwrap_or(Ok(()));
        // Closed whatever happened above: the stream must go on.
        let recorded = self.take_recorded(recopy, token, handover).await;
        copied?;
        waited?;
        // Rows every replica copied in this window, not only this one's.
        let rows = recorded?;
        recopy.rows += rows;
        let left = Some(recopy.recorded());
        let tx = self.ctx.sink.begin(&self.target, token).await?;
        self.commit_streaming(tx, token, position, handover.clone(), left)
            .await?;
        let done = recopy.total - recopy.chunks.len();
        self.ctx.status.update(&self.key, |s| {
            s.chunks_done = done;
            s.rows_copied += rows;
        });
        tracing::debug!(
            window,
            rows,
            left = recopy.chunks.len(),
            "copy window closed"
        );
        Ok(Step::Copied)
    }

    /// Closes the copy window and moves the chunks recorded as copied (by any replica)
    /// from the chunks to copy to the hand-over; returns the rows they hold.
    async fn take_recorded(
        &self,
        recopy: &mut Recopy,
        token: FencingToken,
        handover: &mut Vec<(KeyRange, Position)>,
    ) -> Result<u64> {
        let copied = self
            .ctx
            .checkpoints
            .close_copy_window(&self.key, token)
            .await?;
        let mut rows = 0;
        for chunk in copied {
            if let Some(i) = recopy.chunks.iter().position(|r| *r == chunk.range) {
                recopy.chunks.remove(i);
                handover.push((chunk.range, chunk.position));
                rows += chunk.rows;
            }
        }
        Ok(rows)
    }

    /// Claims and copies chunks of this table, `parallel_streams` at a time, until the
    /// window opened at `opened` has been claimable for [`MIN_WINDOW`] (so replicas that
    /// look every 200 ms find it) or none is left to claim; returns the rows copied.
    async fn copy_own_chunks(&self, recopy: &Recopy, opened: tokio::time::Instant) -> Result<u64> {
        let mut rows = 0;
        loop {
            let (copied, claimed) = self.copy_own_round(recopy).await?;
            rows += copied;
            if claimed == 0 || opened.elapsed() >= MIN_WINDOW {
                return Ok(rows);
            }
        }
    }

    /// Claims up to `parallel_streams` chunks and copies them; returns the rows copied
    /// and how many chunks were claimed.
    async fn copy_own_round(&self, recopy: &Recopy) -> Result<(u64, usize)> {
        let ctx = &self.ctx;
        let validity = ctx.settings.leases.validity;
        let mut claims = Vec::new();
        for _ in 0..self.settings.parallel_streams.max(1) {
            let scope = ChunkScope::Table(&self.key.table);
            let claimed = (ctx.checkpoints)
                .claim_chunk(&self.key.schema, scope, &ctx.claimant, validity)
                .await?;
            let Some(claim) = claimed else { break };
            claims.push(claim);
        }
        let claimed = claims.len();
        let ready = &recopy.ready;
        let mut copying: FuturesUnordered<_> = claims
            .iter()
            .map(|claim| async move {
                let held = super::helper::ClaimHeld::new(ctx, claim);
                let copied = super::helper::copy(ctx, claim, ready).await?;
                if copied.is_some() {
                    held.copied();
                }
                Ok::<_, Error>(copied)
            })
            .collect();
        let mut rows = 0;
        while let Some(copied) = copying.next().await {
            match copied? {
                Some(n) => rows += n,
                // The copy needs a wider shape than the stream's: copied again in full
                // by the snapshot path, which evolves it.
                None => {
                    info!("the re-copy needs a wider shape: the table is copied again in full");
                    (self.control.resync).store(true, Ordering::SeqCst);
                    return Err(Error::Cancelled);
                }
            }
        }
        Ok((rows, claimed))
    }
}
