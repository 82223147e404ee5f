//! The pipeline engine: per table, a chunked resumable snapshot, then streaming from the
//! position taken before the copy, in batches committed atomically with checkpoints.

mod batch;
mod chain;
mod feed;
mod helper;
mod ownership;
mod plan;
mod projection;
mod read_ahead;
mod recopy;
mod snapshot;
mod stream;
mod sweep;
mod table;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use ownership::{Candidate, Ownership};

use crate::control::{StatusBoard, TableState};
pub use batch::{Batch, OrdKey};
pub use feed::single_table;
pub use plan::TablePlan;
pub use retry::Backoff;

mod retry;

use crate::config::{ResolvedSchema, WarpConfig};
use crate::error::Result;
use crate::lease::LeaseTiming;
use crate::mask::mask_secrets;
use crate::schema::TableSchema;
use crate::sink::{
    CheckpointStore, CheckpointUpdate, Committed, FencingToken, Sink, SinkTransaction, TableKey,
    Target,
};
use crate::source::Source;
use table::TableWorker;

/// Engine knobs, from `performance` (see [`EngineSettings::from_config`]).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Who claims tables (pod name); recorded with fencing tokens.
    pub owner: String,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub failed_cooldown: Duration,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    /// How often a table that only receives heartbeats records its advancing position.
    pub idle_checkpoint_interval: Duration,
    /// Source fragments buffered between reader and writer (backpressure).
    pub queue_capacity: usize,
    /// Re-snapshot every table before streaming (`run --full-resync`).
    pub full_resync: bool,
    /// Tag each batch's log lines with a correlation id (`logging.correlation_id_enabled`).
    pub correlation_ids: bool,
    /// Lease validity and renewal between replicas (`performance.lease_ttl`).
    pub leases: LeaseTiming,
    /// How long a table's full queue may hold the shared change feed before the table is
    /// detached (it rejoins from its own position when its writes resume).
    pub feed_stall: Duration,
    /// How long a change feed may stay silent before it is reopened
    /// (`performance.read_timeout`).
    pub read_timeout: Duration,
    /// How often the source is listed for new tables (`performance.table_discovery_interval`;
    /// `None`: only at start).
    pub discovery_interval: Option<Duration>,
}

impl EngineSettings {
    pub fn from_config(cfg: &WarpConfig, owner: impl Into<String>) -> Self {
        let p = &cfg.performance;
        Self {
            owner: owner.into(),
            max_retries: p.max_retries,
            backoff: Backoff {
                base: p.retry_delay.as_duration(),
                max: p.retry_max_delay.as_duration(),
            },
            failed_cooldown: p.failed_table_cooldown.as_duration(),
            batch_max_bytes: usize::try_from(p.write_batch_max_bytes.0).unwrap_or(usize::MAX),
            batch_max_wait: p.write_batch_max_wait.as_duration(),
            idle_checkpoint_interval: Duration::from_secs(10),
            queue_capacity: 16,
            full_resync: false,
            correlation_ids: cfg.logging.correlation_id_enabled,
            leases: LeaseTiming::from_ttl(p.lease_ttl.as_duration()),
            feed_stall: Duration::from_secs(5),
            read_timeout: p.read_timeout.as_duration(),
            discovery_interval: Some(p.table_discovery_interval.as_duration())
                .filter(|d| !d.is_zero()),
        }
    }
}

/// Requests for one table's worker, from outside the engine.
#[derive(Default)]
pub(crate) struct TableControl {
    pub resync: std::sync::atomic::AtomicBool,
    pub wake: tokio::sync::Notify,
    /// The worker streams from a source that re-copies while streaming: a resync
    /// request is taken by the stream itself instead of ending the attempt.
    pub streaming_recopy: std::sync::atomic::AtomicBool,
    /// Wakes such a stream for the request when its table is idle.
    pub requested: tokio::sync::Notify,
}

/// A handle to steer a running pipeline's tables.
#[derive(Clone)]
pub struct PipelineControl {
    ctx: Arc<Ctx>,
}

impl PipelineControl {
    /// Asks `table` to be copied again: in its stream when it streams from a source that
    /// re-copies while streaming, else by a new snapshot (its checkpoint is reset). Other
    /// tables keep streaming. False when the table is not replicated by this pipeline.
    pub fn resync(&self, table: &str) -> bool {
        let controls = self
            .ctx
            .controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match controls.get(table) {
            Some(c) => {
                c.resync.store(true, std::sync::atomic::Ordering::SeqCst);
                c.wake.notify_one();
                c.requested.notify_one();
                true
            }
            None => false,
        }
    }

    /// The tables this replica runs now.
    pub fn tables(&self) -> Vec<String> {
        self.ctx.running_tables()
    }
}

/// What table workers share.
pub(crate) struct Ctx {
    pub controls: std::sync::Mutex<std::collections::HashMap<String, Arc<TableControl>>>,
    pub source: Arc<dyn Source>,
    pub sink: Arc<dyn Sink>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub settings: EngineSettings,
    pub status: StatusBoard,
    pub snapshot_slots: Arc<Semaphore>,
    /// The shared change feed (sources with [`crate::source::ChangeStrategy::Feed`]).
    pub feed: feed::FeedHub,
    /// The schema the workers replicate (a worker looks up other tables' settings).
    pub schema: ResolvedSchema,
    /// Who holds this process's chunk claims: the replica's name and this process's start,
    /// so a restarted replica of the same name never mistakes its predecessor's claims
    /// (left to lapse) for chunks it is copying.
    pub claimant: String,
}

impl Ctx {
    /// The tables this replica runs now.
    pub fn running_tables(&self) -> Vec<String> {
        let controls = self
            .controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        controls.keys().cloned().collect()
    }

    /// Whether snapshot chunks are work items any replica of the schema may copy.
    pub fn shares_chunks(&self) -> bool {
        self.checkpoints.shares_chunks() && self.source.copies_in_fixed_shape()
    }
}

impl Ctx {
    /// Commits `tx` with `update`: recorded with the data where the sink can, otherwise
    /// saved in the checkpoint store as soon as the data is durable.
    pub(crate) async fn commit(
        &self,
        tx: Box<dyn SinkTransaction>,
        key: &TableKey,
        token: FencingToken,
        update: CheckpointUpdate,
    ) -> Result<()> {
        match tx.commit(update).await? {
            Committed::WithData => Ok(()),
            Committed::Separately(update) => self.checkpoints.save(key, token, *update).await,
        }
    }
}

/// `owner` qualified by this process's start time.
fn claimant(owner: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{owner}/{nanos:x}")
}

/// The discovered tables that can replicate, with their settings; the others are marked
/// failed with the reason (they take no lease: they fail on every replica alike).
fn candidates(ctx: &Ctx, schema: &ResolvedSchema, tables: Vec<TableSchema>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for discovered in tables {
        let settings = schema.table(&discovered.id.name);
        let target = Target::new(schema, &discovered.id).landing(ctx.source.landing_version());
        match TableWorker::keyed(discovered, &settings) {
            Ok(schema) => candidates.push(Candidate {
                target,
                settings,
                schema,
            }),
            Err(e) => {
                let key = target.key();
                warn!(table = %key.table, error = %e, "table cannot replicate");
                ctx.status.update(&key, |s| {
                    s.state = TableState::Failed;
                    s.last_error = Some(e.to_string());
                    s.hint = e.hint();
                });
            }
        }
    }
    candidates
}

/// Replicates one schema: discovers its tables and runs one worker per table until
/// shutdown.
pub struct Pipeline {
    ctx: Arc<Ctx>,
    schema: ResolvedSchema,
}

impl Pipeline {
    pub fn new(
        schema: ResolvedSchema,
        source: Arc<dyn Source>,
        sink: Arc<dyn Sink>,
        checkpoints: Arc<dyn CheckpointStore>,
        settings: EngineSettings,
    ) -> Self {
        let timing = feed::FeedTiming {
            stall: settings.feed_stall,
            depth: settings.queue_capacity,
            silence: settings.read_timeout,
            ..feed::FeedTiming::default()
        };
        let ctx = Ctx {
            controls: std::sync::Mutex::default(),
            feed: feed::FeedHub::new(Arc::clone(&source), timing),
            claimant: claimant(&settings.owner),
            source,
            sink,
            checkpoints,
            settings,
            status: StatusBoard::default(),
            snapshot_slots: Arc::new(Semaphore::new(schema.max_parallel_streams.max(1))),
            schema: schema.clone(),
        };
        Self {
            ctx: Arc::new(ctx),
            schema,
        }
    }

    /// Live per-table status (for probes, `/status`, tests).
    pub fn status(&self) -> StatusBoard {
        self.ctx.status.clone()
    }

    /// A handle to request per-table actions (resync) while the pipeline runs.
    pub fn control(&self) -> PipelineControl {
        PipelineControl {
            ctx: Arc::clone(&self.ctx),
        }
    }

    /// The schema this pipeline replicates.
    pub fn schema_name(&self) -> &str {
        &self.schema.name
    }

    /// The source, for health checks.
    pub fn source(&self) -> Arc<dyn Source> {
        Arc::clone(&self.ctx.source)
    }

    /// Runs until `shutdown` is cancelled and every table has drained. Returns an error
    /// only for a permanent failure before any table could start (bad credentials,
    /// missing privileges); transient ones are retried for as long as it takes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let span = tracing::info_span!("schema", schema = %self.schema.name);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, shutdown: CancellationToken) -> Result<()> {
        let Some(tables) = self.startup(&shutdown).await? else {
            return Ok(());
        };
        self.ctx.status.mark_started();
        let candidates = candidates(&self.ctx, &self.schema, tables);
        let helping = tokio::spawn(helper::help(Arc::clone(&self.ctx), shutdown.clone()));
        Ownership::new(Arc::clone(&self.ctx), self.schema.clone(), candidates)
            .run(&shutdown)
            .await;
        let _ = helping.await;
        info!("schema stopped");
        Ok(())
    }

    /// Prepares the destination and discovers tables, retrying transient failures with
    /// backoff until they succeed or shutdown. `None` means shutdown came first.
    async fn startup(&self, shutdown: &CancellationToken) -> Result<Option<Vec<TableSchema>>> {
        let mut attempt = 0u32;
        loop {
            let result = async {
                self.ctx.sink.prepare().await?;
                self.ctx.source.discover(&self.schema).await
            }
            .await;
            let err = match result {
                Ok(tables) => {
                    let selected: Vec<_> = tables
                        .into_iter()
                        .filter(|t| self.schema.filter.includes(&t.id.name))
                        .collect();
                    info!(tables = selected.len(), "tables discovered");
                    return Ok(Some(selected));
                }
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            attempt += 1;
            let wait = self.ctx.settings.backoff.delay(attempt);
            warn!(error = %mask_secrets(&err.to_string()), attempt, wait_ms = wait.as_millis() as u64, "start-up failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return Ok(None),
            }
        }
    }
}
