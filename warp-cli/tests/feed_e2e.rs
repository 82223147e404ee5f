//! The shared binlog feed through the real binary: one dump connection per replica however
//! many tables it runs; a landing table locked in PostgreSQL holds back only its own
//! table; tables created at the source while running are replicated without a restart,
//! and a dropped one stops with the reason.

use warp_fixtures::mysql_shop;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mysql_shop::{keep_writing, shop};
use warp_core::TableState;

const IDLE: usize = 49;

#[tokio::test]
async fn fifty_one_tables_stream_through_one_binlog_connection() {
    let shop = Arc::new(shop("feed51", 2_000, 1_000).await);
    for i in 0..IDLE {
        shop.exec(&format!(
            "CREATE TABLE idle_{i:02} (id INT PRIMARY KEY, v VARCHAR(10))"
        ))
        .await;
        shop.exec(&format!(
            "INSERT INTO idle_{i:02} VALUES (1, 'x'), (2, 'y')"
        ))
        .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&shop, &["orders"], 2_000, &stop);
    shop.own_user().await;
    let mut run = shop.run();
    shop.wait_streaming(IDLE + 2).await;
    // Changes keep landing while we look.
    shop.wait_equal("customers").await;
    assert_eq!(
        shop.binlog_dumps().await,
        1,
        "one binlog dump for {} tables\n{}",
        IDLE + 2,
        shop.log()
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("orders").await;
    shop.assert_no_double_apply("orders").await;
    assert_eq!(shop.binlog_dumps().await, 1, "still one");
    assert!(run.terminate().success(), "{}", shop.log());
}

#[tokio::test]
async fn a_locked_landing_table_holds_back_only_its_own_table() {
    let shop = Arc::new(shop("feedlock", 500, 1_000).await);
    let mut run = shop.run();
    shop.wait_streaming(2).await;

    // Another session holds orders' landing table: its writer blocks on the lock.
    let lock = shop.lock_landing("orders").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(&shop, &["orders", "customers"], 50, &stop);
    // Customers' changes keep committing meanwhile, through the same feed: far more of
    // them than orders' queues hold, so the feed cannot have waited for orders.
    let versions = format!(
        "SELECT sum(_cartridge_version)::bigint FROM {}.customers",
        shop.db
    );
    let committed_before = shop.scalar_pg(versions.clone()).await;
    let committed = async || {
        let now = shop.scalar_pg(versions.clone()).await;
        (now >= committed_before + 150).then_some(())
    };
    let what = "customers committing while orders is locked";
    warp_e2e::eventually_with(what, warp_e2e::Poll::SECONDS, committed, || shop.log()).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("customers").await;

    lock.rollback().await.unwrap();
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;
    shop.assert_no_double_apply("orders").await;
    shop.assert_no_double_apply("customers").await;
    assert!(
        shop.log().contains("detached from the shared change feed"),
        "the stalled table was detached, not waited for\n{}",
        shop.log()
    );
    assert!(run.terminate().success(), "{}", shop.log());
}

#[tokio::test]
async fn a_table_created_while_running_is_replicated_and_a_dropped_one_stops_with_the_reason() {
    let shop = Arc::new(shop("feednew", 100, 1_000).await);
    shop.tune("table_discovery_interval", "1");
    let mut run = shop.run();
    shop.wait_streaming(2).await;

    shop.exec(
        "CREATE TABLE refunds (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(10))",
    )
    .await;
    shop.exec("INSERT INTO refunds SELECT seq, seq * 0.5, 'new' FROM seq_1_to_300")
        .await;
    for id in 1..=300 {
        shop.wrote("refunds", id);
    }
    shop.wait_equal("refunds").await;
    shop.wait_streaming(3).await;
    shop.exec("UPDATE refunds SET status = 'paid' WHERE id <= 10")
        .await;
    for id in 1..=10 {
        shop.wrote("refunds", id);
    }
    shop.wait_equal("refunds").await;
    shop.assert_no_double_apply("refunds").await;

    // A table dropped for good waits to be created again (a reload), retrying its copy
    // with the reason.
    shop.exec("DROP TABLE customers").await;
    let stopped = || {
        let customers = shop.status().into_iter().find(|t| t.table == "customers")?;
        let reason = customers.last_error.as_deref().unwrap_or_default();
        let waiting = matches!(
            customers.state,
            Some(TableState::Retrying | TableState::Failed)
        );
        (waiting && reason.contains("dropped at the source")).then_some(())
    };
    let state = || format!("{:?}\n{}", shop.status(), shop.log());
    warp_e2e::eventually("customers stopped with the reason", stopped, state).await;
    // The others go on.
    shop.exec("UPDATE orders SET status = 'after' WHERE id = 1")
        .await;
    shop.wrote("orders", 1);
    shop.wait_equal("orders").await;
    assert!(run.terminate().success(), "{}", shop.log());
}
