//! One table's life: claim, ensure, snapshot (resumable), stream; transient errors retry
//! with backoff, exhausted retries cool down, permanent errors stop only this table.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::projection::Projection;
use super::Ctx;
use crate::config::ResolvedTable;
use crate::control::TableState;
use crate::error::{Error, Result};
use crate::event::Change;
use crate::mask::mask_secrets;
use crate::metrics::ERRORS_TOTAL;
use crate::position::Position;
use crate::read_settings::ReadSettings;
use crate::schema::TableSchema;
use crate::sink::{CheckpointUpdate, FencingToken, Phase, TableKey, Target};
use crate::source::KeyRange;

pub(crate) struct TableWorker {
    pub(super) ctx: Arc<Ctx>,
    pub(super) control: Arc<super::TableControl>,
    pub(super) target: Target,
    pub(super) key: TableKey,
    pub(super) settings: ResolvedTable,
    /// The settings the source reads the table with (from `settings`).
    pub(super) read: ReadSettings,
    pub(super) projection: Projection,
    /// `--full-resync`: forget the checkpoint once, on the first attempt.
    full_resync: bool,
    /// The source replaced the table's contents: the re-copy empties it in the transaction
    /// that plans the copy (and replaces the checkpoint), so a crash before that reads the
    /// replacement again and one after it resumes the copy.
    empty_first: bool,
    /// The source shape the checkpoint holds, when this attempt resumed from it.
    pub(super) recorded_shape: Option<TableSchema>,
}

impl TableWorker {
    /// `discovered` with its key as `settings` configure it; an error when the table has
    /// none (it cannot replicate).
    pub fn keyed(discovered: TableSchema, settings: &ResolvedTable) -> Result<TableSchema> {
        let mut schema = discovered;
        if let Some(pk) = &settings.primary_key {
            schema.primary_key.clone_from(pk);
        }
        schema.key_indexes().map_err(|e| Error::Table {
            table: schema.id.to_string(),
            message: e.to_string(),
            hint: Some(format!(
                "set schemas[].tables.{}.primary_key to the column(s) that identify a row",
                schema.id.name
            )),
        })?;
        Ok(schema)
    }

    /// A worker for a table whose schema went through [`TableWorker::keyed`].
    pub fn new(
        ctx: Arc<Ctx>,
        target: Target,
        settings: ResolvedTable,
        schema: TableSchema,
    ) -> Self {
        let key = target.key();
        let full_resync = ctx.settings.full_resync;
        let projection = Projection::new(schema, settings.exclude_columns.clone());
        let control = Arc::new(super::TableControl::default());
        ctx.controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.table.clone(), Arc::clone(&control));
        Self {
            ctx,
            control,
            target,
            key,
            read: settings.read_settings(),
            settings,
            projection,
            full_resync,
            empty_first: false,
            recorded_shape: None,
        }
    }

    /// Rows per snapshot chunk for `table` (see [`ResolvedTable::chunk_rows`]). The row
    /// width is only asked for when the size is not configured; an estimate that fails
    /// leaves the default size (it is an optimisation, not a requirement).
    pub(super) async fn chunk_rows(&self, table: &crate::TableSchema) -> usize {
        let width = match self.settings.snapshot_chunk_size {
            Some(_) => None,
            None => self
                .ctx
                .source
                .estimate_row_bytes(table)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %mask_secrets(&e.to_string()), "no row-size estimate; default snapshot chunk size");
                    None
                }),
        };
        let rows = self.settings.chunk_rows(width);
        info!(rows, avg_row_bytes = width, "snapshot chunk size");
        rows
    }

    fn commits(&self) -> u64 {
        self.ctx.status.get(&self.key).map_or(0, |s| s.commits)
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let settings = &self.ctx.settings;
        let (max_retries, backoff, cooldown) = (
            settings.max_retries,
            settings.backoff,
            settings.failed_cooldown,
        );
        let mut attempts = 0u32;
        loop {
            if self
                .control
                .resync
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                info!("resync requested: the table will be copied again");
                self.full_resync = true;
                attempts = 0;
            }
            let commits_before = self.commits();
            // A resync request ends this attempt (the batch in hand still commits).
            let attempt = shutdown.child_token();
            let watcher = {
                let (attempt, control) = (attempt.clone(), Arc::clone(&self.control));
                tokio::spawn(async move {
                    // A stream that re-copies in place takes the request itself.
                    loop {
                        control.wake.notified().await;
                        if !control
                            .streaming_recopy
                            .load(std::sync::atomic::Ordering::SeqCst)
                        {
                            attempt.cancel();
                            return;
                        }
                    }
                })
            };
            let result = self.run_once(&attempt).await;
            watcher.abort();
            if !shutdown.is_cancelled()
                && self
                    .control
                    .resync
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                continue;
            }
            let e = match result {
                Ok(()) | Err(Error::Cancelled) if shutdown.is_cancelled() => {
                    self.ctx.status.set_state(&self.key, TableState::Stopped);
                    info!("stopped");
                    return;
                }
                // The attempt was ended by a wake-up whose resync was already taken (a
                // request that landed as the previous attempt ended): just run again.
                Ok(()) | Err(Error::Cancelled) => continue,
                // Another replica runs the table now; the lease keeper forgets it here.
                // Its contents were replaced at the source: copy it again, at once.
                Err(e @ Error::Replaced { .. }) => {
                    info!(reason = %e, "the table will be emptied and copied again");
                    (self.full_resync, self.empty_first) = (true, true);
                    attempts = 0;
                    continue;
                }
                Err(e @ (Error::Fenced { .. } | Error::NotOwner { .. })) => {
                    warn!(error = %e, "table handed over to another replica; stopping it here");
                    self.ctx.status.set_state(&self.key, TableState::Stopped);
                    return;
                }
                Err(e) => e,
            };
            if self.commits() > commits_before {
                attempts = 0;
            }
            let message = mask_secrets(&e.to_string()).into_owned();
            metrics::counter!(ERRORS_TOTAL, "schema" => self.key.schema.clone(), "table" => self.key.table.clone(), "error_type" => e.kind())
                .increment(1);
            if !e.is_transient() {
                error!(error = %message, hint = e.hint().as_deref().unwrap_or(""), "table failed");
                self.ctx.status.update(&self.key, |s| {
                    s.state = TableState::Failed;
                    s.last_error = Some(message);
                    s.hint = e.hint();
                });
                // Stopped until shutdown, or until a resync revives it.
                tokio::select! {
                    () = self.control.wake.notified() => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            attempts += 1;
            let (state, wait, hint) = if attempts > max_retries {
                attempts = 0;
                let hint = format!("retries exhausted; restarting in {}s", cooldown.as_secs());
                (TableState::Failed, cooldown, Some(hint))
            } else {
                (TableState::Retrying, backoff.delay(attempts), None)
            };
            warn!(error = %message, attempt = attempts, wait_ms = wait.as_millis() as u64, "transient error");
            self.ctx.status.update(&self.key, |s| {
                s.state = state;
                s.last_error = Some(message);
                s.hint = hint;
                s.attempts = attempts;
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.control.wake.notified() => {}
                () = shutdown.cancelled() => {
                    self.ctx.status.set_state(&self.key, TableState::Stopped);
                    return;
                }
            }
        }
    }

    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        // A fresh token per attempt also fences off this replica's own earlier attempt.
        let token = ctx
            .checkpoints
            .acquire(&self.key, &ctx.settings.owner, ctx.settings.leases.validity)
            .await?
            .ok_or_else(|| Error::NotOwner {
                table: self.key.to_string(),
            })?;
        let mut checkpoint = ctx.checkpoints.load(&self.key).await?;
        self.resume_shape(checkpoint.as_ref());
        // Every read of the table lands values the way its landing table was created for.
        self.read.landing = ctx
            .sink
            .ensure_table(&self.target, &self.projection.destination_schema())
            .await?;
        // A replaced table keeps its checkpoint, and this attempt keeps the request, until
        // the emptying commit lands: an attempt that fails before it (the table missing
        // at the source for a while) must not resume streaming the old contents.
        let empty_first = self.empty_first;
        if self.full_resync {
            if checkpoint.is_some() && !empty_first {
                ctx.checkpoints.reset(&self.key, token).await?;
                info!("full resync: checkpoint cleared");
            }
            checkpoint = None;
            self.full_resync = empty_first;
        }
        let emptied = || {
            if empty_first {
                vec![Change::Truncate]
            } else {
                Vec::new()
            }
        };
        // A re-copy in progress while streaming goes on from its next chunk.
        let mut recopy = None;
        let (position, handover) = match checkpoint.map(|c| c.phase) {
            Some(Phase::Streaming {
                position,
                handover,
                recopy: chunks,
                ..
            }) => {
                recopy = chunks;
                (position, handover)
            }
            Some(Phase::Snapshot {
                start,
                chunks,
                recopy,
            }) => {
                let resume = chunks
                    .into_iter()
                    .map(|c| (c.range, c.done, c.rows))
                    .collect();
                self.snapshot(token, start, resume, recopy, shutdown)
                    .await?
            }
            None if self.settings.full_load_enabled && self.copies_in_stream() => {
                let (position, copy) = self.begin_copy_in_stream(token, emptied()).await?;
                (self.full_resync, self.empty_first) = (false, false);
                recopy = Some(copy);
                (position, Vec::new())
            }
            None if self.settings.full_load_enabled => {
                let table = self.projection.source_schema();
                let chunk_rows = self.chunk_rows(table).await;
                let plan = ctx
                    .source
                    .plan_snapshot(table, &self.read, chunk_rows)
                    .await?;
                // Asked before the plan commits: this replica alone writes the table.
                let recopy = !empty_first && self.holds_rows().await?;
                let mut tx = ctx.sink.begin(&self.target, token).await?;
                tx.apply(emptied()).await?;
                let begin = CheckpointUpdate::BeginSnapshot {
                    start: plan.start.clone(),
                    chunks: plan.chunks.clone(),
                    recopy,
                    shared: (ctx.shares_chunks()).then(|| table.clone()),
                };
                ctx.commit(tx, &self.key, token, begin).await?;
                (self.full_resync, self.empty_first) = (false, false);
                info!(chunks = plan.chunks.len(), start = %plan.start, recopy, "snapshot planned");
                let fresh = plan.chunks.into_iter().map(|r| (r, None, 0)).collect();
                self.snapshot(token, plan.start, fresh, recopy, shutdown)
                    .await?
            }
            None => {
                // full_load_enabled: false — start from the current end of the log.
                let position = ctx
                    .source
                    .current_position(self.projection.source_schema(), &self.read)
                    .await?;
                self.commit_position(token, &position, Vec::new(), emptied())
                    .await?;
                (self.full_resync, self.empty_first) = (false, false);
                info!(%position, "no snapshot (full_load_enabled: false); streaming from now");
                (position, Vec::new())
            }
        };
        self.stream(token, position, handover, recopy, shutdown)
            .await
    }

    /// A stream that resumes where its source replays DDL from the log starts from the
    /// shape recorded at its checkpoint: the statements since apply at their positions
    /// (a column renamed while the replicator was stopped is renamed at the destination,
    /// its earlier changes landing under the old name first). Today's catalog would land
    /// them under a name the log before the rename does not know.
    fn resume_shape(&mut self, checkpoint: Option<&crate::sink::Checkpoint>) {
        self.recorded_shape = None;
        let Some(checkpoint) = checkpoint else {
            return;
        };
        let (Phase::Streaming { .. }, Some(shape)) = (&checkpoint.phase, &checkpoint.shape) else {
            return;
        };
        if !self.ctx.source.follows_schema_in_log() || self.full_resync || self.empty_first {
            return;
        }
        if shape != self.projection.source_schema() {
            info!("resuming from the shape recorded at the checkpoint; the log's DDL since applies in order");
            self.projection = self.projection.with_source(shape.clone());
        }
        self.recorded_shape = Some(shape.clone());
    }

    /// Commits a streaming checkpoint with no data but `changes` (handover, skip-snapshot
    /// start).
    pub(super) async fn commit_position(
        &self,
        token: FencingToken,
        position: &Position,
        handover: Vec<(KeyRange, Position)>,
        changes: Vec<Change>,
    ) -> Result<()> {
        let mut tx = self.ctx.sink.begin(&self.target, token).await?;
        tx.apply(changes).await?;
        self.commit_streaming(tx, token, position, handover, None)
            .await
    }

    /// Commits `tx` with a streaming checkpoint at `position` (and what is left of a
    /// re-copy in progress).
    pub(super) async fn commit_streaming(
        &self,
        tx: Box<dyn crate::sink::SinkTransaction>,
        token: FencingToken,
        position: &Position,
        handover: Vec<(KeyRange, Position)>,
        recopy: Option<crate::sink::CopyInStream>,
    ) -> Result<()> {
        let update = CheckpointUpdate::Streaming {
            position: position.clone(),
            source_ts: None,
            handover,
            shape: Some(self.projection.source_schema().clone()),
            recopy,
        };
        self.ctx.commit(tx, &self.key, token, update).await?;
        self.ctx.status.update(&self.key, |s| {
            s.commits += 1;
            s.position = Some(position.to_string());
        });
        Ok(())
    }
}
