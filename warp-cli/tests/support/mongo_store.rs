//! A MongoDB database replicated by the real binary, shared by the MongoDB suites (the
//! nx-27017 emulator; docs/testing.md): source writes are counted per `_id`, so no
//! destination version may exceed them.
#![allow(dead_code)] // each suite uses its own part

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use mongodb::Collection;
use sqlx::PgPool;
use warp_core::{ChunkPage, ColumnType, Row, Source, TableSchema, Value};
use warp_e2e::replica::{self, TempDir};
use warp_e2e::Process;
use warp_source_mongodb::MongoSource;

pub struct Store {
    pub db: String,
    pub config: PathBuf,
    pub dir: TempDir,
    pub mongo: mongodb::Database,
    pub pg: PgPool,
    /// Source writes per (collection, _id text): `_cartridge_version` may never exceed it.
    pub writes: Mutex<HashMap<(String, String), u64>>,
}

/// A database `e2e_mongo_<name>` with a config whose schema section is `tables_yaml`.
pub async fn store(name: &str, chunk: usize, tables_yaml: &str) -> Store {
    let mongo_url = warp_e2e::peer_url("WARP_TEST_MONGO_URL");
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let db = format!("e2e_mongo_{name}");
    let client = mongodb::Client::with_uri_str(&mongo_url).await.unwrap();
    let mongo = client.database(&db);
    mongo.drop().await.unwrap();
    let pg = replica::fresh_pg(&[&db, &format!("{db}_meta")]).await;
    let dir = TempDir::new(&format!("mongo-{name}"));
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: single\nsingle_schema_name: {db}\n\
             performance: {{ write_batch_max_wait: 0.2, retry_delay: 0.2, retry_max_delay: 2, failed_table_cooldown: 1, lease_ttl: 3 }}\n\
             source: {{ type: mongodb, connection_string: '{mongo_url}', database: {db} }}\n\
             destination: {{ type: postgresql, connection_string: '{pg_url}', schema: {db}, metadata_schema: {db}_meta }}\n\
             schemas:\n- name: {db}\n  snapshot_chunk_size: {chunk}\n  parallel_streams: 2\n  tables:\n{tables_yaml}\
             monitoring: {{ metrics_port: {}, health_check_port: {} }}\n\
             logging: {{ level: info, format: text }}\n",
            warp_e2e::free_port(),
            warp_e2e::free_port()
        ),
    )
    .unwrap();
    Store {
        db,
        config,
        dir,
        mongo,
        pg,
        writes: Mutex::new(HashMap::new()),
    }
}

impl Store {
    pub fn run(&self) -> Process {
        Process::spawn(
            env!("CARGO_BIN_EXE_cartridge-warp"),
            &["run", "--config", self.config.to_str().unwrap()],
            &self.dir.join("run.log"),
        )
    }

    /// One replica, as pod `pod` (logging to `<pod>.log`).
    pub fn run_replica(&self, pod: &str) -> Process {
        warp_e2e::run_replica(
            env!("CARGO_BIN_EXE_cartridge-warp"),
            &self.config,
            &self.dir.0,
            pod,
            warp_e2e::free_port(),
        )
    }

    pub fn replica_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{pod}.log"))).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default()
    }

    /// Switches the config to the `timestamp` strategy on `column`.
    pub fn poll_by(&self, column: &str) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let polled = cfg.replace(
            "type: mongodb,",
            &format!("type: mongodb, change_detection_strategy: timestamp, change_detection_column: {column},"),
        );
        assert_ne!(polled, cfg);
        std::fs::write(&self.config, polled).unwrap();
    }

    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.mongo.collection(name)
    }

    pub fn wrote(&self, coll: &str, id: &Bson) {
        let key = (coll.to_owned(), id_text(id));
        *self.writes.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Inserts with single-document writes (the emulator's change streams miss events
    /// of multi-document writes), recording each.
    pub async fn insert(&self, coll: &str, docs: Vec<Document>) {
        for d in &docs {
            self.wrote(coll, d.get("_id").unwrap());
        }
        self.coll(coll).insert_many(docs).await.unwrap();
    }

    pub async fn update(&self, coll: &str, id: Bson, update: Document) {
        let r = self
            .coll(coll)
            .update_one(doc! { "_id": id.clone() }, update)
            .await
            .unwrap();
        assert_eq!(r.matched_count, 1, "{coll} {id}");
        self.wrote(coll, &id);
    }

    /// Source documents as rows (the source's decoder) and live destination rows (the
    /// sink's), both sorted by `_id`, with values of text columns in text form.
    pub async fn both(&self, coll: &str) -> (Vec<Row>, Vec<Row>, TableSchema) {
        let (loaded, schema) = replica::load(&self.config);
        let source = MongoSource::new(&loaded.config.source, &schema).unwrap();
        let mut t = source
            .discover(&schema)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id.name == coll)
            .unwrap();
        let mut src = Vec::new();
        let read = schema.table(coll).read_settings();
        let plan = source
            .plan_snapshot(&t, &read, usize::MAX / 2)
            .await
            .unwrap();
        let polled = loaded.config.source.change_detection_strategy
            == Some(warp_core::config::ChangeDetection::Timestamp);
        let mut copied_at = None;
        'read: loop {
            src.clear();
            for chunk in &plan.chunks {
                let chunk_read = source.read_chunk(&t, &read, chunk).await.unwrap();
                // (The plan is one chunk: its position is the whole copy's.)
                copied_at = Some(chunk_read.position);
                let mut pages = chunk_read.rows;
                while let Some(page) = pages.next().await {
                    match page.unwrap() {
                        ChunkPage::Rows(rows) => src.extend(rows),
                        ChunkPage::Reshape(changes) => {
                            for c in &changes {
                                t.apply(c).unwrap();
                            }
                            continue 'read;
                        }
                    }
                }
            }
            break;
        }
        if let (true, Some(at)) = (polled, copied_at) {
            src = replica::with_polled_rows(&source, &t, &read, &at, src).await;
        }
        let dest = replica::live(replica::landed(&self.pg, &self.config, &t).await);
        (normalise(src, &t), normalise(dest, &t), t)
    }

    pub async fn wait_equal(&self, coll: &str) {
        replica::wait_equal(
            coll,
            || self.log(),
            || async {
                let (src, dest, _) = self.both(coll).await;
                (src, dest)
            },
        )
        .await;
    }

    /// No destination row counts more versions than the source made changes to it.
    pub async fn assert_no_double_apply(&self, coll: &str) {
        let (_, _, t) = self.both(coll).await;
        let rows = replica::landed(&self.pg, &self.config, &t).await;
        let writes = self.writes.lock().unwrap();
        replica::assert_versions_within(coll, &rows, |key| {
            let Value::Text(id) = key else {
                panic!("text key")
            };
            writes
                .get(&(coll.to_owned(), id.clone()))
                .copied()
                .unwrap_or(0)
        });
    }

    pub async fn scalar(&self, sql: String) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pg)
            .await
            .unwrap()
    }

    /// Like [`Store::scalar`], 0 while the metadata tables do not exist yet.
    pub async fn count_when_ready(&self, sql: String) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pg)
            .await
            .unwrap_or(0)
    }

    pub async fn column_type(&self, table: &str, column: &str) -> String {
        sqlx::query_scalar(
            "SELECT data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
        )
        .bind(&self.db)
        .bind(table)
        .bind(column)
        .fetch_one(&self.pg)
        .await
        .unwrap()
    }

    /// Waits until `table`'s checkpoint satisfies `condition` (SQL over `checkpoints`).
    pub async fn wait_checkpoint(&self, table: &str, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let sql = format!(
            "SELECT count(*) FROM {}_meta.checkpoints WHERE table_name = '{table}' AND {condition}",
            self.db
        );
        while self.count_when_ready(sql.clone()).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{table}: {what} never happened\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn id_text(id: &Bson) -> String {
    match id {
        Bson::String(s) => s.clone(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::ObjectId(o) => o.to_hex(),
        other => panic!("test ids are strings, integers or ObjectIds: {other}"),
    }
}

/// Rows sorted by key, values of text columns in the text form the destination keeps
/// for a column widened to text.
pub fn normalise(mut rows: Vec<Row>, t: &TableSchema) -> Vec<Row> {
    for r in &mut rows {
        for (v, c) in r.values.iter_mut().zip(&t.columns) {
            if !matches!(c.column_type, ColumnType::Text { .. }) {
                continue;
            }
            let text = match &*v {
                Value::Int(i) => i.to_string(),
                Value::Float64(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            *v = Value::Text(text);
        }
    }
    rows.sort_by(|a, b| format!("{:?}", a.values[0]).cmp(&format!("{:?}", b.values[0])));
    rows
}
