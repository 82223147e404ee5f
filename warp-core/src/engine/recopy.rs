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

use tracing::info;

use super::read_ahead::ReadAhead;
use super::table::TableWorker;
use crate::error::{Error, Result};
use crate::metrics::SNAPSHOT_ROWS_TOTAL;
use crate::position::Position;
use crate::sink::{CopyInStream, FencingToken};
use crate::source::{ChunkPage, KeyRange};

/// Pages of a chunk read ahead while the previous one is written.
const READ_AHEAD_PAGES: usize = 2;

/// The chunks of a copy inside the stream still to copy (recorded with every streaming
/// checkpoint, so it goes on after a restart).
pub(super) struct Recopy {
    chunks: VecDeque<KeyRange>,
    sweep: bool,
    total: usize,
    rows: u64,
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
        let chunk_rows = self.chunk_rows(table).await;
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
