//! Snapshot help between replicas (docs/guarantees.md, "Copies shared between replicas"):
//! a replica with a free snapshot slot claims chunks of the tables other replicas are
//! copying and copies them for their owners, so one huge table is copied by every
//! replica at once while one replica owns (and later streams) it.
//!
//! A helper reads the chunk in the shape the owner planned the copy in and writes it
//! like the owner would; its commit records the chunk as copied only while its claim is
//! the chunk's latest and the chunk is not copied yet, in the transaction of the rows. A
//! helper that dies holding a claim leaves it to lapse; the owner, or another helper,
//! claims the chunk again. The owner hands over to streaming once every chunk is copied,
//! with each chunk's own read position, exactly as for chunks it copied itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::projection::Projection;
use super::Ctx;
use crate::error::{Error, Result};
use crate::mask::mask_secrets;
use crate::metrics::SNAPSHOT_ROWS_TOTAL;
use crate::sink::{CheckpointUpdate, ChunkClaim, ChunkScope, Committed, TableKey, Target};
use crate::source::ChunkPage;

/// How often an idle replica looks for chunks to copy: a copy inside a stream offers
/// its chunks for one window at a time (about a chunk's copy), so helpers look often; the
/// look is one indexed query.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// How long an idle replica waits after the control store could not be asked.
const UNREACHABLE_WAIT: Duration = Duration::from_secs(5);

/// The landing tables this replica's sink knows, with the shape it last registered for
/// each (a table whose stream changed its shape since is registered again).
pub(super) type Ready = std::sync::Mutex<HashMap<String, crate::TableSchema>>;

/// Copies other replicas' snapshot chunks until `shutdown`, one chunk per free snapshot
/// slot (`max_parallel_streams` of them); never chunks of the tables this replica runs
/// itself (their owners copy those).
pub(super) async fn help(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    if !ctx.shares_chunks() {
        return;
    }
    let ready = Arc::new(Ready::default());
    let mut copying = tokio::task::JoinSet::new();
    while !shutdown.is_cancelled() {
        let mut wait = LOOK_EVERY;
        let claimed = match Arc::clone(&ctx.snapshot_slots).try_acquire_owned() {
            Ok(slot) => match claim(&ctx).await {
                Ok(claim) => claim.map(|claim| (claim, slot)),
                Err(e) => {
                    // The control store is unreachable: its own retries report it;
                    // look again later rather than warn five times a second.
                    warn!(error = %mask_secrets(&e.to_string()), "could not look for chunks to copy for other replicas");
                    wait = UNREACHABLE_WAIT;
                    None
                }
            },
            Err(_) => None,
        };
        if let Some((claim, slot)) = claimed {
            let (ctx, ready, shutdown) = (Arc::clone(&ctx), Arc::clone(&ready), shutdown.clone());
            copying.spawn(async move {
                let _slot = slot;
                copy_for_owner(&ctx, claim, &ready, &shutdown).await;
            });
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
            Some(_) = copying.join_next(), if !copying.is_empty() => {}
        }
    }
    while copying.join_next().await.is_some() {}
}

/// The next chunk of another replica's table to copy, if any.
async fn claim(ctx: &Ctx) -> crate::Result<Option<ChunkClaim>> {
    let running = ctx.running_tables();
    let scope = ChunkScope::OthersThan(&running);
    let validity = ctx.settings.leases.validity;
    (ctx.checkpoints)
        .claim_chunk(&ctx.schema.name, scope, &ctx.claimant, validity)
        .await
}

/// Copies a claimed chunk; hands the claim back when it could not.
async fn copy_for_owner(ctx: &Ctx, claim: ChunkClaim, ready: &Ready, shutdown: &CancellationToken) {
    let copied = tokio::select! {
        copied = copy(ctx, &claim, ready) => copied,
        () = shutdown.cancelled() => Err(Error::Cancelled),
    };
    let owner_only = match copied {
        Ok(Some(rows)) => {
            info!(table = %claim.table, chunk = claim.index, rows, "chunk copied for the table's owner");
            return;
        }
        Ok(None) => {
            info!(table = %claim.table, chunk = claim.index, "the chunk needs the table's shape changed: left to its owner");
            true
        }
        Err(e) => {
            if !matches!(e, Error::Cancelled) {
                warn!(table = %claim.table, chunk = claim.index, error = %mask_secrets(&e.to_string()), "chunk not copied for the table's owner; handed back");
            }
            false
        }
    };
    let key = TableKey {
        schema: ctx.schema.name.clone(),
        table: claim.table.clone(),
    };
    // Handed back at once rather than left to lapse.
    let released = (ctx.checkpoints)
        .release_chunk(&key, claim.index, claim.claim, owner_only)
        .await;
    if let Err(e) = released {
        warn!(error = %mask_secrets(&e.to_string()), "claim not handed back; it lapses");
    }
}

/// Copies the claimed chunk in the owner's shape; its rows count, or `None` when it
/// needs the table's shape changed (only its owner does that).
pub(super) async fn copy(ctx: &Ctx, claim: &ChunkClaim, ready: &Ready) -> Result<Option<u64>> {
    let shape = claim.shape.clone().ok_or_else(|| Error::Table {
        table: claim.table.clone(),
        message: "a shared chunk without the shape of its plan".into(),
        hint: None,
    })?;
    let settings = ctx.schema.table(&claim.table);
    let target = Target::new(&ctx.schema, &shape.id).landing(ctx.source.landing_version());
    let projection = Projection::new(shape, settings.exclude_columns.clone());
    let known = |ready: &Ready| {
        let ready = ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ready.get(&claim.table) == Some(projection.source_schema())
    };
    if !known(ready) {
        // The owner brought the landing table to this very shape: this only registers it
        // with this replica's sink.
        (ctx.sink)
            .ensure_table(&target, &projection.destination_schema())
            .await?;
        let mut ready = ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ready.insert(claim.table.clone(), projection.source_schema().clone());
    }
    let read = (ctx.source)
        .read_chunk(
            projection.source_schema(),
            &settings.read_settings(),
            &claim.range,
        )
        .await?;
    let mut tx = ctx.sink.begin_claimed(&target).await?;
    let mut pages = read.rows;
    let mut rows = 0u64;
    while let Some(page) = pages.next().await {
        match page? {
            ChunkPage::Rows(page) => {
                rows += page.len() as u64;
                tx.write_snapshot_rows(projection.rows(page)).await?;
            }
            ChunkPage::Reshape(_) => return Ok(None),
        }
    }
    let update = CheckpointUpdate::ChunkCopied {
        index: claim.index,
        position: read.position,
        rows,
        claim: claim.claim,
    };
    match tx.commit(update).await? {
        Committed::WithData => {}
        Committed::Separately(_) => {
            return Err(Error::Sink {
                message: "a chunk copied for another replica must be recorded with its rows".into(),
                retry: crate::Retry::Permanent,
                hint: None,
                cause: None,
            })
        }
    }
    metrics::counter!(SNAPSHOT_ROWS_TOTAL, "schema" => ctx.schema.name.clone(), "table" => claim.table.clone())
        .increment(rows);
    Ok(Some(rows))
}

/// A claim this process holds while it copies the chunk: renewed with the replica's
/// leases, so one abandoned by an error would stay held for as long as the process
/// lives. Dropped before [`ClaimHeld::copied`], it hands the claim back.
pub(super) struct ClaimHeld {
    store: Arc<dyn crate::sink::CheckpointStore>,
    key: TableKey,
    index: usize,
    claim: crate::sink::FencingToken,
    copied: bool,
}

impl ClaimHeld {
    pub(super) fn new(ctx: &Ctx, claim: &ChunkClaim) -> Self {
        Self {
            store: Arc::clone(&ctx.checkpoints),
            key: TableKey {
                schema: ctx.schema.name.clone(),
                table: claim.table.clone(),
            },
            index: claim.index,
            claim: claim.claim,
            copied: false,
        }
    }

    /// The chunk is recorded: nothing to hand back.
    pub(super) fn copied(mut self) {
        self.copied = true;
    }
}

impl Drop for ClaimHeld {
    fn drop(&mut self) {
        if self.copied {
            return;
        }
        let (store, key, index, claim) = (
            Arc::clone(&self.store),
            self.key.clone(),
            self.index,
            self.claim,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.release_chunk(&key, index, claim, false).await {
                    warn!(error = %mask_secrets(&e.to_string()), "claim not handed back; it lapses");
                }
            });
        }
    }
}
