//! A crash at each durable step (`WARP_FAILPOINTS`, warp_core::failpoint): the replicator
//! aborts at the step, as abruptly as SIGKILL, while writes keep coming; the next start
//! resumes, and at the end the destination equals the source with no change applied
//! twice.

use warp_fixtures::mysql_shop;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_shop::{shop, Shop};
use warp_core::failpoint::Point;
use warp_e2e::{Poll, Process};

fn start(shop: &Shop, cycle: usize, failpoint: Option<&str>) -> (Process, PathBuf) {
    let log = shop.dir.join(&format!("run-{cycle}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cartridge-warp"));
    cmd.args(["run", "--config", shop.config.to_str().unwrap()])
        .env("POD_NAME", "failpoints");
    if let Some(f) = failpoint {
        cmd.env(warp_core::failpoint::VARIABLE, f);
    }
    (Process::start(cmd, &log), log)
}

/// Waits for the armed process to abort at `point`.
async fn crashes_at(run: &mut Process, log: &Path, point: Point) {
    let point = point.name();
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let exited = || run.0.try_wait().unwrap();
    let status = warp_e2e::eventually(&format!("{point} reached"), exited, text).await;
    assert_eq!(
        status.signal(),
        Some(6),
        "{point}: aborted, not {status}\n{}",
        text()
    );
    assert!(
        text().contains(&format!("failpoint {point} reached")),
        "{}",
        text()
    );
}

async fn phase(shop: &Shop, table: &str) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT phase FROM {}_meta.checkpoints WHERE table_name = '{table}'",
        shop.db
    )))
    .fetch_optional(&shop.pg)
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

const BATCH_STEPS: [Point; 6] = [
    Point::AfterRead,
    Point::BeforeWrite,
    Point::AfterWrite,
    Point::InsideCopy,
    Point::BeforeCommit,
    Point::AfterCommit,
];

#[tokio::test]
async fn a_crash_at_every_durable_step_loses_and_duplicates_nothing() {
    let shop = Arc::new(shop("failpoints", 20_000, 300).await);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (shop, stop) = (Arc::clone(&shop), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let id = (round * 53) % 20_000 + 1;
                shop.exec(&format!(
                    "UPDATE orders SET amount = amount + 1, status = 'r{round}' WHERE id = {id}"
                ))
                .await;
                shop.wrote("orders", id);
                if round % 4 == 0 {
                    let new_id = 100_000 + round;
                    shop.exec(&format!("INSERT INTO orders (id, customer_id, amount, status) VALUES ({new_id}, 1, 1.00, 'new')")).await;
                    shop.wrote("orders", new_id);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut cycle = 0;
    let mut crash = |spec: String, point: Point| {
        cycle += 1;
        let shop = Arc::clone(&shop);
        let cycle = cycle;
        async move {
            let (mut run, log) = start(&shop, cycle, Some(&spec));
            crashes_at(&mut run, &log, point).await;
        }
    };

    // During the snapshot: the first start creates the landing tables (a crash inside
    // that DDL), then each step of a chunk's transaction, a few chunks in.
    crash("inside_ddl=1".into(), Point::InsideDdl).await;
    for point in BATCH_STEPS {
        crash(format!("{}=3", point.name()), point).await;
        assert_eq!(
            phase(&shop, "orders").await,
            "snapshot",
            "{point:?}: crashed mid-snapshot"
        );
    }

    // Let the snapshot finish, then the same steps in streamed batches.
    let (mut run, _) = start(&shop, 100, None);
    let streaming = async || {
        let both = phase(&shop, "orders").await == "streaming"
            && phase(&shop, "customers").await == "streaming";
        both.then_some(())
    };
    let what = "both tables streaming";
    warp_e2e::eventually_with(what, Poll::SECONDS, streaming, || shop.log()).await;
    assert!(run.terminate().success());
    for point in BATCH_STEPS {
        crash(format!("{}=3", point.name()), point).await;
        assert_eq!(
            phase(&shop, "orders").await,
            "streaming",
            "{point:?}: crashed mid-stream"
        );
    }
    // A schema change in the stream: a crash between its DDL and its registry entry.
    let (mut run, log) = start(&shop, 300, Some("inside_ddl=1"));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let streaming = || (text().matches("streaming position").count() >= 2).then_some(());
    warp_e2e::eventually("both tables streaming again", streaming, text).await;
    shop.exec("ALTER TABLE orders ADD COLUMN channel VARCHAR(10) NULL DEFAULT 'web'")
        .await;
    crashes_at(&mut run, &log, Point::InsideDdl).await;

    let (mut run, _) = start(&shop, 200, None);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;
    shop.assert_no_double_apply("orders").await;
    assert!(run.terminate().success(), "{}", shop.log());
}
