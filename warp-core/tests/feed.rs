//! The shared change feed with the in-memory doubles: one feed for every table, routed to
//! per-table writers; a stalled table pauses alone; tables joining behind the feed, and
//! restarts, lose and duplicate nothing.

use warp_core::testing::{wait_for, FailPoint, MemorySink, MemorySource};
use warp_core::{Retry, TableState, Value};

mod common;
use common::*;

const TABLES: [&str; 4] = ["orders", "customers", "items", "payments"];

fn source_with_tables(rows: i64) -> MemorySource {
    let source = MemorySource::new("shop").with_feed();
    for t in TABLES {
        source.create_table(t);
        for id in 1..=rows {
            source.insert(t, row(id, 0));
        }
    }
    source
}

fn all_tables() -> String {
    TABLES.iter().map(|t| format!("    {t}: {{}}\n")).collect()
}

async fn wait_equal(source: &MemorySource, sink: &MemorySink) {
    for t in TABLES {
        sink.wait_until_equal(source, "shop", t).await;
    }
}

/// Every table copied, then a change to each streamed: all of them run on the feed.
async fn streaming_through_the_feed(source: &MemorySource, sink: &MemorySink) {
    wait_equal(source, sink).await;
    for t in TABLES {
        source.update(t, row(1, 1));
    }
    wait_equal(source, sink).await;
}

/// Every table equal at the destination, no change applied twice.
async fn applied_once(source: &MemorySource, sink: &MemorySink) {
    wait_equal(source, sink).await;
    for t in TABLES {
        assert_no_double_apply(source, sink, t);
    }
}

#[tokio::test]
async fn every_table_streams_through_one_feed_without_loss_or_duplicates() {
    let source = source_with_tables(30);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    streaming_through_the_feed(&source, &sink).await;
    let opened = source.feeds_opened();
    assert!(opened >= 1, "the tables stream through the feed");
    for generation in 2..=6 {
        for (i, t) in TABLES.iter().enumerate() {
            source.update(t, row(1 + i as i64, generation));
            source.insert(t, row(100 * generation + i as i64, 0));
        }
        source.delete("orders", vec![Value::Int(10 + generation)]);
    }
    applied_once(&source, &sink).await;
    assert_eq!(
        source.feeds_opened(),
        opened,
        "streaming all tables needs no further opens of the feed"
    );
    run.stop().await;
}

#[tokio::test]
async fn a_stalled_table_does_not_hold_back_the_others() {
    let source = source_with_tables(5);
    let sink = destination();
    // Small batches: the orders writer blocks on the lock after ten changes, so the rest
    // fill its queues instead of its batch.
    let tables = all_tables().replace("orders: {}", "orders: { batch_size: 10 }");
    let run = start(&source, &sink, schema(&tables), settings());
    wait_equal(&source, &sink).await;
    wait_for("all streaming", WAIT, || {
        TABLES.iter().all(|t| {
            run.status
                .get(&key(t))
                .is_some_and(|s| s.state == TableState::Streaming)
        })
    })
    .await;

    sink.lock_table("orders");
    // More changes than the stalled table's queues hold, interleaved with the others'.
    for generation in 1..=200 {
        source.update("orders", row(1 + generation % 5, generation));
        source.update("customers", row(1 + generation % 5, generation));
    }
    source.insert("items", row(77, 0));
    // The others commit while orders is locked.
    sink.wait_until_equal(&source, "shop", "customers").await;
    sink.wait_until_equal(&source, "shop", "items").await;
    assert_ne!(
        sink.live_rows("shop", "orders"),
        source.rows("orders"),
        "orders was locked: it cannot have caught up"
    );

    sink.unlock_table("orders");
    applied_once(&source, &sink).await;
    run.stop().await;
}

#[tokio::test]
async fn a_table_joining_behind_the_feed_gets_everything_and_the_others_nothing_twice() {
    let source = source_with_tables(20);
    let sink = destination();
    // `items` copies slowly (one row per chunk): it joins the feed long after the others.
    let tables = "    orders: {}\n    customers: {}\n    payments: {}\n    items: { snapshot_chunk_size: 1 }\n";
    let run = start(&source, &sink, schema(tables), settings());
    for generation in 1..=30 {
        for t in TABLES {
            source.update(t, row(1 + generation % 20, generation));
        }
    }
    wait_equal(&source, &sink).await;
    for generation in 31..=40 {
        for t in TABLES {
            source.update(t, row(1 + generation % 20, generation));
        }
    }
    applied_once(&source, &sink).await;
    run.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_every_table_from_its_own_checkpoint() {
    let source = source_with_tables(10);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    wait_equal(&source, &sink).await;
    // Changes to some tables only, so checkpoints differ between tables.
    for generation in 1..=20 {
        source.update("orders", row(1 + generation % 10, generation));
    }
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;

    for generation in 21..=40 {
        for t in TABLES {
            source.update(t, row(1 + generation % 10, generation));
        }
    }
    let run = start(&source, &sink, schema(&all_tables()), settings());
    applied_once(&source, &sink).await;
    run.stop().await;
}

#[tokio::test]
async fn a_feed_error_is_retried_by_every_table_and_loses_nothing() {
    let source = source_with_tables(10);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    wait_equal(&source, &sink).await;
    source
        .faults()
        .arm(FailPoint::StreamNext, Some("payments"), 2, Retry::Transient);
    for generation in 1..=10 {
        for t in TABLES {
            source.update(t, row(generation, generation));
        }
    }
    wait_equal(&source, &sink).await;
    assert_eq!(source.faults().pending(FailPoint::StreamNext), 0);
    for t in TABLES {
        assert_no_double_apply(&source, &sink, t);
    }
    run.stop().await;
}

/// A feed that goes silent — a connection whose peer vanished without closing it — is
/// presumed dead after `read_timeout` and reopened; nothing is lost.
#[tokio::test]
async fn a_silent_feed_is_reopened_after_the_read_timeout() {
    let source = source_with_tables(5);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    streaming_through_the_feed(&source, &sink).await;
    let opened = source.feeds_opened();
    source.hang_open_feeds();
    for t in TABLES {
        source.update(t, row(2, 1));
    }
    // Only a reopened feed can deliver these.
    wait_equal(&source, &sink).await;
    assert!(source.feeds_opened() > opened);
    for t in TABLES {
        assert_no_double_apply(&source, &sink, t);
    }
    run.stop().await;
}

#[tokio::test]
async fn a_large_transaction_stalled_mid_way_is_applied_once() {
    let source = source_with_tables(3);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    wait_equal(&source, &sink).await;
    sink.lock_table("orders");
    // 2,000 changes: the feed delivers them in fragments, more than the queues hold.
    source.transaction("orders", (1000..3000).map(|id| row(id, 0)).collect());
    source.insert("customers", row(500, 0));
    sink.wait_until_equal(&source, "shop", "customers").await;
    assert!(
        sink.live_rows("shop", "orders").len() < 2003,
        "orders was locked"
    );
    sink.unlock_table("orders");
    wait_equal(&source, &sink).await;
    assert_no_double_apply(&source, &sink, "orders");
    run.stop().await;
}

#[tokio::test]
async fn a_table_created_while_running_is_copied_then_streamed_without_a_restart() {
    let source = source_with_tables(5);
    let sink = destination();
    let run = start(&source, &sink, schema(&all_tables()), settings());
    wait_equal(&source, &sink).await;
    source.create_table("refunds");
    for id in 1..=50 {
        source.insert("refunds", row(id, 0));
    }
    sink.wait_until_equal(&source, "shop", "refunds").await;
    source.update("refunds", row(7, 1));
    source.update("orders", row(1, 1));
    sink.wait_until_equal(&source, "shop", "refunds").await;
    wait_equal(&source, &sink).await;
    assert_no_double_apply(&source, &sink, "refunds");
    run.stop().await;
}

/// The engine passes each table its own settings, in snapshot reads and in the feed (and
/// per-table streams): a source never looks them up itself.
#[tokio::test]
async fn each_table_is_read_with_its_own_settings() {
    for feed in [true, false] {
        let source = source_with_tables(15);
        let source = if feed { source } else { source.without_feed() };
        let sink = destination();
        let tables =
            "    orders: { polling_interval: 2, change_detection_column: updated_at }\n    \
                      customers: {}\n    items: {}\n    payments: {}\n";
        let run = start(&source, &sink, schema(tables), settings());
        streaming_through_the_feed(&source, &sink).await;
        let orders = source
            .read_settings_seen("orders")
            .expect("orders was read");
        assert_eq!(orders.polling_interval, std::time::Duration::from_secs(2));
        assert_eq!(orders.change_column.as_deref(), Some("updated_at"));
        let items = source.read_settings_seen("items").expect("items was read");
        assert_eq!(items.polling_interval, std::time::Duration::from_secs(5));
        assert_eq!(items.change_column, None, "feed: {feed}");
        run.stop().await;
    }
}

/// A landing table is read the way it was created: one an older release created (no
/// landing version recorded) keeps the unrecorded version, while a table created now
/// records the source's current one — so a source that changed how it lands keys keeps
/// the old keys where rows already hold them.
#[tokio::test]
async fn each_table_is_read_with_the_landing_version_it_was_created_with() {
    use warp_core::{LandingVersion, Sink, Source, Target};
    for feed in [true, false] {
        let source = source_with_tables(15).with_landing_version(LandingVersion(1));
        let source = if feed { source } else { source.without_feed() };
        let sink = destination();
        let resolved = schema(&all_tables());
        let orders = source
            .discover(&resolved)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id.name == "orders")
            .unwrap();
        let created = sink
            .ensure_table(&Target::new(&resolved, &orders.id), &orders)
            .await
            .unwrap();
        assert_eq!(created, LandingVersion::UNRECORDED);
        let run = start(&source, &sink, resolved, settings());
        streaming_through_the_feed(&source, &sink).await;
        let landing = |t: &str| source.read_settings_seen(t).expect("read").landing;
        assert_eq!(
            landing("orders"),
            LandingVersion::UNRECORDED,
            "feed: {feed}"
        );
        assert_eq!(landing("items"), LandingVersion(1), "feed: {feed}");
        run.stop().await;
    }
}
