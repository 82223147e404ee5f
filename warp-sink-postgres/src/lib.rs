//! `Sink` and `CheckpointStore` for PostgreSQL (docs/postgres.md): landing tables, schema
//! evolution, batches committed atomically with their checkpoint under a fencing token,
//! and the metadata schema.

mod apply;
mod binary;
mod cascade;
mod checkpoint;
mod chunk_claims;
mod connection;
mod conninfo;
mod control;
mod ddl;
pub mod dlq;
mod encode;
mod error;
mod ident;
mod landed;
mod landing;
mod lease;
mod migrations;
pub mod read;
pub mod signals;
pub mod status;
mod transaction;
mod types;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use warp_core::config::DestinationConfig;
use warp_core::{
    Checkpoint, CheckpointStore, CheckpointUpdate, ChunkClaim, ChunkScope, Destination,
    FencingToken, KeyRange, LandingVersion, Sink, SinkTransaction, TableKey, TableSchema, Target,
};

pub use error::SinkError;
pub use ident::{fit as fit_identifier, quote as quote_identifier};
pub use landed::BOOKKEEPING;
pub use types::pg_type;

use checkpoint::Checkpoints;
use error::{Context, Result};
use landed::Landed;
use transaction::PgTransaction;

/// A landing table's shapes: as written (landed) and as the source describes it.
#[derive(Debug, Clone)]
pub(crate) struct TableEntry {
    landed: Landed,
    schema: TableSchema,
}

pub(crate) struct Inner {
    pool: PgPool,
    /// What the connection string asks of TLS (for `check`); `None` for a given pool.
    tls: Option<conninfo::TlsPlan>,
    metadata: String,
    checkpoints: Checkpoints,
    tables: Mutex<HashMap<TableKey, TableEntry>>,
}

impl Inner {
    fn remember(&self, key: &TableKey, entry: TableEntry) {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), entry);
    }

    fn entry(&self, key: &TableKey) -> Option<TableEntry> {
        self.tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// The PostgreSQL destination. Cheap to clone.
#[derive(Clone)]
pub struct PostgresSink {
    inner: Arc<Inner>,
}

/// Builds the destination from config: one pool serves data and checkpoints, so a batch
/// and its checkpoint share a transaction.
pub fn build(destination: &DestinationConfig) -> warp_core::Result<Destination> {
    let sink = PostgresSink::connect_lazy(destination)?;
    Ok(Destination {
        sink: Arc::new(sink.clone()),
        checkpoints: Arc::new(sink.clone()),
        control: Arc::new(sink.clone()),
        landed: Arc::new(sink),
    })
}

impl PostgresSink {
    /// Creates the pool without connecting (connections open on first use, so an
    /// unreachable database is retried by the engine rather than failing start-up).
    pub fn connect_lazy(cfg: &DestinationConfig) -> Result<Self> {
        let url = cfg.connection_string.as_ref().ok_or_else(|| {
            SinkError::Invalid("destination.connection_string is required".into())
        })?;
        let info = conninfo::parse(url.expose(), &conninfo::Defaults::from_process())?;
        let mut options = info.options;
        if !info.has_application_name {
            options = options.application_name("cartridge-warp");
        }
        let options = options.options([
            ("client_min_messages", "warning".to_owned()),
            (
                "statement_timeout",
                format!("{}", cfg.command_timeout.as_duration().as_millis()),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}", cfg.transaction_timeout.as_duration().as_millis()),
            ),
        ]);
        let size = u32::try_from(cfg.pool_size.get())
            .unwrap_or(u32::MAX)
            .saturating_add(cfg.max_overflow);
        // libpq's connect_timeout in the string bounds connecting, as in psql; else
        // destination.connection_timeout does (0 there means no limit).
        let acquire = match info.connect_timeout {
            Some(limit) => limit,
            None => Some(cfg.connection_timeout.as_duration()),
        };
        let pool = PgPoolOptions::new()
            .max_connections(size.max(1))
            .acquire_timeout(acquire.unwrap_or(Duration::MAX))
            .connect_lazy_with(options);
        let mut sink = Self::with_pool(pool, &cfg.metadata_schema);
        if let Some(inner) = Arc::get_mut(&mut sink.inner) {
            inner.tls = Some(info.tls);
        }
        Ok(sink)
    }

    /// A sink over an existing pool (tests, embedding).
    pub fn with_pool(pool: PgPool, metadata_schema: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                tls: None,
                metadata: metadata_schema.to_owned(),
                checkpoints: Checkpoints::new(metadata_schema),
                tables: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn metadata_schema(&self) -> &str {
        &self.inner.metadata
    }

    async fn ensure(&self, target: &Target, schema: &TableSchema) -> Result<LandingVersion> {
        let mut landed = Landed::new(target, schema)?;
        let mut tx = self.inner.pool.begin().await.context("begin")?;
        // Tables (of this and other replicas) creating the same schema or table take
        // turns: `CREATE … IF NOT EXISTS` is not safe against concurrent creators.
        for lock in [
            format!("cartridge-warp:schema:{}", landed.schema_ident),
            format!("cartridge-warp:table:{}", landed.table),
        ] {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(lock)
                .execute(&mut *tx)
                .await
                .context("lock table definition")?;
        }
        let existing = ddl::existing_columns(&mut tx, &landed).await?;
        let metadata = &self.inner.metadata;
        let version = if existing.is_some() {
            landing::read(&mut tx, metadata, &landed).await?
        } else {
            // Created below, in this transaction: the table and its version land together.
            landing::record(&mut tx, metadata, &landed, target.landing).await?;
            target.landing
        };
        let statements = ddl::plan(target, &landed, schema, existing.as_deref())?;
        ddl::execute(
            &mut tx,
            &self.inner.metadata,
            target,
            &landed,
            schema,
            &statements,
        )
        .await?;
        // Write with the column types as they are (a column may be wider than the source's).
        if let Some(now) = ddl::existing_columns(&mut tx, &landed).await? {
            for c in &mut landed.columns {
                let pg_name = ddl::unquote(&c.ident);
                if let Some(ty) = now
                    .iter()
                    .find(|e| e.name == pg_name)
                    .and_then(|e| types::parse_pg_type(&e.pg_type))
                {
                    c.ty = ty;
                }
            }
        }
        tx.commit().await.context("commit table definition")?;
        self.inner
            .remember(&target.key(), TableEntry::new(landed, schema.clone()));
        Ok(version)
    }

    async fn plan(&self, target: &Target, schema: &TableSchema) -> Result<Vec<String>> {
        let landed = Landed::new(target, schema)?;
        let mut conn = self.inner.pool.acquire().await.context("connect")?;
        let existing = ddl::existing_columns(&mut conn, &landed).await?;
        Ok(ddl::plan(target, &landed, schema, existing.as_deref())?
            .into_iter()
            .map(|d| d.sql)
            .collect())
    }

    /// How this connection is protected, as the server sees it (`pg_stat_ssl`).
    async fn security(&self) -> Result<warp_core::ConnectionSecurity> {
        let version: Option<String> = sqlx::query_scalar(
            "SELECT CASE WHEN ssl THEN version END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_optional(&self.inner.pool)
        .await
        .context("read connection security")?
        .flatten();
        let verification = match (&version, &self.inner.tls) {
            (Some(_), Some(plan)) => plan.verification(),
            _ => warp_core::Verification::None,
        };
        Ok(warp_core::ConnectionSecurity {
            tls_version: version,
            verification,
        })
    }

    async fn check_privileges(&self) -> Result<()> {
        let can_create: bool = sqlx::query_scalar(
            "SELECT has_database_privilege(current_user, current_database(), 'CREATE')",
        )
        .fetch_one(&self.inner.pool)
        .await
        .context("check privileges")?;
        if can_create {
            Ok(())
        } else {
            Err(SinkError::Invalid(
                "the destination user lacks CREATE on the database (needed for the metadata and target schemas)".into(),
            ))
        }
    }

    async fn open(
        &self,
        target: &Target,
        token: Option<FencingToken>,
    ) -> warp_core::Result<PgTransaction> {
        let key = target.key();
        let entry = self.inner.entry(&key).ok_or_else(|| {
            SinkError::Invalid(format!("{key}: ensure_table must run before writing"))
        })?;
        let mut tx = connection::TxConnection::begin(&self.inner.pool).await?;
        // A claimed chunk's transaction holds no lease: its claim is checked at commit.
        let Some(token) = token else {
            let tx = PgTransaction::new(
                Arc::clone(&self.inner),
                tx,
                target.clone(),
                FencingToken(0),
                entry,
            );
            return Ok(tx.claimed());
        };
        if let Some(current) = self
            .inner
            .checkpoints
            .check_fence(&mut tx, &key, token, false)
            .await?
        {
            return Err(warp_core::Error::Fenced {
                table: key.to_string(),
                ours: token.0,
                current,
            });
        }
        Ok(PgTransaction::new(
            Arc::clone(&self.inner),
            tx,
            target.clone(),
            token,
            entry,
        ))
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn check(&self) -> warp_core::Result<warp_core::ConnectionSecurity> {
        self.check_privileges().await?;
        Ok(self.security().await?)
    }

    async fn prepare(&self) -> warp_core::Result<()> {
        let applied = migrations::migrate(&self.inner.pool, &self.inner.metadata).await?;
        if applied > 0 {
            tracing::info!(applied, schema = %self.inner.metadata, "metadata schema migrated");
        }
        Ok(())
    }

    async fn ensure_table(
        &self,
        target: &Target,
        schema: &TableSchema,
    ) -> warp_core::Result<LandingVersion> {
        Ok(self.ensure(target, schema).await?)
    }

    async fn plan_table(
        &self,
        target: &Target,
        schema: &TableSchema,
    ) -> warp_core::Result<Vec<String>> {
        Ok(self.plan(target, schema).await?)
    }

    async fn live_keys(
        &self,
        target: &Target,
        schema: &TableSchema,
    ) -> warp_core::Result<Vec<warp_core::Key>> {
        Ok(read::live_keys(&self.inner.pool, target, schema).await?)
    }

    async fn live_key_page(
        &self,
        target: &Target,
        schema: &TableSchema,
        after: Option<&warp_core::Key>,
        limit: usize,
    ) -> warp_core::Result<Vec<warp_core::Key>> {
        let page = read::live_key_page(&self.inner.pool, target, schema, after, limit).await?;
        Ok(page.into_iter().map(|(key, _)| key).collect())
    }

    async fn begin(
        &self,
        target: &Target,
        token: FencingToken,
    ) -> warp_core::Result<Box<dyn SinkTransaction>> {
        Ok(Box::new(self.open(target, Some(token)).await?))
    }

    async fn begin_claimed(&self, target: &Target) -> warp_core::Result<Box<dyn SinkTransaction>> {
        Ok(Box::new(self.open(target, None).await?))
    }
}

#[async_trait]
impl CheckpointStore for PostgresSink {
    async fn load(&self, table: &TableKey) -> warp_core::Result<Option<Checkpoint>> {
        Ok(self.inner.checkpoints.load(&self.inner.pool, table).await?)
    }

    async fn save(
        &self,
        table: &TableKey,
        token: FencingToken,
        update: CheckpointUpdate,
    ) -> warp_core::Result<()> {
        let fenced = (self.inner.checkpoints)
            .save(&self.inner.pool, table, token, &update)
            .await?;
        fenced_unless_none(table, token, fenced)
    }

    fn shares_chunks(&self) -> bool {
        true
    }

    async fn claim_chunk(
        &self,
        schema: &str,
        scope: ChunkScope<'_>,
        holder: &str,
        validity: std::time::Duration,
    ) -> warp_core::Result<Option<ChunkClaim>> {
        let m = &self.inner.checkpoints.m;
        Ok(chunk_claims::claim(&self.inner.pool, m, schema, scope, holder, validity).await?)
    }

    async fn renew_claims(
        &self,
        schema: &str,
        holder: &str,
        validity: std::time::Duration,
    ) -> warp_core::Result<()> {
        let m = &self.inner.checkpoints.m;
        Ok(chunk_claims::renew(&self.inner.pool, m, schema, holder, validity).await?)
    }

    async fn plan_shared_copy(
        &self,
        table: &TableKey,
        token: FencingToken,
        chunks: &[KeyRange],
    ) -> warp_core::Result<()> {
        let mut tx = self.fenced(table, token).await?;
        chunk_claims::plan(&mut tx, &self.inner.checkpoints.m, table, chunks).await?;
        Ok(tx.commit().await.context("commit a shared copy's plan")?)
    }

    async fn open_copy_window(
        &self,
        table: &TableKey,
        token: FencingToken,
    ) -> warp_core::Result<u64> {
        let mut tx = self.fenced(table, token).await?;
        let window = chunk_claims::open_window(&mut tx, &self.inner.checkpoints.m, table).await?;
        tx.commit().await.context("commit a copy window")?;
        Ok(window)
    }

    async fn close_copy_window(
        &self,
        table: &TableKey,
        token: FencingToken,
    ) -> warp_core::Result<Vec<warp_core::CopiedChunk>> {
        let mut tx = self.fenced(table, token).await?;
        let copied = chunk_claims::close_window(&mut tx, &self.inner.checkpoints.m, table).await?;
        tx.commit().await.context("commit a copy window's end")?;
        Ok(copied)
    }

    async fn drain_copy_window(&self, table: &TableKey, window: u64) -> warp_core::Result<usize> {
        let m = &self.inner.checkpoints.m;
        Ok(chunk_claims::drain(&self.inner.pool, m, table, window).await?)
    }

    async fn release_chunk(
        &self,
        table: &TableKey,
        index: usize,
        claim: FencingToken,
        owner_only: bool,
    ) -> warp_core::Result<()> {
        let m = &self.inner.checkpoints.m;
        Ok(chunk_claims::release(&self.inner.pool, m, table, index, claim, owner_only).await?)
    }

    async fn reset(&self, table: &TableKey, token: FencingToken) -> warp_core::Result<()> {
        let fenced = (self.inner.checkpoints)
            .reset(&self.inner.pool, table, token)
            .await?;
        fenced_unless_none(table, token, fenced)
    }
}

impl PostgresSink {
    /// A transaction holding `table`'s lease row, unless another replica took the lease.
    async fn fenced(
        &self,
        table: &TableKey,
        token: FencingToken,
    ) -> warp_core::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let begun = (self.inner.checkpoints)
            .begin_fenced(&self.inner.pool, table, token)
            .await?;
        begun.map_err(|current| warp_core::Error::Fenced {
            table: table.to_string(),
            ours: token.0,
            current,
        })
    }
}

/// `Ok` unless a fencing check found a newer token than `token`.
fn fenced_unless_none(
    table: &TableKey,
    token: FencingToken,
    current: Option<u64>,
) -> warp_core::Result<()> {
    match current {
        None => Ok(()),
        Some(current) => Err(warp_core::Error::Fenced {
            table: table.to_string(),
            ours: token.0,
            current,
        }),
    }
}
