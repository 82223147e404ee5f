//! The binary over TLS, against the TLS peers of `scripts/peers.sh start tls`: MariaDB
//! (require_secure_transport) into the hostssl-only PostgreSQL with `verify-full`, the
//! seed's own connection strings with only hosts, ports and passwords changed, and the
//! failures `validate --check-connections` must name.

use std::process::Output;

use bson::{doc, Document};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, SslOpts};
use sqlx::PgPool;
use warp_e2e::replica::TempDir;
use warp_e2e::tls::TlsPeers;
use warp_e2e::Process;

const BIN: &str = env!("CARGO_BIN_EXE_cartridge-warp");

async fn pg(peers: &TlsPeers, drop: &[&str]) -> PgPool {
    let url = peers.pg_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", peers.ca()),
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("TLS PostgreSQL peer");
    for s in drop {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool
}

async fn mariadb(peers: &TlsPeers) -> mysql_async::Conn {
    let opts = OptsBuilder::from_opts(Opts::from_url(&peers.mariadb_url("localhost", "")).unwrap())
        .ssl_opts(
            SslOpts::default().with_root_certs(vec![std::path::PathBuf::from(peers.ca()).into()]),
        )
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .expect("TLS MariaDB peer")
}

fn validate(config: &str, env: &[(&str, String)]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["validate", "--check-connections", "--config", config]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("validate")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn wait_for<F, Fut>(what: &str, log: &std::path::Path, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let state = || std::fs::read_to_string(log).unwrap_or_default();
    let check = async || done().await.then_some(());
    warp_e2e::eventually_with(what, warp_e2e::Poll::SECONDS, check, state).await;
}

#[tokio::test]
async fn mysql_over_verified_tls_into_postgres_with_verify_full() {
    let peers = TlsPeers::from_env();
    let mut src = mariadb(&peers).await;
    src.query_drop("DROP DATABASE IF EXISTS cw_tls_e2e")
        .await
        .unwrap();
    src.query_drop("CREATE DATABASE cw_tls_e2e").await.unwrap();
    src.query_drop("CREATE TABLE cw_tls_e2e.items (id INT PRIMARY KEY, name VARCHAR(40), qty INT)")
        .await
        .unwrap();
    let rows: Vec<String> = (1..=200)
        .map(|i| format!("({i}, 'item {i}', {i})"))
        .collect();
    src.query_drop(format!(
        "INSERT INTO cw_tls_e2e.items VALUES {}",
        rows.join(",")
    ))
    .await
    .unwrap();
    let pg = pg(&peers, &["tls_e2e", "tls_e2e_meta"]).await;

    let dir = TempDir::new("tls-mysql");
    // The destination string comes from a file, as a Kubernetes Secret volume gives it.
    let secret = dir.join("destination");
    std::fs::write(
        &secret,
        format!(
            "{}\n",
            peers.pg_url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", peers.ca())
            )
        ),
    )
    .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: single\nsingle_schema_name: tls_e2e\n\
             performance: {{ write_batch_max_wait: 0.1, retry_delay: 0.5 }}\n\
             source: {{ type: mysql, database: cw_tls_e2e, server_id: 4600, ssl_enabled: true, ssl_ca: '{}' }}\n\
             destination: {{ type: postgresql, schema: tls_e2e, metadata_schema: tls_e2e_meta }}\n\
             schemas: [ {{ name: tls_e2e }} ]\n\
             monitoring: {{ metrics_port: {}, health_check_port: {} }}\n\
             logging: {{ level: info, format: text }}\n",
            peers.ca(),
            warp_e2e::free_port(),
            warp_e2e::free_port()
        ),
    )
    .unwrap();
    let env = [
        (
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
            peers.mariadb_url("localhost", "cw_tls_e2e"),
        ),
        (
            "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING_FILE",
            secret.display().to_string(),
        ),
    ];
    let config = config.to_str().unwrap();
    let out = validate(config, &env);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains(&peers.password), "{said}");
    for side in [
        "destination: reachable",
        "source (tls_e2e): reachable, prerequisites met",
    ] {
        let line = said
            .lines()
            .find(|l| l.starts_with(side))
            .unwrap_or_else(|| panic!("{said}"));
        assert!(
            line.contains(", encrypted (TLSv1.")
                && line.ends_with("verified server name localhost"),
            "{line}"
        );
    }

    let log = dir.join("run.log");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--config", config]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut run = Process::start(cmd, &log);
    let dest = || {
        let pg = pg.clone();
        async move {
            sqlx::query_as::<_, (i32, String, i32)>(
                "SELECT id, name, qty FROM tls_e2e.items WHERE NOT is_deleted ORDER BY id",
            )
            .fetch_all(&pg)
            .await
            .unwrap_or_default()
        }
    };
    wait_for("the snapshot never landed", &log, || async {
        dest().await.len() == 200
    })
    .await;

    // Streamed through the binlog connection, which is TLS too.
    src.query_drop(
        "INSERT INTO cw_tls_e2e.items SELECT id + 1000, CONCAT('new ', id), id FROM cw_tls_e2e.items WHERE id <= 50",
    )
    .await
    .unwrap();
    src.query_drop("UPDATE cw_tls_e2e.items SET qty = qty * 10 WHERE id <= 10")
        .await
        .unwrap();
    src.query_drop("DELETE FROM cw_tls_e2e.items WHERE id BETWEEN 191 AND 200")
        .await
        .unwrap();
    let source: Vec<(i32, String, i32)> = src
        .query("SELECT id, name, qty FROM cw_tls_e2e.items ORDER BY id")
        .await
        .unwrap();
    wait_for("the streamed changes never landed", &log, || {
        let want = source.clone();
        let dest = dest();
        async move { dest.await == want }
    })
    .await;
    assert!(run.terminate().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(&peers.password),
        "the password reached the log"
    );
}

#[tokio::test]
async fn the_seed_connection_strings_connect_and_replicate_as_written() {
    let peers = TlsPeers::from_env();
    // The Rust driver's own test client names the CA in the URI; the replicator gets the
    // seed's string and finds the private CA where a pod would mount it (SSL_CERT_FILE).
    let mongo = mongodb::Client::with_uri_str(format!(
        "{}&tlsCAFile={}",
        peers.seed_mongo_url(),
        peers.ca()
    ))
    .await
    .unwrap()
    .database("ecommerce_db");
    mongo.drop().await.unwrap();
    let users: Vec<Document> = (1..=30_i64)
        .map(|i| doc! { "_id": i, "name": format!("user {i}") })
        .collect();
    mongo
        .collection::<Document>("users")
        .insert_many(users)
        .await
        .unwrap();
    let pg = pg(&peers, &["ecommerce", "cartridge_warp_metadata"]).await;

    let dir = TempDir::new("tls-seed");
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-ecommerce.yaml"
    );
    let (metrics, health) = (warp_e2e::free_port(), warp_e2e::free_port());
    let env = [
        (
            "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
            peers.seed_mongo_url(),
        ),
        (
            "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING",
            peers.seed_pg_url(),
        ),
        ("SSL_CERT_FILE", peers.ca()),
        (
            "CARTRIDGE_WARP_MONITORING__METRICS_PORT",
            metrics.to_string(),
        ),
        (
            "CARTRIDGE_WARP_MONITORING__HEALTH_CHECK_PORT",
            health.to_string(),
        ),
        (
            "CARTRIDGE_WARP_LOGGING__LOG_FILE",
            dir.join("warp.log").display().to_string(),
        ),
        ("CARTRIDGE_WARP_PERFORMANCE__RETRY_DELAY", "1".to_owned()),
    ];
    let out = validate(seed, &env);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(
            "destination: reachable, encrypted (TLSv1.3), server certificate not verified"
        ),
        "sslmode=require encrypts without verifying: {said}"
    );
    assert!(
        said.contains(&format!(
            "source (ecommerce): reachable, prerequisites met, encrypted (TLS 1.2+), verified server name localhost:{}",
            peers.mongo_port
        )),
        "{said}"
    );

    let log = dir.join("run.log");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "--config", seed]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut run = Process::start(cmd, &log);
    let count = || {
        let pg = pg.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ecommerce.users WHERE NOT is_deleted",
            )
            .fetch_one(&pg)
            .await
            .unwrap_or(-1)
        }
    };
    wait_for("users never copied", &log, || async { count().await == 30 }).await;
    let streaming = || {
        let pg = pg.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT phase = 'streaming' FROM cartridge_warp_metadata.checkpoints WHERE table_name = 'users'",
            )
            .fetch_optional(&pg)
            .await
            .ok()
            .flatten()
                == Some(true)
        }
    };
    wait_for("users never streamed", &log, streaming).await;
    mongo
        .collection::<Document>("users")
        .insert_one(doc! { "_id": 31_i64, "name": "user 31" })
        .await
        .unwrap();
    wait_for("the new user never arrived", &log, || async {
        count().await == 31
    })
    .await;
    let (status, _) = warp_e2e::http_get(health, "/ready").unwrap();
    assert_eq!(status, 200);
    assert!(run.terminate().success());
}

#[tokio::test]
async fn validate_names_each_failed_tls_check_and_its_key() {
    let peers = TlsPeers::from_env();
    let dir = TempDir::new("tls-refusals");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "source: { type: mysql, database: mysql }\n\
         destination: { type: postgresql }\n\
         schemas: [ { name: refusals } ]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let cases = [
        (
            peers.pg_url("localhost", &format!("sslmode=verify-full&sslrootcert={}", peers.other_ca())),
            "destination: check privileges: TLS: the server's certificate is not signed by a trusted CA (hint: set sslrootcert=",
        ),
        (
            peers.pg_url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", peers.ca())),
            "TLS: the server's certificate does not name the host connected to (hint: connect with a host name",
        ),
        (
            peers.pg_url("localhost", "sslmode=disable"),
            "no encryption (SQLSTATE 28000) (hint: the server accepts only TLS connections",
        ),
    ];
    for (destination, expected) in &cases {
        let out = validate(
            config,
            &[
                (
                    "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING",
                    destination.clone(),
                ),
                (
                    "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
                    peers.mariadb_url("127.0.0.1", "mysql"),
                ),
                ("CARTRIDGE_WARP_SOURCE__SSL_MODE", "verify_identity".into()),
                ("CARTRIDGE_WARP_SOURCE__SSL_CA", peers.ca()),
            ],
        );
        let said = text(&out);
        assert!(!out.status.success(), "{said}");
        assert!(said.contains(expected), "expected `{expected}` in:\n{said}");
        assert!(
            said.contains("error: source (refusals): connect: TLS: the server's certificate does not name the host connected to (hint: connect with a host name the server's certificate names, or set source.ssl_mode: verify_ca"),
            "{said}"
        );
        assert!(!said.contains(&peers.password), "{said}");
    }
}
