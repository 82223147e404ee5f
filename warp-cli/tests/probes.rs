//! Probes and metrics over real HTTP, from the running binary: startup, readiness while
//! the destination goes away and comes back, liveness throughout, and `/metrics` accepted
//! by `promtool check metrics`.

use std::io::Write;
use std::process::{Command, Stdio};

use mysql_async::prelude::Queryable;
use warp_e2e::proxy::Proxy;
use warp_e2e::{eventually, eventually_with, free_port, http_get, peer_url, Poll};

async fn wait_status(port: u16, path: &str, want: u16, log: &std::path::Path) -> String {
    let answered = || {
        http_get(port, path)
            .filter(|(status, _)| *status == want)
            .map(|(_, body)| body)
    };
    let state = || {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        format!("last answer {:?}\n{log}", http_get(port, path))
    };
    eventually(&format!("{path} answering {want}"), answered, state).await
}

#[tokio::test]
async fn probes_follow_the_destination_and_metrics_pass_promtool() {
    let my_url = peer_url("WARP_TEST_MARIADB_URL");
    let pg_url = peer_url("WARP_TEST_PG_URL");
    let mut my = mysql_async::Conn::from_url(&my_url).await.unwrap();
    for stmt in [
        "DROP DATABASE IF EXISTS e2e_probes",
        "CREATE DATABASE e2e_probes",
        "CREATE TABLE e2e_probes.items (id INT PRIMARY KEY, name VARCHAR(20))",
        "INSERT INTO e2e_probes.items VALUES (1, 'a'), (2, 'b')",
    ] {
        my.query_drop(stmt).await.unwrap();
    }
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg_url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS e2e_probes CASCADE; DROP SCHEMA IF EXISTS e2e_probes_meta CASCADE",
    )
    .execute(&pg)
    .await
    .unwrap();

    let proxy_port = free_port();
    let mut proxy = Proxy::start(proxy_port, "127.0.0.1:5432".into()).await;
    let (health, metrics) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("cw-probes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let proxied = pg_url.replace("127.0.0.1:5432", &format!("127.0.0.1:{proxy_port}"));
    // Distinct from every other test process's binlog readers.
    let sid = 2_000_000 + std::process::id() % 40_000 * 20;
    std::fs::write(
        &config,
        format!(
            "source: {{ type: mysql, connection_string: '{my_url}/e2e_probes', database: e2e_probes, server_id: {sid} }}\n\
             destination: {{ type: postgresql, connection_string: '{proxied}', schema: e2e_probes, metadata_schema: e2e_probes_meta, connection_timeout: 2 }}\n\
             performance: {{ write_batch_max_wait: 0.2, retry_delay: 0.2, retry_max_delay: 1, max_retries: 1000, lease_ttl: 3 }}\n\
             schemas: [ {{ name: e2e_probes }} ]\n\
             logging: {{ level: info, format: structured }}\n"
        ),
    )
    .unwrap();
    let log = dir.join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cartridge-warp"))
        .args([
            "run",
            "--mode=single",
            "--schema=e2e_probes",
            &format!("--config={}", config.display()),
        ])
        // The seed Deployment's plain variables set the ports.
        .env("PROMETHEUS_METRICS_PORT", metrics.to_string())
        .env(
            "CARTRIDGE_WARP_MONITORING__HEALTH_CHECK_PORT",
            health.to_string(),
        )
        .env("LOG_LEVEL", "INFO")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed if the test fails before stopping it.
    let guard = KillOnDrop(child.id());

    wait_status(health, "/health", 200, &log).await;
    wait_status(health, "/startup", 200, &log).await;
    wait_status(health, "/ready", 200, &log).await;
    // /ready holds no table back before the first one is registered (a replica may own
    // none), and a listed table is not yet copied: a row written before the snapshot
    // reads it arrives in the copy, not as a streamed event (seen under load: no events
    // metric ever). Wait until the table streams.
    let streaming = async || {
        let status = wait_status(health, "/status", 200, &log).await;
        let items = status.contains("\"table\":\"items\"");
        (items && status.contains("\"state\":\"streaming\"")).then_some(())
    };
    let state = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually_with("items streaming", Poll::SECONDS, streaming, state).await;
    // A change flows, and shows in the metrics.
    my.query_drop("INSERT INTO e2e_probes.items VALUES (3, 'c')")
        .await
        .unwrap();
    // As long as the other waits here: on 2 cores under the whole suite a batch can lag.
    let counted = async || {
        let body = wait_status(metrics, "/metrics", 200, &log).await;
        body.contains("cartridge_warp_events_total{")
            .then_some(body)
    };
    let body = eventually_with("an events metric", Poll::SECONDS, counted, state).await;
    for name in [
        "cartridge_warp_events_total{",
        "cartridge_warp_snapshot_rows_total{",
        "cartridge_warp_table_state{",
        "cartridge_warp_batch_duration_seconds_bucket{",
        "cartridge_warp_last_checkpoint_timestamp_seconds{",
        "cartridge_warp_source_connected{",
        "cartridge_warp_build_info{",
        "cartridge_warp_replication_lag_seconds{",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Destination gone: not ready, still alive.
    proxy.cut().await;
    let body = wait_status(health, "/ready", 503, &log).await;
    assert!(body.contains("destination unreachable"), "{body}");
    assert_eq!(
        http_get(health, "/health").map(|r| r.0),
        Some(200),
        "liveness never depends on the databases"
    );

    // Back again: ready again, and the change made meanwhile arrives.
    my.query_drop("INSERT INTO e2e_probes.items VALUES (4, 'd')")
        .await
        .unwrap();
    let _proxy = Proxy::start(proxy_port, "127.0.0.1:5432".into()).await;
    wait_status(health, "/ready", 200, &log).await;
    let arrived = async || {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM e2e_probes.items")
            .fetch_one(&pg)
            .await
            .unwrap_or(0);
        (n == 4).then_some(())
    };
    let state = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually_with("row 4 through the proxy", Poll::SECONDS, arrived, state).await;

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    std::mem::forget(guard); // already reaped: its pid must not be signalled again
                             // Structured logs are JSON lines with stable fields.
    let first = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(
        line.get("timestamp").is_some() && line.get("level").is_some(),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
