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

use std::collections::HashSet;
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

/// How often an idle helper looks for chunks to copy.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Copies other replicas' snapshot chunks until `shutdown`, one chunk per free snapshot
/// slot at a time (`max_parallel_streams` of them); never chunks of the tables this
/// replica runs itself (their owners copy those).
pub(super) async fn help(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    if !ctx.shares_chunks() {
        return;
    }
    let helpers = ctx.schema.max_parallel_streams.max(1);
    let mut tasks = Vec::new();
    for _ in 0..helpers {
        let (ctx, shutdown) = (Arc::clone(&ctx), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let mut ready = HashSet::new();
            while !shutdown.is_cancelled() {
                let running = ctx.running_tables();
                let copied = help_once(&ctx, &running, &mut ready, &shutdown).await;
                if !copied {
                    tokio::select! {
                        () = tokio::time::sleep(LOOK_EVERY) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Claims one chunk and copies it; false when there was none to claim (or no slot).
async fn help_once(
    ctx: &Ctx,
    running: &[String],
    ready: &mut HashSet<String>,
    shutdown: &CancellationToken,
) -> bool {
    let Ok(_slot) = Arc::clone(&ctx.snapshot_slots).try_acquire_owned() else {
        return false;
    };
    let validity = ctx.settings.leases.validity;
    let scope = ChunkScope::OthersThan(running);
    let schema = &ctx.schema.name;
    let claim = match (ctx.checkpoints)
        .claim_chunk(schema, scope, &ctx.claimant, validity)
        .await
    {
        Ok(Some(claim)) => claim,
        Ok(None) => return false,
        Err(e) => {
            warn!(error = %mask_secrets(&e.to_string()), "could not look for chunks to copy for other replicas");
            return false;
        }
    };
    let key = TableKey {
        schema: schema.clone(),
        table: claim.table.clone(),
    };
    let copied = tokio::select! {
        copied = copy(ctx, &claim, ready) => copied,
        () = shutdown.cancelled() => Err(Error::Cancelled),
    };
    let owner_only = match copied {
        Ok(Some(rows)) => {
            info!(table = %claim.table, chunk = claim.index, rows, "chunk copied for the table's owner");
            return true;
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
    // Handed back at once rather than left to lapse.
    let released = (ctx.checkpoints)
        .release_chunk(&key, claim.index, claim.claim, owner_only)
        .await;
    if let Err(e) = released {
        warn!(error = %mask_secrets(&e.to_string()), "claim not handed back; it lapses");
    }
    false
}

/// Copies the claimed chunk in the owner's shape; its rows count, or `None` when it
/// needs the table's shape changed (only its owner does that).
async fn copy(ctx: &Ctx, claim: &ChunkClaim, ready: &mut HashSet<String>) -> Result<Option<u64>> {
    let shape = claim.shape.clone().ok_or_else(|| Error::Table {
        table: claim.table.clone(),
        message: "a shared chunk without the shape of its plan".into(),
        hint: None,
    })?;
    let settings = ctx.schema.table(&claim.table);
    let target = Target::new(&ctx.schema, &shape.id).landing(ctx.source.landing_version());
    let projection = Projection::new(shape, settings.exclude_columns.clone());
    if !ready.contains(&claim.table) {
        // The owner created the landing table in this very shape: this only registers it
        // with this replica's sink.
        (ctx.sink)
            .ensure_table(&target, &projection.destination_schema())
            .await?;
        ready.insert(claim.table.clone());
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
