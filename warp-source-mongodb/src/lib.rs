//! `Source` for MongoDB: collections land as tables whose shape is inferred from the
//! documents (sampled at discovery, grown by every later document), snapshots by `_id`
//! ranges, then one database-level change stream per replica for all its collections — or
//! `timestamp` polling where change streams are unavailable.

mod changes;
mod client;
mod collections;
mod convert;
mod error;
mod ids;
mod options;
mod poll;
mod position;
mod retention;
mod shape;
mod snapshot;
mod split;

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bson::{doc, Document};
use futures::stream::{BoxStream, TryStreamExt};
use mongodb::options::ConnectionString;
use mongodb::{Collection, Database};
use tokio::sync::OnceCell;
use warp_core::config::{ResolvedSchema, SourceConfig};
use warp_core::{
    mask_secrets, ChangeStrategy, ChunkRead, Error, FeedItem, FeedTable, Key, KeyRange,
    LandingVersion, Position, ReadSettings, SnapshotPlan, Source, StreamFragment, TableId,
    TableReads, TableSchema, Value, Watermark,
};

pub use error::MongoError;
pub use ids::IdForm;
pub use options::{MongoOptions, ReadPreference, UuidRepresentation};
pub use position::StreamPosition;

use error::Context;
use shape::Rules;

/// Documents sampled per collection at discovery (later documents still grow the shape).
const SAMPLE_DOCS: i64 = 1_000;
/// How often an idle change stream reports its advancing resume token.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Creates the source for one schema.
pub fn build(
    source: &SourceConfig,
    options: MongoOptions,
    schema: &ResolvedSchema,
) -> warp_core::Result<std::sync::Arc<dyn Source>> {
    Ok(std::sync::Arc::new(MongoSource::with_options(
        source, options, schema,
    )?))
}

pub struct MongoSource {
    config: SourceConfig,
    options: MongoOptions,
    /// Connected on first use (resolving `mongodb+srv://` needs the runtime).
    client: OnceCell<client::Connected>,
    strategy: ChangeStrategy,
    /// The database this schema reads.
    database: String,
    /// The replicated schema's name (metric labels).
    schema_name: String,
    /// Connections the schema can use at once (the pool's size unless configured).
    pool_floor: u32,
    /// Collections discovery has left out and said so (discovery repeats; the log line
    /// does not).
    left_out: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Whether the server splits change events over 16 MB (asked once).
    splits_large_events: OnceCell<bool>,
}

impl MongoSource {
    /// The source with the options of the `source` section.
    pub fn new(source: &SourceConfig, schema: &ResolvedSchema) -> warp_core::Result<Self> {
        Self::with_options(source, source.connector_or_error()?, schema)
    }

    pub fn with_options(
        source: &SourceConfig,
        options: MongoOptions,
        schema: &ResolvedSchema,
    ) -> warp_core::Result<Self> {
        let url = source
            .connection_string
            .as_ref()
            .ok_or_else(|| Error::source_permanent("source.connection_string is required", None))?;
        // Malformed strings fail here, at start-up, not at first use.
        ConnectionString::parse(url.expose()).map_err(|e| {
            let text = e.to_string();
            let hint = text.contains("tlsallowinvalidhostnames").then(|| {
                "cartridge-warp's TLS always checks host names: connect with a name the certificate holds, or use tlsInsecure=true (no verification at all)".to_owned()
            });
            Error::source_permanent(
                format!("source.connection_string: {}", mask_secrets(&text)),
                hint,
            )
        })?;
        Ok(Self {
            config: source.clone(),
            options,
            client: OnceCell::new(),
            strategy: ChangeStrategy::of(source.strategy()),
            database: schema.source_database.clone(),
            schema_name: schema.name.clone(),
            // Parallel chunk reads, the change stream's waiting getMore, a poll.
            pool_floor: u32::try_from(schema.max_parallel_streams.saturating_add(2))
                .unwrap_or(u32::MAX),
            left_out: std::sync::Mutex::default(),
            splits_large_events: OnceCell::new(),
        })
    }

    /// How change streams are read from this server: whether it splits large events is
    /// asked once (`buildInfo`).
    async fn stream_options(&self) -> warp_core::Result<changes::StreamOptions> {
        let db = self.db().await?;
        let split = *self
            .splits_large_events
            .get_or_try_init(|| async {
                let info = db
                    .run_command(doc! { "buildInfo": 1 })
                    .await
                    .context("buildInfo")?;
                let version = info.get_str("version").unwrap_or_default();
                let split = split::supported(version);
                if !split {
                    tracing::info!(version, "this MongoDB cannot split change events over 16 MB (6.0.9+ and 7.0+ can): such an event stops its table");
                }
                Ok::<_, warp_core::Error>(split)
            })
            .await?;
        Ok(changes::StreamOptions {
            heartbeat: HEARTBEAT,
            split_large_events: split,
        })
    }

    /// Says once per collection why discovery leaves it out.
    fn note_left_out(&self, collection: &str, why: &str, warn: bool) {
        let first = self
            .left_out
            .lock()
            .map(|mut seen| seen.insert(collection.to_owned()))
            .unwrap_or(true);
        if !first || collection.starts_with("system.") {
            return;
        }
        if warn {
            tracing::warn!(collection, "not replicated: {why}");
        } else {
            tracing::info!(collection, "not replicated: {why}");
        }
    }

    async fn db(&self) -> warp_core::Result<Database> {
        let connected = self
            .client
            .get_or_try_init(|| client::connect(&self.config, &self.options, self.pool_floor))
            .await?;
        Ok(connected.client.database(&self.database))
    }

    async fn collection(&self, name: &str) -> warp_core::Result<Collection<Document>> {
        Ok(self.db().await?.collection(name))
    }

    /// Where a stream starts if it starts now.
    async fn now(&self, table: &TableSchema, read: &ReadSettings) -> warp_core::Result<Position> {
        let coll = self.collection(&table.id.name).await?;
        if self.strategy.polls() {
            return poll::current(&coll, read.change_column(&table.id)?)
                .await?
                .encode();
        }
        changes::current_position(&coll).await
    }

    async fn check_prerequisites(&self) -> warp_core::Result<()> {
        let db = self.db().await?;
        db.run_command(doc! { "ping": 1 })
            .await
            .context("connect")?;
        if !self.strategy.polls() {
            // Standalone servers refuse to open a change stream (error 40573).
            db.watch().await.context("open a change stream")?;
        }
        Ok(())
    }

    async fn sample(&self, name: &str, rules: Rules) -> warp_core::Result<TableSchema> {
        let docs: Vec<Document> = self
            .collection(name)
            .await?
            .find(doc! {})
            .limit(SAMPLE_DOCS)
            .await
            .context("sample documents")?
            .try_collect()
            .await
            .context("sample documents")?;
        let id = TableId::new(self.database.clone(), name);
        Ok(rules.infer(id, &docs))
    }
}

#[async_trait]
impl Source for MongoSource {
    async fn check(&self) -> warp_core::Result<warp_core::ConnectionSecurity> {
        self.check_prerequisites().await?;
        let connected = self
            .client
            .get_or_try_init(|| client::connect(&self.config, &self.options, self.pool_floor))
            .await?;
        Ok(connected.security.clone())
    }

    async fn discover(&self, reads: &dyn TableReads) -> warp_core::Result<Vec<TableSchema>> {
        let listed: Vec<collections::Listed> = self
            .db()
            .await?
            .list_collections()
            .await
            .context("list collections")?
            .with_type()
            .try_collect()
            .await
            .context("list collections")?;
        let streams = self.strategy == ChangeStrategy::Feed;
        let mut names = Vec::with_capacity(listed.len());
        for l in listed {
            match collections::left_out(&l, streams) {
                None => names.push(l.name),
                Some((why, warn)) => self.note_left_out(&l.name, why, warn),
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let rules = Rules::of(
                &reads.read_settings(&name),
                self.options.uuid_representation,
            );
            out.push(self.sample(&name, rules).await?);
        }
        Ok(out)
    }

    async fn plan_snapshot(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk_rows: usize,
    ) -> warp_core::Result<SnapshotPlan> {
        // The start comes first: every change from here on replays after the copy.
        let start = self.now(table, read).await?;
        let coll = self.collection(&table.id.name).await?;
        let chunks = snapshot::plan(&coll, chunk_rows.max(1)).await?;
        Ok(SnapshotPlan { start, chunks })
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        chunk: &KeyRange,
    ) -> warp_core::Result<ChunkRead> {
        let coll = self.collection(&table.id.name).await?;
        let page = read.page_rows(snapshot::PAGE_DOCS, self.estimate_row_bytes(table).await?);
        let (position, only, session) = if self.strategy.polls() {
            let column = read.change_column(&table.id)?;
            let at = poll::current(&coll, column).await?;
            (at.encode()?, Some(poll::Older::than(column, &at)), None)
        } else {
            // The chunk's position and its read share a causally consistent session.
            let (at, session) = changes::current_in(&coll).await?;
            (at.encode()?, None, Some(session))
        };
        let rows = snapshot::read(
            &coll,
            Rules::of(read, self.options.uuid_representation),
            table.clone(),
            chunk,
            only,
            page,
            session,
        )
        .await?;
        Ok(ChunkRead { position, rows })
    }

    async fn current_position(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> warp_core::Result<Position> {
        self.now(table, read).await
    }

    async fn stream(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
        let coll = self.collection(&table.id.name).await?;
        let decoder = changes::Decoder::new(
            Rules::of(read, self.options.uuid_representation),
            table.clone(),
        )
        .labelled(&self.schema_name);
        if self.strategy.polls() {
            return Ok(poll::stream(
                coll,
                read.change_column(&table.id)?.to_owned(),
                decoder,
                Watermark::decode(from)?,
                read.pace(poll::PAGE),
            ));
        }
        Ok(changes::stream(
            coll,
            table.id.to_string(),
            decoder,
            StreamPosition::decode(from)?,
            self.stream_options().await?,
        ))
    }

    fn change_strategy(&self) -> ChangeStrategy {
        self.strategy
    }

    async fn open_feed(
        &self,
        tables: &[FeedTable],
        from: &Position,
    ) -> warp_core::Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
        let decoders = tables
            .iter()
            .map(|t| {
                changes::Decoder::new(
                    Rules::of(&t.read, self.options.uuid_representation),
                    t.schema.clone(),
                )
                .labelled(&self.schema_name)
            })
            .collect();
        let watched = changes::Watched::Database {
            db: self.db().await?,
            collections: tables.iter().map(|t| t.schema.id.name.clone()).collect(),
        };
        Ok(changes::feed(
            watched,
            format!("{} change stream", self.database),
            decoders,
            StreamPosition::decode(from)?,
            self.stream_options().await?,
        ))
    }

    async fn log_retention(
        &self,
        needed: &Position,
    ) -> warp_core::Result<Option<warp_core::LogRetention>> {
        if self.strategy.polls() {
            return Ok(None);
        }
        let Some(needed) = retention::cluster_time(&StreamPosition::decode(needed)?) else {
            return Ok(None);
        };
        Ok(retention::oplog_start(self.db().await?.client())
            .await?
            .map(|start| retention::assess(needed, start)))
    }

    /// Tables created now land `_id`s in texts distinct across types.
    fn landing_version(&self) -> LandingVersion {
        ids::DISTINCT_IDS
    }

    fn compare_positions(&self, a: &Position, b: &Position) -> warp_core::Result<Ordering> {
        if self.strategy.polls() {
            return Watermark::compare(a, b);
        }
        a.typed(StreamPosition::decode)?
            .order(&*b.typed(StreamPosition::decode)?)
    }

    async fn estimate_rows(&self, table: &TableSchema) -> warp_core::Result<Option<u64>> {
        let n = self
            .collection(&table.id.name)
            .await?
            .estimated_document_count()
            .await
            .context("count documents")?;
        Ok(Some(n))
    }

    /// `storageStats.avgObjSize` from `$collStats` (uncompressed BSON size). A server that
    /// does not answer it (a user without the `collStats` action, an older or emulated
    /// server) leaves the default chunk and page sizes: the figure only sizes them, so it
    /// is logged at debug, not raised, since every chunk read asks for it.
    async fn estimate_row_bytes(&self, table: &TableSchema) -> warp_core::Result<Option<u64>> {
        let coll = self.collection(&table.id.name).await?;
        let stats = async {
            let cursor = coll
                .aggregate([doc! { "$collStats": { "storageStats": {} } }])
                .await?;
            cursor.try_collect::<Vec<Document>>().await
        };
        Ok(match stats.await {
            Ok(docs) => docs.first().and_then(snapshot::average_size),
            Err(e) => {
                tracing::debug!(error = %e, "no $collStats answer; default snapshot chunk and page sizes");
                None
            }
        })
    }

    async fn existing_keys(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
        keys: &[Key],
    ) -> warp_core::Result<Option<Vec<Key>>> {
        let coll = self.collection(&table.id.name).await?;
        let form = ids::IdForm::of(read.landing);
        Ok(Some(snapshot::existing_keys(&coll, form, keys).await?))
    }

    async fn live_keys(
        &self,
        table: &TableSchema,
        read: &ReadSettings,
    ) -> warp_core::Result<Option<Vec<Key>>> {
        let coll = self.collection(&table.id.name).await?;
        let form = ids::IdForm::of(read.landing);
        Ok(Some(snapshot::all_keys(&coll, form).await?))
    }

    fn chunk_contains(&self, _table: &TableId, chunk: &KeyRange, key: &[Value]) -> bool {
        snapshot::contains(chunk, key)
    }
}
