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
use crate::sink::FencingToken;
use crate::source::{ChunkPage, KeyRange};

/// Pages of a chunk read ahead while the previous one is written.
const READ_AHEAD_PAGES: usize = 2;

/// The chunks of a re-copy still to copy (recorded with every streaming checkpoint, so
/// a re-copy goes on after a restart).
pub(super) struct Recopy {
    chunks: VecDeque<KeyRange>,
    total: usize,
    rows: u64,
}

impl Recopy {
    /// A re-copy recorded at a checkpoint, from its next chunk.
    pub(super) fn resume(chunks: Vec<KeyRange>) -> Self {
        info!(
            chunks = chunks.len(),
            "resuming the re-copy recorded at the checkpoint"
        );
        Self {
            total: chunks.len(),
            chunks: chunks.into(),
            rows: 0,
        }
    }

    pub(super) fn remaining(&self) -> Vec<KeyRange> {
        self.chunks.iter().cloned().collect()
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

    /// Plans a re-copy of the table as the source holds it now.
    pub(super) async fn plan_recopy(&self) -> Result<Recopy> {
        let table = self.projection.source_schema();
        let chunk_rows = self.chunk_rows(table).await;
        let plan = (self.ctx.source)
            .plan_snapshot(table, &self.read, chunk_rows)
            .await?;
        info!(
            chunks = plan.chunks.len(),
            "resync requested: the table is copied again while it streams"
        );
        self.ctx.status.update(&self.key, |s| {
            s.chunks_total = plan.chunks.len();
            s.chunks_done = 0;
        });
        Ok(Recopy {
            total: plan.chunks.len(),
            chunks: plan.chunks.into(),
            rows: 0,
        })
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
            self.sweep(tx.as_mut()).await?;
            self.commit_streaming(tx, token, position, handover.clone(), None)
                .await?;
            info!(
                rows = recopy.rows,
                chunks = recopy.total,
                "resync done while streaming"
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
        let left = Some(recopy.remaining());
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
