//! `Source` for BigQuery: a dataset's tables copied by paged queries over key ranges,
//! then kept current by polling `change_detection_column`, with optional delete
//! detection by key-set comparison. Every query's bytes processed is counted.

mod client;
mod error;
mod lookback;
mod metadata;
mod options;
mod poll;
mod query;
mod snapshot;
mod table;
mod types;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::BoxStream;
use gcp_bigquery_client::table::ListOptions;
use tokio::sync::OnceCell;
use tracing::info;
use warp_core::config::{ResolvedSchema, SourceConfig};
use warp_core::{
    ChunkRead, Error, Key, KeyRange, Position, ReadSettings, SnapshotPlan, Source, StreamFragment,
    TableId, TableReads, TableSchema, Watermark,
};

pub use error::BigQueryError;
pub use options::BigQueryOptions;

use error::Context;
use query::{quote, Query, Runner};
use table::BqTable;

/// Creates the source for one schema.
pub fn build(
    options: BigQueryOptions,
    schema: &ResolvedSchema,
) -> warp_core::Result<std::sync::Arc<dyn Source>> {
    Ok(std::sync::Arc::new(BigQuerySource::with_options(
        options, schema,
    )))
}

pub struct BigQuerySource {
    config: BigQueryOptions,
    project: String,
    /// The schema's name (job labels), its dataset and how long one read may wait.
    schema: String,
    dataset: String,
    read_timeout: std::time::Duration,
    /// Connected on first use (credentials are fetched asynchronously).
    runner: OnceCell<Runner>,
    tables: Mutex<HashMap<String, BqTable>>,
}

impl BigQuerySource {
    /// The source with the options of the `source` section.
    pub fn new(source: &SourceConfig, schema: &ResolvedSchema) -> warp_core::Result<Self> {
        Ok(Self::with_options(source.connector_or_error()?, schema))
    }

    pub fn with_options(options: BigQueryOptions, schema: &ResolvedSchema) -> Self {
        Self {
            project: options.project_id.clone(),
            config: options,
            schema: schema.name.clone(),
            dataset: schema.source_database.clone(),
            read_timeout: schema.read_timeout,
            runner: OnceCell::new(),
            tables: Mutex::new(HashMap::new()),
        }
    }

    async fn runner(&self) -> warp_core::Result<&Runner> {
        Ok(self
            .runner
            .get_or_try_init(|| async {
                let connection = client::connect(&self.config, self.read_timeout).await?;
                Ok::<_, BigQueryError>(Runner {
                    client: connection.client,
                    api: connection.api,
                    project: self.project.clone(),
                    schema: self.schema.clone(),
                    wait_ms: i32::try_from(self.read_timeout.as_millis()).unwrap_or(i32::MAX),
                    maximum_bytes_billed: self.config.maximum_bytes_billed.map(|b| b.0),
                    processed: Default::default(),
                })
            })
            .await?)
    }

    fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The table as discovered, seen through the engine's view.
    fn cached(&self, view: &TableSchema) -> warp_core::Result<BqTable> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let found = tables.get(&view.id.name).ok_or_else(|| {
            Error::source_transient(format!("{} has not been discovered yet", view.id))
        })?;
        Ok(found.aligned(view))
    }

    async fn watermark(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> warp_core::Result<Position> {
        let t = self.cached(table)?;
        let column = read.change_column(&table.id)?;
        poll::current(self.runner().await?, &t, column)
            .await?
            .encode()
    }

    /// How the full load of `t` is read: its row count matters only when it is clustered
    /// on its key (the metadata's, or `COUNT(*)`, which BigQuery answers from metadata
    /// without billing).
    async fn load_shape(
        &self,
        view: &TableSchema,
        t: &BqTable,
        chunk_rows: usize,
    ) -> warp_core::Result<snapshot::LoadShape> {
        let rows = match t.clustered_by {
            None => 0,
            Some(_) => match self.estimate_rows(view).await?.filter(|n| *n > 0) {
                Some(n) => n,
                None => {
                    let sql = format!("SELECT COUNT(*) {}", t.scan_where::<&str>(&[]));
                    let cells = self
                        .runner()
                        .await?
                        .all(Query::new(&view.id.name, sql))
                        .await?;
                    cells
                        .first()
                        .and_then(|c| c.first())
                        .and_then(|v| v.as_str()?.parse().ok())
                        .unwrap_or(0)
                }
            },
        };
        Ok(snapshot::LoadShape::of(t, rows, t.bytes, chunk_rows))
    }

    /// Primary keys declared as table constraints (real BigQuery); emulators without
    /// INFORMATION_SCHEMA give none, and the table's `primary_key` setting is used.
    async fn declared_keys(&self) -> warp_core::Result<HashMap<String, Vec<String>>> {
        let sql = format!(
            "SELECT table_name, column_name FROM {}.INFORMATION_SCHEMA.KEY_COLUMN_USAGE \
             WHERE ENDS_WITH(constraint_name, '.pk$') ORDER BY table_name, ordinal_position",
            quote(&format!("{}.{}", self.project, self.dataset()))
        );
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        match self.runner().await?.all(Query::new("", sql)).await {
            Ok(rows) => {
                for r in rows {
                    if let (Some(t), Some(c)) = (
                        r.first().and_then(|v| v.as_str()),
                        r.get(1).and_then(|v| v.as_str()),
                    ) {
                        keys.entry(t.to_owned()).or_default().push(c.to_owned());
                    }
                }
            }
            Err(e) => {
                info!(error = %e, "no primary-key constraints readable; using primary_key settings")
            }
        }
        Ok(keys)
    }
}

#[async_trait]
impl Source for BigQuerySource {
    async fn check(&self) -> warp_core::Result<warp_core::ConnectionSecurity> {
        let runner = self.runner().await?;
        runner
            .client
            .dataset()
            .get(&self.project, self.dataset())
            .await
            .context("read the dataset")?;
        Ok(client::security(self.config.endpoint.as_deref()))
    }

    async fn discover(&self, _reads: &dyn TableReads) -> warp_core::Result<Vec<TableSchema>> {
        let runner = self.runner().await?;
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut options = ListOptions::default().max_results(1_000);
            if let Some(token) = page.take() {
                options = options.page_token(token);
            }
            let list = runner
                .client
                .table()
                .list(&self.project, self.dataset(), options)
                .await
                .context("list tables")?;
            for t in list.tables.unwrap_or_default() {
                // Views and external tables have no stable rows to copy.
                if t.r#type.as_deref().is_none_or(|ty| ty == "TABLE") {
                    names.push(t.table_reference.table_id);
                }
            }
            match list.next_page_token {
                Some(token) => page = Some(token),
                None => break,
            }
        }
        names.sort();
        let keys = self.declared_keys().await?;
        let mut found = HashMap::new();
        for name in names {
            let described =
                metadata::describe(&runner.api, &self.project, self.dataset(), &name).await?;
            for (column, kind) in &described.as_json {
                info!(table = %name, column = %column, kind = %kind, "read as JSON (TO_JSON_STRING)");
            }
            let id = TableId::new(self.dataset(), &name);
            let key = keys.get(&name).cloned().unwrap_or_default();
            found.insert(name, BqTable::new(&self.project, id, described, key));
        }
        let mut schemas: Vec<TableSchema> = found.values().map(|t| t.schema.clone()).collect();
        schemas.sort_by(|a, b| a.id.cmp(&b.id));
        *self.tables.lock().unwrap_or_else(PoisonError::into_inner) = found;
        Ok(schemas)
    }

    async fn plan_snapshot(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk_rows: usize,
    ) -> warp_core::Result<SnapshotPlan> {
        // The watermark first: rows changed during the copy are polled again after it.
        let start = self.watermark(table, read).await?;
        let t = self.cached(table)?;
        let shape = self.load_shape(table, &t, chunk_rows).await?;
        let chunks = snapshot::plan(self.runner().await?, &t, shape).await?;
        Ok(SnapshotPlan { start, chunks })
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk: &KeyRange,
    ) -> warp_core::Result<ChunkRead> {
        let t = self.cached(table)?;
        let column = read.change_column(&table.id)?;
        let at = poll::current(self.runner().await?, &t, column).await?;
        let page = read.rows(snapshot::PAGE_ROWS);
        // The rows at the position's value are left to the polls.
        let only = Some(poll::older_than(column, &at));
        let rows = snapshot::read(self.runner().await?, &t, chunk, only, page)?;
        let position = at.encode()?;
        Ok(ChunkRead { position, rows })
    }

    async fn current_position(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> warp_core::Result<Position> {
        self.watermark(table, read).await
    }

    async fn stream(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
        let t = self.cached(table)?;
        Ok(poll::stream(
            &self.project,
            self.runner().await?.clone(),
            t,
            read.change_column(&table.id)?,
            Watermark::decode(from)?,
            read.pace(poll::PAGE),
            self.config.lookback.map(|s| s.as_duration()),
        )?)
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> warp_core::Result<Ordering> {
        Watermark::compare(a, b)
    }

    fn bytes_processed(&self, table: &str) -> Option<u64> {
        Some(self.runner.get().map_or(0, |r| r.processed(table)))
    }

    async fn estimate_rows(&self, table: &TableSchema) -> warp_core::Result<Option<u64>> {
        let runner = self.runner().await?;
        let described =
            metadata::describe(&runner.api, &self.project, self.dataset(), &table.id.name).await?;
        Ok(described.table.num_rows.and_then(|n| n.parse().ok()))
    }

    async fn live_keys(
        &self,
        table: &TableSchema,
        _read: &ReadSettings,
    ) -> warp_core::Result<Option<Vec<Key>>> {
        let t = self.cached(table)?;
        let sql = format!("SELECT {} {}", t.key_list(), t.scan_where::<&str>(&[]));
        let rows = self
            .runner()
            .await?
            .all(Query::new(&table.id.name, sql))
            .await?;
        Ok(Some(rows.iter().map(|r| t.key(r)).collect()))
    }

    async fn plan_notes(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        snapshot: bool,
    ) -> warp_core::Result<Vec<String>> {
        let t = self.cached(table)?;
        let runner = self.runner().await?;
        let scan = |sql: String| runner.dry_run(Query::new(&table.id.name, sql));
        let mut notes = Vec::new();
        if snapshot {
            let bytes = scan(format!(
                "SELECT {} {}",
                t.select_list(),
                t.scan_where::<&str>(&[])
            ))
            .await?;
            // The range count of a clustered load follows the chunk size the engine picks
            // (at most the default); its cost does not.
            let chunk = warp_core::config::DEFAULT_SNAPSHOT_CHUNK_SIZE as usize;
            let shape = self.load_shape(table, &t, chunk).await?;
            notes.push(shape.cost(bytes));
        }
        let column = read.change_column(&table.id)?;
        let bytes = scan(format!(
            "SELECT {} {}",
            t.select_list(),
            t.scan_where(&[format!("{} IS NOT NULL", quote(column))])
        ))
        .await?;
        notes.push(format!(
            "each poll processes up to ~{bytes} bytes (less where the table is partitioned or clustered on {column})"
        ));
        let ty = t
            .schema
            .column_index(column)
            .map(|i| &t.schema.columns[i].column_type);
        notes.push(
            match ty.and_then(|ty| lookback::lookback_for(self.config.lookback.map(|s| s.as_duration()), ty)) {
                Some(span) => format!(
                    "late commits: each poll reads again the rows of the {} s below its position (source.lookback)",
                    span.as_secs()
                ),
                None => format!(
                    "late commits: none read again (source.lookback is off or {column} is not a TIMESTAMP, DATETIME or DATE): rows a DML job commits after a poll passed their {column} are missed"
                ),
            },
        );
        if read.delete_detection {
            let bytes = scan(format!(
                "SELECT {} {}",
                t.key_list(),
                t.scan_where::<&str>(&[])
            ))
            .await?;
            notes.push(format!(
                "each delete-detection pass processes ~{bytes} bytes"
            ));
        }
        Ok(notes)
    }
}
