//! The metadata schema (docs/postgres.md): versioned, idempotent migrations applied at start-up,
//! serialised between replicas by an advisory lock.

use sqlx::{AssertSqlSafe, PgPool};

use crate::error::{Context, Result};
use crate::ident::{literal, quote};

/// Bump by appending; never edit an applied migration.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial metadata tables", INITIAL),
    (2, "live source time in table_state", TABLE_STATE_SOURCE_TS),
    (3, "replica membership for lease balancing", MEMBERS),
    (
        4,
        "snapshot chunk progress in table_state",
        TABLE_STATE_CHUNKS,
    ),
    (
        5,
        "bytes the source processed per table in table_state",
        TABLE_STATE_SOURCE_BYTES,
    ),
    (
        6,
        "background verification per table in table_state",
        TABLE_STATE_VERIFICATION,
    ),
    (
        7,
        "the landing version each landing table was created with",
        LANDING_TABLES,
    ),
    (
        8,
        "whether a snapshot in progress re-copies a table that held rows",
        CHECKPOINTS_RECOPY,
    ),
    (
        9,
        "the source shape at each streaming checkpoint, and a re-copy's chunks to go",
        CHECKPOINTS_SHAPE,
    ),
    (
        10,
        "snapshot chunks claimed by any replica of the schema, and copy windows",
        CHUNK_CLAIMS,
    ),
];

/// A claim holds a chunk for one process until `claimed_until` unless renewed; tokens
/// come from one sequence, so a later claim always has a larger one. A streaming table's
/// copy window (`checkpoints.copy_window`, from the same sequence) is open while its
/// owner commits nothing, and a chunk claimed in it records only while it stays open;
/// chunks are claimed in it until the owner drains it (`copy_window_claimable`).
const CHUNK_CLAIMS: &str = "ALTER TABLE {m}.snapshot_chunks
    ADD COLUMN holder text, ADD COLUMN claim_token bigint, ADD COLUMN claimed_until timestamptz,
    ADD COLUMN owner_only boolean NOT NULL DEFAULT false, ADD COLUMN claim_epoch bigint;
ALTER TABLE {m}.checkpoints ADD COLUMN copy_window bigint,
    ADD COLUMN copy_window_claimable boolean NOT NULL DEFAULT false;
CREATE SEQUENCE {m}.chunk_claims";

const CHECKPOINTS_SHAPE: &str =
    "ALTER TABLE {m}.checkpoints ADD COLUMN shape jsonb, ADD COLUMN recopy_chunks jsonb";

const CHECKPOINTS_RECOPY: &str =
    "ALTER TABLE {m}.checkpoints ADD COLUMN recopy boolean NOT NULL DEFAULT false";

/// Keyed by the PostgreSQL table (not the replicated schema): the version describes the
/// table's rows, and goes with it.
const LANDING_TABLES: &str = "CREATE TABLE {m}.landing_tables (
    schema_name     text NOT NULL,
    table_name      text NOT NULL,
    landing_version integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
)";

const TABLE_STATE_VERIFICATION: &str = "ALTER TABLE {m}.table_state ADD COLUMN verification jsonb";

const TABLE_STATE_SOURCE_BYTES: &str = "ALTER TABLE {m}.table_state ADD COLUMN source_bytes bigint";

const TABLE_STATE_CHUNKS: &str = "ALTER TABLE {m}.table_state
    ADD COLUMN chunks_done integer, ADD COLUMN chunks_total integer";

const MEMBERS: &str = "CREATE TABLE {m}.members (
    schema_name  text NOT NULL,
    owner        text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (schema_name, owner)
)";

const TABLE_STATE_SOURCE_TS: &str =
    "ALTER TABLE {m}.table_state ADD COLUMN last_source_ts timestamptz";

/// `{m}` is replaced by the quoted metadata schema.
const INITIAL: &str = r#"
CREATE TABLE {m}.leases (
    schema_name   text NOT NULL,
    table_name    text NOT NULL,
    owner         text NOT NULL,
    fencing_token bigint NOT NULL,
    acquired_at   timestamptz NOT NULL DEFAULT now(),
    renewed_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE {m}.checkpoints (
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    stream         text NOT NULL DEFAULT 'main',
    phase          text NOT NULL CHECK (phase IN ('snapshot', 'streaming')),
    position       jsonb,
    snapshot_start jsonb,
    handover       jsonb NOT NULL DEFAULT '[]',
    source_ts      timestamptz,
    fencing_token  bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name, stream)
);
CREATE TABLE {m}.snapshot_chunks (
    schema_name   text NOT NULL,
    table_name    text NOT NULL,
    chunk_index   integer NOT NULL,
    key_range     jsonb NOT NULL,
    done_position jsonb,
    rows_copied   bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name, chunk_index)
);
CREATE TABLE {m}.table_state (
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    state       text NOT NULL,
    rows_copied bigint NOT NULL DEFAULT 0,
    last_error  text,
    hint        text,
    owner       text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE {m}.schema_registry (
    id           bigserial PRIMARY KEY,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    version      integer NOT NULL,
    change       jsonb NOT NULL,
    table_schema jsonb NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, table_name, version)
);
CREATE TABLE {m}.sync_runs (
    id          bigserial PRIMARY KEY,
    schema_name text NOT NULL,
    owner       text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    status      text NOT NULL DEFAULT 'running',
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE {m}.error_log (
    id          bigserial PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text,
    error_type  text NOT NULL,
    message     text NOT NULL,
    hint        text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {m}.dead_letter_queue (
    id              bigserial PRIMARY KEY,
    schema_name     text NOT NULL,
    table_name      text NOT NULL,
    payload         jsonb NOT NULL,
    error           text NOT NULL,
    source_position jsonb,
    attempts        integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'replayed', 'discarded')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {m}.dead_letter_queue (schema_name, table_name, status);
CREATE TABLE {m}.signals (
    id           bigserial PRIMARY KEY,
    schema_name  text NOT NULL,
    table_name   text,
    signal       text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
"#;

/// Creates the metadata schema and applies pending migrations. Safe to run from many
/// replicas at once.
pub async fn migrate(pool: &PgPool, metadata_schema: &str) -> Result<u32> {
    let m = quote(metadata_schema);
    let mut tx = pool.begin().await.context("begin migration")?;
    // One migrator at a time per metadata schema.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("cartridge-warp:{metadata_schema}"))
        .execute(&mut *tx)
        .await
        .context("lock migrations")?;
    let ddl = format!(
        "CREATE SCHEMA IF NOT EXISTS {m}; CREATE TABLE IF NOT EXISTS {m}.schema_migrations (\
         version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    );
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .context("create metadata schema")?;
    let applied: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT version FROM {m}.schema_migrations"
    )))
    .fetch_all(&mut *tx)
    .await
    .context("read migrations")?;
    let mut count = 0;
    for (version, description, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(sql.replace("{m}", &m)))
            .execute(&mut *tx)
            .await
            .context(&format!("metadata migration {version}"))?;
        let record = format!(
            "INSERT INTO {m}.schema_migrations (version, description) VALUES ({version}, {})",
            literal(description)
        );
        sqlx::raw_sql(AssertSqlSafe(record))
            .execute(&mut *tx)
            .await
            .context("record migration")?;
        count += 1;
    }
    tx.commit().await.context("commit migrations")?;
    Ok(count)
}
