//! Faults of the machine around the replicator, through the real binary: replication goes
//! on, and the destination ends equal to the source with no change applied twice.

use warp_fixtures::mysql_shop;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_shop::{keep_writing, shop, shop_at, shop_to, Shop};
use warp_core::TableState;
use warp_e2e::private_mariadb::PrivateMariadb;
use warp_e2e::private_pg::PrivatePg;
use warp_e2e::proxy::Proxy;
use warp_e2e::Poll;

/// A 64 KiB tmpfs at `dir`, unmounted when dropped. Needs root (as the suite runs in CI).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "a 64 KiB tmpfs for the full-disk case needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }

    /// Bytes written to files on it.
    fn used(&self) -> u64 {
        std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `logging.log_file` on a disk that fills up while replicating: the file stops growing,
/// logging goes on to stdout, and replication neither stops nor loses a change.
#[tokio::test]
async fn a_full_log_disk_degrades_logging_and_replication_goes_on() {
    let shop = shop("fulldisk", 2_000, 500).await;
    let disk = TinyDisk::mount(&shop.dir.join("logs"));
    let text = std::fs::read_to_string(&shop.config).unwrap();
    let logged = text.replacen(
        "logging: { level: info, format: text }",
        &format!(
            "logging: {{ level: debug, format: json, log_file: '{}' }}",
            disk.0.join("warp.log").display()
        ),
        1,
    );
    assert_ne!(logged, text, "the config has a logging mapping");
    std::fs::write(&shop.config, logged).unwrap();
    let health = warp_e2e::free_port();
    let mut run = shop.run_replica("fulldisk-a", health);
    shop.wait_streaming(2).await;

    // Debug lines fill the 64 KiB while changes stream.
    let mut round = 0i64;
    let filled = async || {
        if disk.used() >= 60 * 1024 {
            return Some(());
        }
        round += 1;
        let id = round % 2_000 + 1;
        shop.exec(&format!(
            "UPDATE orders SET status = 'r{round}' WHERE id = {id}"
        ))
        .await;
        shop.wrote("orders", id);
        None
    };
    let state = || format!("{} bytes logged\n{}", disk.used(), shop.log());
    let poll = Poll::TIGHT.patience(Duration::from_secs(120));
    warp_e2e::eventually_with("the log disk full", poll, filled, state).await;
    let stdout_before = std::fs::metadata(shop.dir.join("fulldisk-a.log"))
        .unwrap()
        .len();

    // Full: every change from here on is written while logging cannot write its file.
    shop.update_each("orders", "note", "full ", 300, 2_000)
        .await;
    shop.exec("INSERT INTO customers VALUES (51, 'after the disk filled', 'gold', NULL)")
        .await;
    shop.wrote("customers", 51);
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;
    shop.assert_no_double_apply("orders").await;
    shop.assert_no_double_apply("customers").await;
    assert!(
        run.0.try_wait().unwrap().is_none(),
        "the replicator exited\n{}",
        shop.log()
    );
    assert_eq!(
        warp_e2e::http_get(health, "/health").map(|r| r.0),
        Some(200)
    );
    let stdout_after = std::fs::metadata(shop.dir.join("fulldisk-a.log"))
        .unwrap()
        .len();
    assert!(
        stdout_after > stdout_before,
        "logging to stdout stopped with the file"
    );
    assert!(run.terminate().success(), "{}", shop.log());
}

/// Sessions of the destination waiting for a lock (a write held in flight).
const WAITING_ON_A_LOCK: &str =
    "SELECT count(*)::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock'";

/// Waits until `sql` (one bigint) reaches `at_least`.
async fn wait_count(shop: &Shop, sql: &str, at_least: i64, what: &str) {
    let reached = async || {
        let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&shop.pg)
            .await
            .unwrap_or(0);
        (n >= at_least).then_some(())
    };
    let what = format!("{what}: at least {at_least}");
    warp_e2e::eventually_with(&what, Poll::TIGHT, reached, || shop.log()).await;
}

/// The destination restarted (`pg_ctl restart -m fast`, every session ended) while a
/// snapshot chunk is being written, and again while a streaming batch is: the writers
/// retry, and nothing is lost or applied twice.
#[tokio::test]
async fn postgres_restarted_mid_chunk_and_mid_batch_loses_and_duplicates_nothing() {
    let pg = PrivatePg::start("restart");
    let shop = Arc::new(shop_to("pgrestart", 20_000, 400, &pg.url()).await);
    let mut run = shop.run();
    let orders = format!("{}.orders", shop.db);
    wait_count(
        &shop,
        &format!("SELECT CASE WHEN to_regclass('{orders}') IS NULL THEN 0 ELSE 1 END::bigint"),
        1,
        "orders' landing table",
    )
    .await;
    wait_count(
        &shop,
        &format!("SELECT count(*)::bigint FROM {orders}"),
        1,
        "orders' first chunk",
    )
    .await;
    // A lock holds the next chunk's write in flight; the restart ends it mid-transaction.
    let lock = shop.lock_landing("orders").await;
    wait_count(
        &shop,
        WAITING_ON_A_LOCK,
        1,
        "a chunk write held by the lock",
    )
    .await;
    pg.restart();
    drop(lock);
    shop.wait_streaming(2).await;

    // Streaming: changes flow while a batch is held in flight by the lock, then restart.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&shop, &["orders", "customers"], 50, &stop);
    let versions = format!("SELECT COALESCE(sum(_cartridge_version), 0)::bigint FROM {orders}");
    let before = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(versions.clone()))
        .fetch_one(&shop.pg)
        .await
        .unwrap();
    wait_count(&shop, &versions, before + 50, "orders' streamed changes").await;
    let lock = shop.lock_landing("orders").await;
    wait_count(&shop, WAITING_ON_A_LOCK, 1, "a batch held by the lock").await;
    pg.restart();
    drop(lock);
    wait_count(
        &shop,
        &versions,
        before + 150,
        "orders' changes after the restart",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for t in ["orders", "customers"] {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    let log = shop.log();
    assert!(
        run.0.try_wait().unwrap().is_none(),
        "the replicator exited\n{log}"
    );
    // Both restarts cut a write in flight (PostgreSQL's words when it ends a session).
    assert!(
        log.matches("administrator command").count() >= 2,
        "no write was cut by the restarts\n{log}"
    );
    assert!(run.terminate().success(), "{}", shop.log());
}

/// Rotates the binlog and purges every file before the new one. MariaDB keeps a file a
/// binlog dump (the killed replicator's, until the server notices) or crash recovery still
/// needs, so this repeats until only the current file is left.
async fn purge_all_but_the_current_binlog(shop: &Shop) {
    use mysql_async::prelude::Queryable;
    let mut conn = shop.mysql.get_conn().await.unwrap();
    let purged = async || {
        conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
        let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
        let current: String = logs.last().unwrap().get(0).unwrap();
        conn.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let left: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
        (left.len() == 1).then_some(())
    };
    let what = "every binlog but the current one purged";
    warp_e2e::eventually_with(what, Poll::SECONDS, purged, || shop.log()).await;
}

/// What `cartridge-warp status` prints.
fn status_text(shop: &Shop) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cartridge-warp"))
        .args(["status", "--config", shop.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Until the replica on `health` reports, in `/status`, the source's log as holding (or
/// not) the oldest position its tables need; that report.
async fn wait_log_held(shop: &Shop, health: u16, held: bool) -> serde_json::Value {
    let reported = || {
        let (_, body) = warp_e2e::http_get(health, "/status")?;
        let reply: serde_json::Value = serde_json::from_str(&body).ok()?;
        let report = reply["log_retention"].as_array()?.first()?.clone();
        (report["held"] == held).then_some(report)
    };
    let what = format!("the log retention reported with held: {held}");
    let state = || {
        format!(
            "{:?}\n{}",
            warp_e2e::http_get(health, "/status"),
            shop.log()
        )
    };
    warp_e2e::eventually(&what, reported, state).await
}

/// Until both `tables` are failed in `status` with a hint naming `resync`.
async fn wait_lost(shop: &Shop, tables: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_cartridge-warp");
    warp_e2e::wait_lost(bin, &shop.config, tables, || shop.log()).await;
}

/// MariaDB restarted (a clean shutdown, as a service manager does it) while changes
/// stream: the binlog reader reconnects and resumes, nothing lost or applied twice. Then,
/// with the replicator down, the binlog holding its position rotated away and purged: the
/// tables stop with the resync hint, `/ready` says why, a table created meanwhile
/// replicates regardless, and `resync` brings the stopped ones back equal.
#[tokio::test]
async fn mariadb_restarted_mid_stream_then_its_binlog_purged_while_down() {
    let mut my = PrivateMariadb::start("restart");
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let shop = shop_at("myrestart", 2_000, 500, &my.url(), &pg_url).await;
    shop.tune("table_discovery_interval", "1");
    let health = warp_e2e::free_port();
    let mut run = shop.run_replica("myrestart-a", health);
    shop.wait_streaming(2).await;
    // Written just before the shutdown: the reader may not have read them all.
    shop.update_each("orders", "status", "b", 200, 50).await;
    my.restart();
    shop.update_each("customers", "name", "a", 200, 50).await;
    for t in ["orders", "customers"] {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    assert!(run.0.try_wait().unwrap().is_none(), "{}", shop.log());
    assert!(
        shop.log().contains("binlog stream closed by the server"),
        "the restart never cut the binlog stream\n{}",
        shop.log()
    );

    // The replica says how much binlog the server holds ahead of its tables.
    let live = wait_log_held(&shop, health, true).await;
    assert!(live["backlog_bytes"].as_u64().is_some(), "{live}");
    let said = status_text(&shop);
    assert!(
        said.contains("): held: the oldest position needed is binlog file"),
        "{said}"
    );
    assert!(
        live["oldest_retained"]
            .as_str()
            .unwrap()
            .starts_with("binlog file "),
        "{live}"
    );

    // Down; its position's binlog rotated away and purged.
    run.kill();
    shop.exec("UPDATE orders SET status = 'while down' WHERE id = 1")
        .await;
    shop.wrote("orders", 1);
    // Deleted while down, its row event purged with the binlog: only the resync's sweep
    // can find it gone.
    shop.exec("DELETE FROM orders WHERE id = 2").await;
    shop.wrote("orders", 2);
    purge_all_but_the_current_binlog(&shop).await;
    let mut run = shop.run_replica("myrestart-a", health);
    wait_lost(&shop, &["orders", "customers"]).await;
    let lost = wait_log_held(&shop, health, false).await;
    assert_eq!(lost["headroom_seconds"].as_f64(), Some(0.0), "{lost}");
    // `status` asks the source itself (so it tells while no replica runs, too).
    let said = status_text(&shop);
    assert!(said.contains("): NOT HELD: binlog file"), "{said}");
    let (code, ready) = warp_e2e::http_get(health, "/ready").unwrap();
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("orders: failed"), "{ready}");

    // A table created now replicates: the purge took only the others' history.
    shop.exec("CREATE TABLE late (id BIGINT PRIMARY KEY, v INT)")
        .await;
    shop.exec("INSERT INTO late VALUES (1, 1), (2, 2)").await;
    shop.wrote("late", 1);
    shop.wrote("late", 2);
    shop.wait_equal("late").await;
    shop.exec("UPDATE late SET v = 20 WHERE id = 2").await;
    shop.wrote("late", 2);
    shop.wait_equal("late").await;

    // resync brings them back, equal to the source (row 2 deleted: soft-deleted).
    shop.resync("orders");
    shop.resync("customers");
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;
    let swept = shop
        .scalar_pg(format!(
            "SELECT count(*) FROM {}.orders WHERE id = 2 AND is_deleted",
            shop.db
        ))
        .await;
    assert_eq!(swept, 1);
    assert!(run.terminate().success(), "{}", shop.log());
}

/// What a replica's own `/status` says of one table.
#[derive(Debug, serde::Deserialize)]
struct Listed {
    #[allow(dead_code)] // shown when the wait fails
    table: String,
    state: Option<TableState>,
}

#[derive(serde::Deserialize)]
struct StatusReply {
    tables: Vec<Listed>,
}

/// Until a table of the replica on `health` has exhausted its retries (`failed`), with
/// `/ready` 503 naming `reason` and `/health` 200 meanwhile.
async fn wait_retries_exhausted(shop: &Shop, health: u16, reason: &str) {
    let exhausted = || {
        let listed = warp_e2e::http_get(health, "/status")
            .and_then(|(_, body)| serde_json::from_str::<StatusReply>(&body).ok())
            .map(|r| r.tables)
            .unwrap_or_default();
        let failed = listed.iter().any(|t| t.state == Some(TableState::Failed));
        let ready = warp_e2e::http_get(health, "/ready").unwrap_or_default();
        (failed && ready.0 == 503 && ready.1.contains(reason)).then_some(())
    };
    let state = || {
        let ready = warp_e2e::http_get(health, "/ready");
        let status = warp_e2e::http_get(health, "/status");
        format!("/ready {ready:?}\n/status {status:?}\n{}", shop.log())
    };
    warp_e2e::eventually("a table's retries exhausted", exhausted, state).await;
    assert_eq!(
        warp_e2e::http_get(health, "/health").map(|r| r.0),
        Some(200),
        "liveness never depends on the databases"
    );
}

/// The network to the source, then to the destination, cut (a TCP proxy refusing and
/// breaking connections) for longer than the retries last: the tables fail, `/ready` says
/// why while `/health` stays 200; restored, they recover by themselves (after the failed
/// table cool-down) and the changes made during the cut land, none twice.
// Multi-threaded: the proxies must forward while the test waits on `status` (a child
// process connecting through them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cuts_past_the_retry_cap_recover_with_nothing_lost() {
    let shop = shop("netcut", 500, 500).await;
    let my_url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let my_at = warp_e2e::host_port(&my_url);
    let (my_port, pg_port) = (warp_e2e::free_port(), warp_e2e::free_port());
    let mut source = Proxy::start(my_port, my_at.clone()).await;
    let mut destination = Proxy::start(pg_port, "127.0.0.1:5432".into()).await;
    let text = std::fs::read_to_string(&shop.config).unwrap();
    // Attempts that give up on an unreachable destination after 2 s (30 by default), so
    // the retries run out within the test's patience.
    let proxied = text
        .replace(&my_at, &format!("127.0.0.1:{my_port}"))
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{pg_port}"))
        .replace(
            "destination: { type: postgresql,",
            "destination: { type: postgresql, connection_timeout: 2,",
        );
    assert_ne!(proxied, text);
    std::fs::write(&shop.config, proxied).unwrap();
    let health = warp_e2e::free_port();
    let mut run = shop.run_replica("netcut-a", health);
    shop.wait_streaming(2).await;

    for (cut, reason) in [
        ("source", "source unreachable"),
        ("destination", "destination unreachable"),
    ] {
        let port = if cut == "source" {
            source.cut().await;
            my_port
        } else {
            destination.cut().await;
            pg_port
        };
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the {cut} proxy still accepts"
        );
        shop.update_each("orders", "status", &cut[..3], 50, 20)
            .await;
        wait_retries_exhausted(&shop, health, reason).await;
        if cut == "source" {
            source = Proxy::start(my_port, my_at.clone()).await;
        } else {
            destination = Proxy::start(pg_port, "127.0.0.1:5432".into()).await;
        }
        for t in ["orders", "customers"] {
            shop.wait_equal(t).await;
            shop.assert_no_double_apply(t).await;
        }
    }
    assert!(run.terminate().success(), "{}", shop.log());
}

/// A statement of a streaming batch cancelled by PostgreSQL's `statement_timeout`
/// (`destination.command_timeout`, 1 s here) while another session's lock holds it: the
/// whole batch rolls back and is retried until the lock goes; nothing is half-applied or
/// applied twice, and the other table goes on meanwhile.
#[tokio::test]
async fn a_batch_cancelled_by_the_statement_timeout_is_retried_whole() {
    let shop = Arc::new(shop("stmttimeout", 500, 500).await);
    let text = std::fs::read_to_string(&shop.config).unwrap();
    let timed = text.replace(
        "destination: { type: postgresql,",
        "destination: { type: postgresql, command_timeout: 1,",
    );
    assert_ne!(timed, text);
    std::fs::write(&shop.config, timed).unwrap();
    let mut run = shop.run();
    shop.wait_streaming(2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&shop, &["orders", "customers"], 50, &stop);
    let lock = shop.lock_landing("orders").await;
    shop.wait_log("statement timeout", "a batch statement cancelled")
        .await;
    drop(lock);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for t in ["orders", "customers"] {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    assert!(run.terminate().success(), "{}", shop.log());
}

/// `stream_during_copy`: the binlog purged down to the current file while a large table
/// is part copied, under writes. The copy finishes and the table streams on: it never
/// needs a position older than its last copy step. (A copy before streaming would need
/// the position from before the copy: the table would stop, its position lost.)
#[tokio::test]
async fn the_binlog_purged_mid_copy_does_not_stop_a_table_copied_inside_its_stream() {
    let my = PrivateMariadb::start("purgecopy");
    let pg_url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let shop = Arc::new(shop_at("purgecopy", 200_000, 1_000, &my.url(), &pg_url).await);
    shop.copy_inside_the_stream();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&shop, &["orders", "customers"], 200_000, &stop);
    let mut run = shop.run();
    let chunks = |done: bool| {
        format!(
            "SELECT count(*) FROM {}_meta.snapshot_chunks WHERE table_name = 'orders' AND done_position IS {} NULL",
            shop.db,
            if done { "NOT" } else { "" }
        )
    };
    shop.wait_log("copy planned inside the stream", "the copy to start")
        .await;
    let part_copied = async || (shop.scalar_pg(chunks(true)).await >= 10).then_some(());
    warp_e2e::eventually_with("orders part copied", Poll::TIGHT, part_copied, || {
        shop.log()
    })
    .await;
    purge_all_but_the_current_binlog(&shop).await;
    let left = shop.scalar_pg(chunks(false)).await;
    assert!(left > 0, "the copy ended before the purge\n{}", shop.log());
    shop.wait_log("copy inside the stream done", "the copy to end")
        .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for t in ["orders", "customers"] {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    let log = shop.log();
    assert!(!log.contains("no longer available"), "{log}");
    assert!(run.terminate().success(), "{}", shop.log());
}
