//! The bad-input cases (docs/testing.md, Bad input) that earlier suites do not already cover, through the
//! real binary: each asserts the message a user sees and that nothing was lost or
//! written by mistake. docs/testing.md maps every §12 case to its test.

use std::path::PathBuf;
use std::process::{Command, Output};

use mysql_async::prelude::Queryable;
use warp_core::{TableReport, TableState};
use warp_e2e::replica::{self, TempDir};
use warp_e2e::{Poll, Process};

const BIN: &str = env!("CARGO_BIN_EXE_cartridge-warp");

struct Case {
    dir: TempDir,
    config: PathBuf,
    health: u16,
}

/// A config for schema `db` from `source` to the test PostgreSQL, landing in `db` with
/// metadata in `<db>_meta`; `extra` is appended (more top-level sections).
fn case(db: &str, source: &str, destination: &str, extra: &str) -> Case {
    let dir = TempDir::new(&format!("bad-{db}"));
    let config = dir.join("config.yaml");
    let health = warp_e2e::free_port();
    std::fs::write(
        &config,
        format!(
            "mode: single\nsingle_schema_name: {db}\n\
             performance: {{ retry_delay: 0.2, retry_max_delay: 1, write_batch_max_wait: 0.2, lease_ttl: 3 }}\n\
             source: {{ type: mysql, connection_string: '{source}', database: {db} }}\n\
             destination: {{ type: postgresql, connection_string: '{destination}', schema: {db}, metadata_schema: {db}_meta, connection_timeout: 2 }}\n\
             schemas: [ {{ name: {db} }} ]\n\
             monitoring: {{ metrics_port: {}, health_check_port: {health} }}\n\
             logging: {{ level: info, format: text }}\n{extra}",
            warp_e2e::free_port()
        ),
    )
    .unwrap();
    Case {
        dir,
        config,
        health,
    }
}

impl Case {
    fn run(&self) -> Process {
        Process::spawn(
            BIN,
            &["run", "--config", self.config.to_str().unwrap()],
            &self.log_path(),
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("run.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn status(&self) -> Vec<TableReport> {
        warp_e2e::status(env!("CARGO_BIN_EXE_cartridge-warp"), &self.config)
    }

    /// Polls `/path` until it answers `code`; returns the body.
    async fn wait_http(&self, path: &str, code: u16) -> String {
        let answered = || {
            warp_e2e::http_get(self.health, path)
                .filter(|(c, _)| *c == code)
                .map(|(_, body)| body)
        };
        let what = format!("{path} answering {code}");
        warp_e2e::eventually(&what, answered, || self.log()).await
    }
}

fn warp(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn schema_exists(pg: &sqlx::PgPool, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(pg)
        .await
        .unwrap()
}

async fn mysql(url: &str, statements: &[String]) {
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(url).unwrap());
    let mut conn = pool.get_conn().await.unwrap();
    for s in statements {
        conn.query_drop(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    drop(conn);
    pool.disconnect().await.unwrap();
}

/// Malformed YAML, unknown keys, wrong types: one line naming where, nothing written.
#[tokio::test]
async fn config_mistakes_name_the_place_and_write_nothing() {
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let my_url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let pg = replica::fresh_pg(&["bad_config", "bad_config_meta"]).await;
    let good = case("bad_config", &format!("{my_url}/mysql"), &pg_url, "");
    let yaml = std::fs::read_to_string(&good.config).unwrap();
    let cases = [
        (
            yaml.replace("schemas: [ {", "schemas: [ {{"),
            vec!["malformed YAML", "line 7 column 1"],
        ),
        (
            yaml.replace("retry_delay:", "retry_dealy:"),
            vec!["performance.retry_dealy", "did you mean `retry_delay`"],
        ),
        (
            yaml.replace("lease_ttl: 3", "lease_ttl: soon"),
            vec!["performance.lease_ttl"],
        ),
        (
            yaml.replace("lease_ttl: 3", "lease_ttl: 1"),
            vec!["performance.lease_ttl: must be at least 3 seconds"],
        ),
    ];
    for (bad, expected) in cases {
        std::fs::write(&good.config, &bad).unwrap();
        for command in ["validate", "run"] {
            let out = warp(&[command, "--config", good.config.to_str().unwrap()]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            for e in &expected {
                assert!(err.contains(e), "{command}: `{e}` in {err}");
            }
        }
    }
    assert!(
        !schema_exists(&pg, "bad_config_meta").await,
        "a bad config wrote nothing"
    );
}

/// Unreachable source, then unreachable destination: the process stays up and retries
/// with backoff, `/health` answers 200 and `/ready` 503 with the reason, SIGTERM exits 0.
#[tokio::test]
async fn unreachable_databases_are_retried_with_ready_false_and_health_true() {
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let my_url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let closed = format!("127.0.0.1:{}", warp_e2e::free_port());
    let pg = replica::fresh_pg(&["bad_reach", "bad_reach_meta"]).await;
    mysql(
        &my_url,
        &[
            "DROP DATABASE IF EXISTS bad_reach".into(),
            "CREATE DATABASE bad_reach".into(),
            "CREATE TABLE bad_reach.t (id INT PRIMARY KEY)".into(),
        ],
    )
    .await;
    for (what, source, destination, reason) in [
        (
            "source",
            format!("mysql://root@{closed}/bad_reach"),
            pg_url.clone(),
            "source unreachable",
        ),
        (
            "destination",
            format!("{my_url}/bad_reach"),
            format!("postgresql://postgres@{closed}/postgres"),
            "destination unreachable",
        ),
    ] {
        let c = case("bad_reach", &source, &destination, "");
        let mut run = c.run();
        let ready = c.wait_http("/ready", 503).await;
        assert!(ready.contains(reason), "{what}: {ready}");
        assert_eq!(
            warp_e2e::http_get(c.health, "/health").map(|r| r.0),
            Some(200),
            "{what}"
        );
        // Backoff: several attempts, waits growing.
        let retried = || (c.log().matches("retrying").count() >= 3).then_some(());
        warp_e2e::eventually(&format!("{what}: retries"), retried, || c.log()).await;
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "{what}: losing a database never ends the process"
        );
        assert!(!c.log().contains("password"), "no credentials in the log");
        assert!(
            run.terminate().success(),
            "{what}: SIGTERM drains and exits 0\n{}",
            c.log()
        );
    }
    assert!(
        !schema_exists(&pg, "bad_reach").await,
        "nothing landed while unreachable"
    );
}

/// Wrong credentials on either side end the process with the server's reason and a
/// hint, after one attempt: no retry storm.
#[tokio::test]
async fn wrong_credentials_fail_fast_with_the_reason() {
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let my_url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    replica::fresh_pg(&["bad_creds", "bad_creds_meta"]).await;
    mysql(
        &my_url,
        &[
            "DROP DATABASE IF EXISTS bad_creds".into(),
            "CREATE DATABASE bad_creds".into(),
            "CREATE TABLE bad_creds.t (id INT PRIMARY KEY)".into(),
            "CREATE USER IF NOT EXISTS 'warp_bad'@'%' IDENTIFIED BY 'right'".into(),
        ],
    )
    .await;
    let my_host = my_url.trim_start_matches("mysql://root@");
    let pg_wrong = pg_url.replace(
        "postgresql://postgres@",
        "postgresql://no_such_role:secret@",
    );
    for (what, source, destination, reason) in [
        (
            "source",
            format!("mysql://warp_bad:wrong@{my_host}/bad_creds"),
            pg_url.clone(),
            "Access denied",
        ),
        (
            "destination",
            format!("{my_url}/bad_creds"),
            pg_wrong,
            "no_such_role",
        ),
    ] {
        let c = case("bad_creds", &source, &destination, "");
        let mut run = c.run();
        let exited = || run.0.try_wait().unwrap();
        let status = warp_e2e::eventually(&format!("{what}: exit"), exited, || c.log()).await;
        let log = c.log();
        assert!(!status.success(), "{what}: exits non-zero\n{log}");
        assert!(log.contains(reason), "{what}: names the reason\n{log}");
        assert!(!log.contains("retrying"), "{what}: no retry storm\n{log}");
        assert!(
            !log.contains("wrong") && !log.contains("secret"),
            "{what}: no password in the log\n{log}"
        );
    }
}

/// A MySQL server without the binlog: the table fails with what to change; nothing is
/// copied (streaming could not follow it).
#[tokio::test]
async fn a_source_without_the_binlog_fails_the_table_with_what_to_change() {
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    // The machine's own MariaDB (127.0.0.1:3306) runs with the binlog off.
    let plain = "mysql://root@127.0.0.1:3306";
    let pg = replica::fresh_pg(&["bad_binlog", "bad_binlog_meta"]).await;
    mysql(
        plain,
        &[
            "DROP DATABASE IF EXISTS bad_binlog".into(),
            "CREATE DATABASE bad_binlog".into(),
            "CREATE TABLE bad_binlog.t (id INT PRIMARY KEY)".into(),
            "INSERT INTO bad_binlog.t VALUES (1), (2)".into(),
        ],
    )
    .await;
    let c = case("bad_binlog", &format!("{plain}/bad_binlog"), &pg_url, "");
    let mut run = c.run();
    let ready = c.wait_http("/ready", 503).await;
    let failed =
        || (c.status().into_iter()).find(|r| r.table == "t" && r.state == Some(TableState::Failed));
    let what = format!("t failed (ready said: {ready})");
    let t = warp_e2e::eventually(&what, failed, || c.log()).await;
    let error = t.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("binlog is not usable"), "{t:?}");
    assert!(error.contains("log_bin=ON (is OFF)"), "{t:?}");
    let hint = t.hint.as_deref().unwrap_or_default();
    assert!(
        hint.contains("log_bin=ON") && hint.contains("binlog_format=ROW"),
        "{t:?}"
    );
    let copied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'bad_binlog'",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    let rows: i64 = if copied > 0 {
        sqlx::query_scalar("SELECT count(*) FROM bad_binlog.t")
            .fetch_one(&pg)
            .await
            .unwrap()
    } else {
        0
    };
    assert_eq!(rows, 0, "no snapshot that streaming could not continue");
    assert!(run.terminate().success());
}

/// A table without a key cannot replicate (no MySQL or BSON type is unsupported: every
/// one maps, see docs/postgres.md): it fails with a hint naming `primary_key`, the other
/// tables replicate, and one whole row far over `write_batch_max_bytes` lands intact.
#[tokio::test]
async fn a_keyless_table_is_refused_and_an_oversize_row_lands_whole() {
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let my_url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let pg = replica::fresh_pg(&["bad_shape", "bad_shape_meta"]).await;
    mysql(
        &my_url,
        &[
            "DROP DATABASE IF EXISTS bad_shape".into(),
            "CREATE DATABASE bad_shape".into(),
            "CREATE TABLE bad_shape.log (line TEXT)".into(),
            "CREATE TABLE bad_shape.docs (id INT PRIMARY KEY, body LONGTEXT)".into(),
            "INSERT INTO bad_shape.docs VALUES (1, REPEAT('a', 6000000))".into(),
        ],
    )
    .await;
    let c = case("bad_shape", &format!("{my_url}/bad_shape"), &pg_url, "");
    let yaml = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(
        &c.config,
        yaml.replace(
            "lease_ttl: 3 }",
            "lease_ttl: 3, write_batch_max_bytes: 1MB }",
        ),
    )
    .unwrap();
    let mut run = c.run();
    let len = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(length(body))::bigint FROM bad_shape.docs WHERE id = 2",
        )
        .fetch_one(&pg)
        .await
        .ok()
        .flatten()
    };
    // A second oversize row through the binlog, once the first has been copied.
    let copied = async || {
        let copied: Option<i64> =
            sqlx::query_scalar("SELECT length(body)::bigint FROM bad_shape.docs WHERE id = 1")
                .fetch_optional(&pg)
                .await
                .ok()
                .flatten();
        (copied == Some(6_000_000)).then_some(())
    };
    let what = "the snapshot's oversize row landed";
    warp_e2e::eventually_with(what, Poll::SECONDS, copied, || c.log()).await;
    mysql(
        &my_url,
        &["INSERT INTO bad_shape.docs VALUES (2, REPEAT('b', 7000000))".into()],
    )
    .await;
    let streamed = async || (len().await == Some(7_000_000)).then_some(());
    let what = "the streamed oversize row landed";
    warp_e2e::eventually_with(what, Poll::SECONDS, streamed, || c.log()).await;
    let listed = || c.status().into_iter().find(|r| r.table == "log");
    let log_table = warp_e2e::eventually("log in status", listed, || c.log()).await;
    assert_eq!(log_table.state, Some(TableState::Failed), "{log_table:?}");
    assert!(
        log_table
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("primary_key"),
        "{log_table:?}"
    );
    assert!(run.terminate().success(), "{}", c.log());
}
