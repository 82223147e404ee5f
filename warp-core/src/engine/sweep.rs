//! The end of a copy over a landing table that already held rows (a resync, a copy after
//! a lost log position): the copy writes every row the source has, but rows the source
//! deleted without the stream seeing it (its log purged while stopped, a partition
//! dropped, an `INCIDENT`) would stay. The landing table's live keys are walked a page at
//! a time and those the source no longer holds are deleted with the hand-over to
//! streaming (docs/guarantees.md, "Re-copies").

use std::collections::BTreeSet;

use tracing::info;

use super::table::TableWorker;
use super::OrdKey;
use crate::error::{Error, Result};
use crate::event::{Change, ChangeEvent, Operation};
use crate::sink::SinkTransaction;
use crate::value::Key;

/// Destination keys per look-up at the source.
const PAGE: usize = 1_000;

impl TableWorker {
    /// Deletes, in `tx`, the landing rows whose keys the source does not hold now, a page
    /// at a time: memory holds one page whatever the number of rows removed.
    pub(super) async fn sweep(&self, tx: &mut dyn SinkTransaction) -> Result<()> {
        let destination = self.projection.destination_schema();
        let source = self.projection.source_schema();
        // Sources that cannot look keys up (polled warehouses) list them all, once.
        let mut listed: Option<BTreeSet<OrdKey>> = None;
        let (mut walked, mut removed) = (0usize, 0usize);
        let mut after: Option<Key> = None;
        loop {
            let page = (self.ctx.sink)
                .live_key_page(&self.target, &destination, after.as_ref(), PAGE)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            walked += page.len();
            let held: BTreeSet<OrdKey> = match self
                .ctx
                .source
                .existing_keys(source, &self.read, &page)
                .await?
            {
                Some(held) => held.into_iter().map(OrdKey).collect(),
                None => {
                    let all = match listed.take() {
                        Some(all) => all,
                        None => self.listed_at_source().await?,
                    };
                    let held = page
                        .iter()
                        .filter(|k| all.contains(&OrdKey((*k).clone())))
                        .map(|k| OrdKey(k.clone()))
                        .collect();
                    listed = Some(all);
                    held
                }
            };
            let gone: Vec<Change> = page
                .into_iter()
                .filter(|k| !held.contains(&OrdKey(k.clone())))
                .map(|key| {
                    Change::Row(ChangeEvent {
                        op: Operation::Delete,
                        key,
                        before: None,
                        after: None,
                        source_ts: None,
                    })
                })
                .collect();
            removed += gone.len();
            tx.apply(gone).await?;
            after = Some(last);
        }
        info!(
            walked,
            removed, "re-copy done: landing rows the source no longer has are removed"
        );
        Ok(())
    }

    async fn listed_at_source(&self) -> Result<BTreeSet<OrdKey>> {
        let keys = (self.ctx.source)
            .live_keys(self.projection.source_schema(), &self.read)
            .await?
            .ok_or_else(|| {
                Error::source_permanent(
                    "this source can neither look keys up nor list them: a re-copy cannot find the rows it deleted",
                    Some("empty the landing table (or drop it), then resync".to_owned()),
                )
            })?;
        Ok(keys.into_iter().map(OrdKey).collect())
    }

    /// Whether the landing table holds a live row (a copy over it is a re-copy).
    pub(super) async fn holds_rows(&self) -> Result<bool> {
        let first = (self.ctx.sink)
            .live_key_page(&self.target, &self.projection.destination_schema(), None, 1)
            .await?;
        Ok(!first.is_empty())
    }
}
