//! Snapshot phase: chunks copied `parallel_streams` at a time, each committed with its
//! progress, so a restart resumes at the first unfinished chunk.

use std::cmp::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::status::TableState;
use super::table::TableWorker;
use crate::error::{Error, Result};
use crate::metrics::{SNAPSHOT_PROGRESS_RATIO, SNAPSHOT_ROWS_TOTAL};
use crate::position::Position;
use crate::sink::{CheckpointUpdate, FencingToken};
use crate::source::KeyRange;

/// (range, `Some(position)` when done, rows copied).
pub(crate) type ChunkState = (KeyRange, Option<Position>, u64);

impl TableWorker {
    /// Copies the unfinished chunks, then records the handover to streaming. Returns the
    /// stream start and the chunks read after it (see [`crate::sink::Phase::Streaming`]).
    pub(super) async fn snapshot(
        &self,
        token: FencingToken,
        start: Position,
        chunks: Vec<ChunkState>,
        shutdown: &CancellationToken,
    ) -> Result<(Position, Vec<(KeyRange, Position)>)> {
        let total = chunks.len();
        let done_before = chunks.iter().filter(|c| c.1.is_some()).count();
        let rows_before: u64 = chunks.iter().map(|c| c.2).sum();
        self.ctx.status.update(&self.key, |s| {
            s.state = TableState::Snapshotting;
            s.chunks_total = total;
            s.chunks_done = done_before;
            s.rows_copied = rows_before;
        });
        self.publish_progress(done_before, total);

        let todo: Vec<(usize, KeyRange)> = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.1.is_none())
            .map(|(i, c)| (i, c.0.clone()))
            .collect();
        let mut positions: Vec<Option<Position>> = chunks.iter().map(|c| c.1.clone()).collect();
        if !todo.is_empty() {
            info!(remaining = todo.len(), total, "snapshot copying");
            // Only `max_parallel_streams` tables of a schema copy at once.
            let _slot = Arc::clone(&self.ctx.snapshot_slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::Cancelled)?;
            let copied: Vec<(usize, Position)> = futures::stream::iter(todo)
                .map(|(index, range)| async move {
                    if shutdown.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    self.copy_chunk(token, index, &range, total)
                        .await
                        .map(|p| (index, p))
                })
                .buffer_unordered(self.settings.parallel_streams.max(1))
                .try_collect()
                .await?;
            for (index, position) in copied {
                positions[index] = Some(position);
            }
        }

        let mut handover = Vec::new();
        for ((range, _, _), position) in chunks.into_iter().zip(positions) {
            let position = position
                .ok_or_else(|| Error::Position("chunk finished without a position".into()))?;
            if self.ctx.source.compare_positions(&position, &start)? == Ordering::Greater {
                handover.push((range, position));
            }
        }
        self.commit_position(token, &start, handover.clone())
            .await?;
        info!(%start, late_chunks = handover.len(), "snapshot done; streaming");
        Ok((start, handover))
    }

    async fn copy_chunk(
        &self,
        token: FencingToken,
        index: usize,
        range: &KeyRange,
        total: usize,
    ) -> Result<Position> {
        let ctx = &self.ctx;
        let read = ctx
            .source
            .read_chunk(self.projection.source_schema(), range)
            .await?;
        let mut tx = ctx.sink.begin(&self.target, token).await?;
        let mut pages = read.rows;
        let mut rows = 0u64;
        while let Some(page) = pages.next().await {
            let page = page?;
            rows += page.len() as u64;
            tx.write_snapshot_rows(self.projection.rows(page)).await?;
        }
        tx.commit(CheckpointUpdate::ChunkDone {
            index,
            position: read.position.clone(),
            rows,
        })
        .await?;
        metrics::counter!(SNAPSHOT_ROWS_TOTAL, "schema" => self.key.schema.clone(), "table" => self.key.table.clone())
            .increment(rows);
        let mut done = 0;
        ctx.status.update(&self.key, |s| {
            s.chunks_done += 1;
            s.rows_copied += rows;
            s.commits += 1;
            done = s.chunks_done;
        });
        self.publish_progress(done, total);
        Ok(read.position)
    }

    fn publish_progress(&self, done: usize, total: usize) {
        let ratio = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        metrics::gauge!(SNAPSHOT_PROGRESS_RATIO, "schema" => self.key.schema.clone(), "table" => self.key.table.clone())
            .set(ratio);
    }
}
