//! Which of a schema's tables this replica runs (docs/deploy.md, Scaling out). Every lease interval the
//! replica renews its membership and its leases, then moves towards its fair share:
//! surplus tables are drained and handed back, missing ones are taken from the free or
//! lapsed leases. On shutdown the drained tables are handed back at once, so a rolling
//! update moves them without waiting for the leases to lapse.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::table::TableWorker;
use super::Ctx;
use crate::config::{ResolvedSchema, ResolvedTable};
use crate::control::TableState;
use crate::error::Result;
use crate::lease::fair_share;
use crate::mask::mask_secrets;
use crate::metrics::LEASES_HELD;
use crate::schema::TableSchema;
use crate::sink::{TableKey, Target};

/// A table this schema replicates, whichever replica runs it.
pub(super) struct Candidate {
    pub target: Target,
    pub settings: ResolvedTable,
    /// As discovered, with its key resolved.
    pub schema: TableSchema,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub(super) struct Ownership {
    ctx: Arc<Ctx>,
    schema: String,
    /// The schema's settings: which tables it selects and how each replicates.
    resolved: ResolvedSchema,
    candidates: BTreeMap<String, Candidate>,
    running: BTreeMap<String, Running>,
}

impl Ownership {
    pub fn new(ctx: Arc<Ctx>, resolved: ResolvedSchema, candidates: Vec<Candidate>) -> Self {
        let candidates = candidates
            .into_iter()
            .map(|c| (c.target.source.name.clone(), c))
            .collect();
        Self {
            ctx,
            schema: resolved.name.clone(),
            resolved,
            candidates,
            running: BTreeMap::new(),
        }
    }

    fn key(&self, table: &str) -> TableKey {
        TableKey {
            schema: self.schema.clone(),
            table: table.to_owned(),
        }
    }

    /// Balances until `shutdown`, then drains this replica's tables and hands them back.
    pub async fn run(mut self, shutdown: &CancellationToken) {
        let interval = self.ctx.settings.leases.interval;
        let mut last_discovery = tokio::time::Instant::now();
        loop {
            self.reap();
            let due = self
                .ctx
                .settings
                .discovery_interval
                .is_some_and(|every| last_discovery.elapsed() >= every);
            if due {
                last_discovery = tokio::time::Instant::now();
                if let Err(e) = self.rediscover().await {
                    warn!(error = %mask_secrets(&e.to_string()), "tables not listed again; retrying");
                }
            }
            if let Err(e) = self.balance(shutdown).await {
                // Running tables keep going: a lease that lapses meanwhile is fenced off.
                warn!(error = %mask_secrets(&e.to_string()), "table leases not renewed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
        // Workers stop with `shutdown` (their tokens are its children): wait for the drain.
        for (_, running) in std::mem::take(&mut self.running) {
            let _ = running.task.await;
        }
        self.hand_back().await;
    }

    /// Tables created at the source since the last round become candidates (snapshot,
    /// then stream, on whichever replica takes them); tables gone from the source are no
    /// longer taken (a running one stops on its own, with the reason, when its change
    /// stream reports the drop).
    async fn rediscover(&mut self) -> Result<()> {
        let tables = self.ctx.source.discover(&self.resolved).await?;
        let selected: Vec<TableSchema> = tables
            .into_iter()
            .filter(|t| self.resolved.filter.includes(&t.id.name))
            .collect();
        let names: BTreeSet<String> = selected.iter().map(|t| t.id.name.clone()).collect();
        let gone: Vec<String> = self
            .candidates
            .keys()
            .filter(|t| !names.contains(*t) && !self.running.contains_key(*t))
            .cloned()
            .collect();
        for table in gone {
            info!(table, "table no longer exists at the source");
            self.candidates.remove(&table);
        }
        let new: Vec<TableSchema> = selected
            .into_iter()
            .filter(|t| !self.candidates.contains_key(&t.id.name))
            .filter(|t| {
                // A table that cannot replicate was reported at its first discovery.
                self.ctx
                    .status
                    .get(&self.key(&t.id.name))
                    .is_none_or(|s| s.state != TableState::Failed)
            })
            .collect();
        for c in super::candidates(&self.ctx, &self.resolved, new) {
            info!(table = %c.target.source.name, "new table discovered at the source");
            self.candidates.insert(c.target.source.name.clone(), c);
        }
        Ok(())
    }

    /// One round: membership, renewal, then give back or take towards the fair share.
    async fn balance(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let store = Arc::clone(&self.ctx.checkpoints);
        let (me, validity) = (
            self.ctx.settings.owner.clone(),
            self.ctx.settings.leases.validity,
        );
        let members = store.join(&self.schema, &me, validity).await?;
        // A chunk this replica is copying stays its own for as long as it lives.
        store
            .renew_claims(&self.schema, &self.ctx.claimant, validity)
            .await?;
        let mut held: BTreeSet<String> = store
            .renew(&self.schema, &me, validity)
            .await?
            .into_iter()
            .filter(|t| self.candidates.contains_key(t))
            .collect();
        let lost: Vec<String> = self
            .running
            .keys()
            .filter(|t| !held.contains(*t))
            .cloned()
            .collect();
        for table in lost {
            warn!(
                table,
                "lease lost to another replica; stopping the table here"
            );
            self.stop(&table).await;
        }
        let rank = members.iter().position(|m| *m == me);
        let replicas = members.len() + usize::from(rank.is_none());
        let share = fair_share(
            self.candidates.len(),
            replicas,
            rank.unwrap_or(members.len()),
        );
        if held.len() > share {
            let surplus: Vec<String> = held
                .iter()
                .rev()
                .take(held.len() - share)
                .cloned()
                .collect();
            for table in surplus {
                info!(
                    table,
                    share, replicas, "handing the table to another replica"
                );
                self.stop(&table).await;
                store.release(&self.key(&table), &me).await?;
                held.remove(&table);
            }
        } else if held.len() < share {
            let taken: BTreeSet<String> = store
                .leases(&self.schema)
                .await?
                .into_iter()
                .filter(|l| l.live && l.owner != me)
                .map(|l| l.table)
                .collect();
            let free: Vec<String> = self
                .candidates
                .keys()
                .filter(|t| !held.contains(*t) && !taken.contains(*t))
                .cloned()
                .collect();
            for table in free {
                if held.len() >= share {
                    break;
                }
                if store
                    .acquire(&self.key(&table), &me, validity)
                    .await?
                    .is_some()
                {
                    info!(table, share, replicas, "table lease acquired");
                    held.insert(table);
                }
            }
        }
        for table in held {
            if !self.running.contains_key(&table) {
                self.start(&table, shutdown);
            }
        }
        metrics::gauge!(LEASES_HELD, "schema" => self.schema.clone())
            .set(self.running.len() as f64);
        Ok(())
    }

    fn start(&mut self, table: &str, shutdown: &CancellationToken) {
        let Some(c) = self.candidates.get(table) else {
            return;
        };
        let key = c.target.key();
        let worker = TableWorker::new(
            Arc::clone(&self.ctx),
            c.target.clone(),
            c.settings.clone(),
            c.schema.clone(),
        );
        self.ctx.status.set_state(&key, TableState::Pending);
        let stop = shutdown.child_token();
        let span = tracing::info_span!("table", table = %key.table);
        let task = tokio::spawn(worker.run(stop.clone()).instrument(span));
        self.running
            .insert(table.to_owned(), Running { stop, task });
    }

    /// Drains `table`'s worker (its batch in hand commits, or is fenced off) and forgets
    /// it here. A worker that does not drain within a lease interval (a long chunk read,
    /// say) is abandoned, its uncommitted work rolled back: the round must go on, or this
    /// replica's other leases would lapse meanwhile.
    async fn stop(&mut self, table: &str) {
        if let Some(running) = self.running.remove(table) {
            running.stop.cancel();
            let mut task = running.task;
            let patience = self.ctx.settings.leases.interval;
            if tokio::time::timeout(patience, &mut task).await.is_err() {
                warn!(table, "the table did not drain in time; its batch in hand is dropped (the next owner resumes from the checkpoint)");
                task.abort();
                let _ = task.await;
            }
        }
        self.forget(table);
    }

    fn forget(&self, table: &str) {
        self.ctx.status.remove(&self.key(table));
        self.ctx
            .controls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(table);
    }

    /// Workers that ended on their own stopped because their lease was taken.
    fn reap(&mut self) {
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        for table in ended {
            self.running.remove(&table);
            self.forget(&table);
        }
    }

    async fn hand_back(&self) {
        let store = &self.ctx.checkpoints;
        let me = &self.ctx.settings.owner;
        let held = match store
            .renew(&self.schema, me, self.ctx.settings.leases.validity)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %mask_secrets(&e.to_string()), "leases not handed back; they lapse after lease_ttl");
                return;
            }
        };
        for table in &held {
            if let Err(e) = store.release(&self.key(table), me).await {
                warn!(table, error = %mask_secrets(&e.to_string()), "lease not handed back");
            }
        }
        if let Err(e) = store.leave(&self.schema, me).await {
            warn!(error = %mask_secrets(&e.to_string()), "membership not withdrawn");
        }
        metrics::gauge!(LEASES_HELD, "schema" => self.schema.clone()).set(0.0);
        info!(tables = held.len(), "table leases handed back");
    }
}
