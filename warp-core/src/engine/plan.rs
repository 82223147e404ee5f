//! `run --dry-run`: connect, discover, and describe what would happen, writing nothing.

use super::Pipeline;
use crate::error::Result;
use crate::sink::Target;

/// What the pipeline would do with one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    pub estimated_rows: Option<u64>,
    /// Snapshot first (`full_load_enabled`), else stream from the current position.
    pub snapshot: bool,
    pub snapshot_chunk_size: usize,
    pub parallel_streams: usize,
    /// DDL the destination would run; empty when the table is already in shape.
    pub ddl: Vec<String>,
    /// Why the table cannot replicate as configured.
    pub problem: Option<String>,
    /// What the source adds (BigQuery: bytes the queries would process).
    pub notes: Vec<String>,
}

impl Pipeline {
    /// Reads the source and destination catalogs and describes the run, writing nothing
    /// (not even the metadata schema).
    pub async fn plan(&self) -> Result<Vec<TablePlan>> {
        self.ctx.source.check().await?;
        let tables = self.ctx.source.discover(&self.schema).await?;
        let mut plans = Vec::new();
        for mut table in tables
            .into_iter()
            .filter(|t| self.schema.filter.includes(&t.id.name))
        {
            let settings = self.schema.table(&table.id.name);
            if let Some(pk) = &settings.primary_key {
                table.primary_key.clone_from(pk);
            }
            let mut problem = table.key_indexes().err().map(|e| e.to_string());
            let ddl = match problem {
                None => {
                    let target = Target::new(&self.schema, &table.id);
                    let shaped = super::projection::Projection::new(
                        table.clone(),
                        settings.exclude_columns.clone(),
                    );
                    // A table the destination refuses (a column named like a bookkeeping
                    // column, names that shorten alike) is this table's problem, said with
                    // the key to set; the others are still planned.
                    match self
                        .ctx
                        .sink
                        .plan_table(&target, &shaped.destination_schema())
                        .await
                    {
                        Ok(ddl) => ddl,
                        Err(e) if !e.is_transient() => {
                            problem = Some(e.to_string());
                            Vec::new()
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(_) => Vec::new(),
            };
            let mut notes = match problem {
                None => self
                    .ctx
                    .source
                    .plan_notes(
                        &table,
                        &settings.read_settings(),
                        settings.full_load_enabled,
                    )
                    .await
                    .unwrap_or_else(|e| vec![format!("no estimate: {e}")]),
                Some(_) => Vec::new(),
            };
            // As the run does: a configured size needs no estimate, a failed one leaves the
            // default size (said here, as the run's log says it).
            let width = match settings.snapshot_chunk_size {
                Some(_) => None,
                None => self
                    .ctx
                    .source
                    .estimate_row_bytes(&table)
                    .await
                    .unwrap_or_else(|e| {
                        notes.push(format!(
                            "no row-size estimate, default chunk size: {}",
                            crate::mask::mask_secrets(&e.to_string())
                        ));
                        None
                    }),
            };
            plans.push(TablePlan {
                table: table.id.name.clone(),
                estimated_rows: self.ctx.source.estimate_rows(&table).await?,
                snapshot: settings.full_load_enabled,
                snapshot_chunk_size: settings.chunk_rows(width),
                parallel_streams: settings.parallel_streams,
                ddl,
                problem,
                notes,
            });
        }
        Ok(plans)
    }
}
