//! Snapshot phase: chunks copied `parallel_streams` at a time, each committed with its
//! progress, so a restart resumes at the first unfinished chunk.

use std::cmp::Ordering;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::projection::Projection;
use super::read_ahead::ReadAhead;
use super::table::TableWorker;
use crate::control::TableState;
use crate::error::{Error, Result};
use crate::event::Change;
use crate::metrics::{SCHEMA_CHANGES_TOTAL, SNAPSHOT_PROGRESS_RATIO, SNAPSHOT_ROWS_TOTAL};
use crate::position::Position;
use crate::schema::SchemaChange;
use crate::sink::{CheckpointUpdate, ChunkScope, FencingToken, Phase};
use crate::source::{ChunkPage, KeyRange};

/// The table's shape while chunks copy in parallel: a chunk that meets data needing a
/// wider shape evolves it for all of them, one at a time. Each chunk attempt holds a read
/// guard from its read to its commit, so the table never widens under rows read in the
/// old shape (they would no longer fit it); the lock is write-preferring, so no attempt
/// starts in the old shape once a reshape waits.
type Shape = tokio::sync::RwLock<Projection>;

/// How often an owner whose chunks are all claimed looks whether the others are copied.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Pages a chunk reads ahead of the one being written.
const READ_AHEAD_PAGES: usize = 1;

/// (range, `Some(position)` when done, rows copied).
pub(crate) type ChunkState = (KeyRange, Option<Position>, u64);

impl TableWorker {
    /// Copies the unfinished chunks, then records the handover to streaming. Returns the
    /// stream start and the chunks read after it (see [`crate::sink::Phase::Streaming`]).
    pub(super) async fn snapshot(
        &mut self,
        token: FencingToken,
        start: Position,
        chunks: Vec<ChunkState>,
        recopy: bool,
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
            let shape = Shape::new(self.projection.clone());
            if self.ctx.shares_chunks() {
                self.copy_claimed(&shape, token, total, shutdown).await?;
                positions = self.copied_positions().await?;
            } else {
                let this = &*self;
                let copied: Vec<(usize, Position)> = futures::stream::iter(todo)
                    .map(|(index, range)| {
                        let shape = &shape;
                        async move {
                            if shutdown.is_cancelled() {
                                return Err(Error::Cancelled);
                            }
                            this.copy_chunk(shape, token, index, &range, total)
                                .await
                                .map(|p| (index, p))
                        }
                    })
                    .buffer_unordered(self.settings.parallel_streams.max(1))
                    .try_collect()
                    .await?;
                for (index, position) in copied {
                    positions[index] = Some(position);
                }
            }
            self.projection = shape.into_inner();
        }

        let mut handover = Vec::new();
        for ((range, _, _), position) in chunks.into_iter().zip(positions) {
            let position = position
                .ok_or_else(|| Error::Position("chunk finished without a position".into()))?;
            if self.ctx.source.compare_positions(&position, &start)? == Ordering::Greater {
                handover.push((range, position));
            }
        }
        // Before streaming starts, in the hand-over's transaction: the stream replays
        // every change after `start` in order, whatever the sweep removed.
        let mut tx = self.ctx.sink.begin(&self.target, token).await?;
        if recopy {
            self.sweep(tx.as_mut()).await?;
        }
        self.commit_streaming(tx, token, &start, handover.clone(), None)
            .await?;
        info!(%start, late_chunks = handover.len(), "snapshot done; streaming");
        Ok((start, handover))
    }

    /// A shared snapshot: chunks are claimed in the control store, `parallel_streams` at
    /// a time, while other replicas claim and copy the rest (docs/guarantees.md, "Copies
    /// shared between replicas"). Returns once every chunk is copied, by whomever; a
    /// chunk whose claim lapsed (its replica died) is claimed again here.
    async fn copy_claimed(
        &self,
        shape: &Shape,
        token: FencingToken,
        total: usize,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let validity = ctx.settings.leases.validity;
        let mut copying = FuturesUnordered::new();
        loop {
            if shutdown.is_cancelled() {
                return Err(Error::Cancelled);
            }
            while copying.len() < self.settings.parallel_streams.max(1) {
                let scope = ChunkScope::Table(&self.key.table);
                let claimed = (ctx.checkpoints)
                    .claim_chunk(&self.key.schema, scope, &ctx.claimant, validity)
                    .await?;
                let Some(claim) = claimed else { break };
                let held = super::helper::ClaimHeld::new(ctx, &claim);
                copying.push(async move {
                    let copied =
                        (self.copy_chunk(shape, token, claim.index, &claim.range, total)).await?;
                    held.copied();
                    Ok::<_, Error>(copied)
                });
            }
            if let Some(copied) = copying.next().await {
                copied?;
                continue;
            }
            // Nothing left to claim: other replicas hold the chunks still uncopied.
            if self.chunks_left(total).await? == 0 {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(CLAIM_POLL) => {}
                () = shutdown.cancelled() => return Err(Error::Cancelled),
            }
        }
    }

    /// The plan's chunks not copied yet (by any replica), shown as progress.
    async fn chunks_left(&self, total: usize) -> Result<usize> {
        let chunks = self.recorded_chunks().await?;
        let done = chunks.iter().filter(|c| c.done.is_some()).count();
        self.ctx.status.update(&self.key, |s| s.chunks_done = done);
        self.publish_progress(done, total);
        Ok(chunks.len() - done)
    }

    /// The position each chunk of the plan was copied at, as the control store holds them.
    async fn copied_positions(&self) -> Result<Vec<Option<Position>>> {
        let chunks = self.recorded_chunks().await?;
        Ok(chunks.into_iter().map(|c| c.done).collect())
    }

    async fn recorded_chunks(&self) -> Result<Vec<crate::sink::ChunkProgress>> {
        match self.ctx.checkpoints.load(&self.key).await?.map(|c| c.phase) {
            Some(Phase::Snapshot { chunks, .. }) => Ok(chunks),
            _ => Err(Error::Position(
                "the snapshot's plan is gone from the control store".into(),
            )),
        }
    }

    async fn copy_chunk(
        &self,
        shape: &Shape,
        token: FencingToken,
        index: usize,
        range: &KeyRange,
        total: usize,
    ) -> Result<Position> {
        let ctx = &self.ctx;
        let mut idle_reshapes = 0;
        let (position, rows) = loop {
            let projection = shape.read().await;
            let read = ctx
                .source
                .read_chunk(projection.source_schema(), &self.read, range)
                .await?;
            let mut tx = ctx.sink.begin(&self.target, token).await?;
            // The next page is read while this one is written.
            let mut pages = ReadAhead::spawn(read.rows, READ_AHEAD_PAGES);
            let mut rows = 0u64;
            let mut reshape = None;
            while let Some(page) = pages.next().await {
                match page? {
                    ChunkPage::Rows(page) => {
                        crate::failpoint::hit(crate::failpoint::Point::AfterRead);
                        rows += page.len() as u64;
                        crate::failpoint::hit(crate::failpoint::Point::BeforeWrite);
                        tx.write_snapshot_rows(projection.rows(page)).await?;
                    }
                    ChunkPage::Reshape(changes) => {
                        reshape = Some(changes);
                        break;
                    }
                }
            }
            let Some(changes) = reshape else {
                crate::failpoint::hit(crate::failpoint::Point::AfterWrite);
                let done = CheckpointUpdate::ChunkDone {
                    index,
                    position: read.position.clone(),
                    rows,
                };
                ctx.commit(tx, &self.key, token, done).await?;
                break (read.position, rows);
            };
            // Nothing of this attempt may land: the rows written so far are rolled back
            // (before the DDL, which waits for every open writer of the table).
            drop(pages);
            drop(tx);
            drop(projection);
            if self.reshape(shape, changes).await? {
                idle_reshapes = 0;
            } else {
                idle_reshapes += 1;
                // Once is a race with another chunk that evolved the shape first.
                if idle_reshapes > 1 {
                    return Err(Error::Table {
                        table: self.key.to_string(),
                        message: "the source keeps asking to reshape the table without changing it"
                            .into(),
                        hint: None,
                    });
                }
            }
        };
        metrics::counter!(SNAPSHOT_ROWS_TOTAL, "schema" => self.key.schema.clone(), "table" => self.key.table.clone())
            .increment(rows);
        let mut done = 0;
        let bytes = ctx.source.bytes_processed(&self.key.table);
        ctx.status.update(&self.key, |s| {
            s.source_bytes = bytes.or(s.source_bytes);
            s.chunks_done += 1;
            s.rows_copied += rows;
            s.commits += 1;
            done = s.chunks_done;
        });
        self.publish_progress(done, total);
        Ok(position)
    }

    /// Evolves the table (engine shape and destination) by changes a chunk read asked
    /// for. Returns whether anything changed (another chunk may have done it already).
    async fn reshape(&self, shape: &Shape, changes: Vec<SchemaChange>) -> Result<bool> {
        let mut projection = shape.write().await;
        let before = projection.source_schema().clone();
        let mut kinds = Vec::new();
        for change in changes {
            let landed = projection
                .change(Change::Schema(change))
                .map_err(|message| Error::Table {
                    table: self.key.to_string(),
                    message,
                    hint: None,
                })?;
            if let Some(Change::Schema(sc)) = landed {
                kinds.push(sc.kind());
            }
        }
        if *projection.source_schema() == before {
            return Ok(false);
        }
        self.ctx
            .sink
            .ensure_table(&self.target, &projection.destination_schema())
            .await?;
        info!(
            changes = kinds.len(),
            "the data needs a wider shape: table evolved, chunk read again"
        );
        for kind in kinds {
            metrics::counter!(SCHEMA_CHANGES_TOTAL, "schema" => self.key.schema.clone(), "table" => self.key.table.clone(), "change_type" => kind)
                .increment(1);
        }
        Ok(true)
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
