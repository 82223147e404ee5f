//! Foreign-key actions that reach a table through others (a chain): the rows they act
//! on are found through the middle tables' landing tables, including the rows deleted
//! there by the same source transaction. So each middle table must keep deleted rows
//! (soft deletes) and must have committed that transaction first: the table waits for
//! it, never skipping the action.

use std::cmp::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::table::TableWorker;
use crate::config::DeletionStrategy;
use crate::error::{Error, Result};
use crate::event::{Cascade, Change};
use crate::position::Position;
use crate::schema::TableId;
use crate::sink::{Phase, Target};

/// Longest pause between two looks at a middle table's checkpoint.
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl TableWorker {
    /// Fills in where each middle table of the chained actions in `changes` lands, and
    /// waits until each has committed `position` (the actions' transaction).
    pub(super) async fn resolve_chains(
        &self,
        changes: &mut [Change],
        position: &Position,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut waits: Vec<Target> = Vec::new();
        for change in changes.iter_mut() {
            let Change::Cascade(c) = change else {
                continue;
            };
            let middles = self.middle_tables(c)?;
            for (hop, target) in c.via.iter_mut().zip(middles) {
                hop.landed = Some((target.destination_schema.clone(), target.table.clone()));
                // A transaction deleting many parents carries an action per parent.
                if !waits.iter().any(|w| w.key() == target.key()) {
                    waits.push(target);
                }
            }
        }
        for target in &waits {
            self.wait_until_applied(target, position, shutdown).await?;
        }
        Ok(())
    }

    /// Where each middle table lands; an error naming what to change when one cannot
    /// show the rows the action went through.
    fn middle_tables(&self, c: &Cascade) -> Result<Vec<Target>> {
        let schema = &self.ctx.schema;
        c.via
            .iter()
            .map(|hop| {
                let problem = if !schema.filter.includes(&hop.table) {
                    Some(format!("{} is not replicated", hop.table))
                } else if schema.table(&hop.table).deletion_strategy == DeletionStrategy::Hard {
                    Some(format!(
                        "{} deletes rows for good (deletion_strategy: hard), so the rows deleted \
                         there cannot be followed",
                        hop.table
                    ))
                } else {
                    let excluded = &schema.table(&hop.table).exclude_columns;
                    hop.columns
                        .iter()
                        .chain(&hop.referenced)
                        .find(|col| excluded.contains(col))
                        .map(|col| format!("{}.{col} is excluded", hop.table))
                };
                if let Some(problem) = problem {
                    return Err(Error::Table {
                        table: self.key.to_string(),
                        message: format!(
                            "foreign key {}: rows deleted at the source through {} cannot be found: {problem}",
                            c.constraint, hop.table
                        ),
                        hint: Some(format!(
                            "replicate {} with deletion_strategy: soft and every referencing column, then resync {}",
                            hop.table, self.key.table
                        )),
                    });
                }
                let id = TableId::new(&self.target.source.database, &hop.table);
                Ok(Target::new(schema, &id))
            })
            .collect()
    }

    /// Waits until `middle` has committed `position`; it may be behind, copying, or
    /// owned by another replica (its checkpoint is shared).
    async fn wait_until_applied(
        &self,
        middle: &Target,
        position: &Position,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let mut pause = Duration::from_millis(20);
        let mut told = false;
        loop {
            let checkpoint = self.ctx.checkpoints.load(&middle.key()).await?;
            if let Some(Phase::Streaming { position: at, .. }) = checkpoint.map(|c| c.phase) {
                if self.ctx.source.compare_positions(&at, position)? != Ordering::Less {
                    return Ok(());
                }
            }
            if !told {
                info!(middle = %middle.key(), "a chained foreign-key action waits for the middle table to apply its transaction");
                told = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
