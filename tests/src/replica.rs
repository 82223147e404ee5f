//! The destination side of the end-to-end suites: a clean PostgreSQL, the run's config,
//! landed rows read back through the sink's decoder, and the checks every suite makes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use warp_core::config::{load_file, ConfigOverrides, Environment, LoadedConfig, ResolvedSchema};
use warp_core::{Position, ReadSettings, Row, Source, TableSchema, Target, Value};
use warp_sink_postgres::read::LandedRow;

/// How long a suite waits for the destination to catch up before it fails.
pub const CATCH_UP: Duration = Duration::from_secs(90);

/// A pool on `WARP_TEST_PG_URL` with `schemas` dropped.
pub async fn fresh_pg(schemas: &[&str]) -> PgPool {
    fresh_pg_at(&crate::peer_url("WARP_TEST_PG_URL"), schemas).await
}

/// [`fresh_pg`] on the PostgreSQL at `url`.
pub async fn fresh_pg_at(url: &str, schemas: &[&str]) -> PgPool {
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(url)
        .await
        .expect("PostgreSQL peer");
    for s in schemas {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE"
        )))
        .execute(&pg)
        .await
        .expect("drop schema");
    }
    pg
}

/// The config file as `cartridge-warp` loads it, and its (single) schema.
pub fn load(config: &Path) -> (LoadedConfig, ResolvedSchema) {
    let loaded =
        load_file(config, &Environment::new(), &ConfigOverrides::default()).expect("valid config");
    let schema = loaded.config.schemas_to_run(None).remove(0);
    (loaded, schema)
}

/// Every landed row of `t` (deleted ones too), or none while the table cannot be read
/// yet (not created, or lacking a column the stream has yet to add).
pub async fn landed(pg: &PgPool, config: &Path, t: &TableSchema) -> Vec<LandedRow> {
    let (_, schema) = load(config);
    warp_sink_postgres::read::rows(pg, &Target::new(&schema, &t.id), t)
        .await
        .unwrap_or_else(|e| {
            eprintln!("{}: destination not readable yet: {e}", t.id);
            Vec::new()
        })
}

/// The landing version `t`'s landing table was created with (unrecorded while it does
/// not exist yet): a source reads the table's rows the way they were landed with it.
pub async fn landing(pg: &PgPool, config: &Path, t: &TableSchema) -> warp_core::LandingVersion {
    use warp_core::LandedRows;
    let (loaded, schema) = load(config);
    let metadata = loaded.config.destination.metadata_schema.clone();
    let sink = warp_sink_postgres::PostgresSink::with_pool(pg.clone(), &metadata);
    sink.landing_version(&Target::new(&schema, &t.id))
        .await
        .unwrap_or_default()
}

/// The live (not soft-deleted) rows among `rows`.
pub fn live(rows: Vec<LandedRow>) -> Vec<Row> {
    rows.into_iter()
        .filter(|r| !r.deleted)
        .map(|r| r.row)
        .collect()
}

/// Waits until `compare` yields equal (source, destination) rows; fails with the first
/// differences and `log()` after [`CATCH_UP`].
pub async fn wait_equal<F, Fut>(what: &str, log: impl Fn() -> String, mut compare: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Vec<Row>, Vec<Row>)>,
{
    let last = std::cell::RefCell::new((Vec::new(), Vec::new()));
    let equal = async || {
        let (src, dest) = compare().await;
        let same = src == dest;
        *last.borrow_mut() = (src, dest);
        same.then_some(())
    };
    let state = || {
        let (src, dest) = &*last.borrow();
        let diff: Vec<_> = (src.iter().zip(dest))
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        let (s, d) = (src.len(), dest.len());
        format!("{d} vs {s} rows, first differences {diff:?}\n{}", log())
    };
    let what = format!("{what}: the destination equal to the source");
    let poll = crate::Poll::SECONDS.patience(CATCH_UP);
    crate::eventually_with(&what, poll, equal, state).await;
}

/// No landed row counts more versions than the source made changes to it (a replayed
/// change would push it above): `made` gives the source's count for a row's key.
pub fn assert_versions_within(what: &str, rows: &[LandedRow], made: impl Fn(&Value) -> u64) {
    for r in rows {
        let key = &r.row.values[0];
        let n = made(key);
        assert!(
            r.version as u64 <= n,
            "{what} {key:?}: version {} > {n} source changes",
            r.version
        );
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cw-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A failed test's logs and configuration are kept for a look (any test's with
        // WARP_TEST_KEEP set).
        if std::thread::panicking() || std::env::var_os("WARP_TEST_KEEP").is_some() {
            eprintln!(
                "kept {} (the test failed, or WARP_TEST_KEEP)",
                self.0.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Completes the rows a polled source's chunks copied at `from`: a copy leaves the rows at
/// or above its position's value to the polls, so the polls from there (until one finds
/// nothing new) supply them; a row in both counts as polled. Sorted by key.
pub async fn with_polled_rows(
    source: &dyn Source,
    t: &TableSchema,
    read: &ReadSettings,
    from: &Position,
    copied: Vec<Row>,
) -> Vec<Row> {
    let key = t.key_indexes().unwrap();
    let id = |k: &[Value]| serde_json::to_string(k).unwrap();
    // The latest image per key (by key text: 100,000 polled rows stay linear).
    let mut polled = std::collections::HashMap::new();
    let mut polls = source.stream(t, read, from).await.unwrap();
    while let Some(fragment) = polls.next().await {
        let fragment = fragment.unwrap();
        if fragment.changes.is_empty() {
            break;
        }
        for change in fragment.changes {
            if let warp_core::Change::Row(e) = change {
                polled.insert(id(&e.key), e.after);
            }
        }
    }
    let mut rows = copied;
    rows.retain(|r| !polled.contains_key(&id(&r.key(&key))));
    rows.extend(polled.into_values().flatten());
    rows.sort_by(|a, b| warp_core::cmp_keys(&a.key(&key), &b.key(&key)));
    rows
}
