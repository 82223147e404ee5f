//! `cartridge-warp dlq list|replay|discard` against the destination's dead letters.

use warp_core::config::WarpConfig;
use warp_core::{DeadLetter, ReplayReport, TableId, Target};

pub use warp_core::DeadLetterFilter as DlqFilter;

use crate::connectors::build_sink;
use crate::error::ServerError;

pub async fn list(config: &WarpConfig, filter: &DlqFilter) -> Result<Vec<DeadLetter>, ServerError> {
    let control = build_sink(&config.destination)?.control;
    Ok(control.dead_letters(filter).await?)
}

pub async fn discard(config: &WarpConfig, filter: &DlqFilter) -> Result<u64, ServerError> {
    let control = build_sink(&config.destination)?.control;
    Ok(control.discard_dead_letters(filter).await?)
}

pub async fn replay(config: &WarpConfig, filter: &DlqFilter) -> Result<ReplayReport, ServerError> {
    // The schemas this configuration runs decide where their tables land.
    let all = config.schemas_to_run(None);
    let target = |schema: &str, table: &str| {
        all.iter()
            .find(|s| s.name == schema)
            .map(|s| Target::new(s, &TableId::new(&s.source_database, table)))
    };
    let control = build_sink(&config.destination)?.control;
    Ok(control.replay_dead_letters(filter, &target).await?)
}
