//! Engine behaviour with the in-memory doubles: handover, resume, retries, failure
//! isolation, draining, fencing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warp_core::testing::{wait_for, FailPoint, MemorySink, MemorySource};
use warp_core::{Column, ColumnType, Phase, Pipeline, Retry, Row, TableState, Value};

mod common;
use common::*;

#[tokio::test]
async fn snapshot_to_stream_handover_loses_and_duplicates_nothing() {
    let source = MemorySource::with_sample_table("shop", "orders", 100);
    let sink = destination();
    // While chunks are being read: update rows behind and ahead of the copy, insert new
    // rows ahead of it, delete a row ahead of it.
    let reads = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&reads);
    source.on_chunk_read(move |src| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        if n < 8 {
            src.update("orders", row(n * 10 + 1, 1)); // in the chunk just read
            src.update("orders", row(95 - n, 1)); // in a chunk not read yet
            src.insert("orders", row(1000 + n, 0)); // lands in the last chunk
            src.delete("orders", vec![Value::Int(99 - n)]);
        }
    });
    let run = start(
        &source,
        &sink,
        schema("    orders: { parallel_streams: 2 }\n"),
        settings(),
    );
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert!(
        reads.load(Ordering::SeqCst) >= 10,
        "the table was copied in chunks"
    );

    // Streaming after the handover.
    for id in 1..=20 {
        source.update("orders", row(id, 2));
    }
    source.insert("orders", row(5000, 0));
    source.delete("orders", vec![Value::Int(50)]);
    sink.wait_until_equal(&source, "shop", "orders").await;

    assert_no_double_apply(&source, &sink, "orders");
    let inserted_during_copy = sink
        .stored("shop", "orders")
        .into_iter()
        .find(|(k, _)| k == &vec![Value::Int(1000)])
        .expect("row inserted during the snapshot arrived");
    assert_eq!(
        inserted_during_copy.1.version, 1,
        "copied once, not replayed on top"
    );
    run.stop().await;
}

#[tokio::test]
async fn crash_mid_snapshot_resumes_at_last_finished_chunk() {
    let source = MemorySource::with_sample_table("shop", "orders", 100);
    let sink = destination();
    let reads = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&reads);
    let faults = sink.faults().clone();
    source.on_chunk_read(move |_| {
        // The fifth chunk's write dies (as if the process were killed mid-COPY).
        if counter.fetch_add(1, Ordering::SeqCst) == 4 {
            faults.arm(
                FailPoint::WriteSnapshot,
                Some("orders"),
                1,
                Retry::Permanent,
            );
        }
    });
    let tables = "    orders: { parallel_streams: 1 }\n";
    let run = start(&source, &sink, schema(tables), settings());
    wait_for("table to fail", WAIT, || {
        run.status
            .get(&key("orders"))
            .is_some_and(|s| s.state == TableState::Failed)
    })
    .await;
    // A failed table waits for a resync or shutdown; this "process" is shut down.
    run.stop().await;

    let Some(Phase::Snapshot { chunks, .. }) = sink.checkpoint("shop", "orders").map(|c| c.phase)
    else {
        panic!("checkpoint must still be in the snapshot phase");
    };
    let done: Vec<bool> = chunks.iter().map(|c| c.done.is_some()).collect();
    assert_eq!(
        done,
        [true, true, true, true, false, false, false, false, false, false]
    );
    assert_eq!(
        sink.live_rows("shop", "orders").len(),
        40,
        "only finished chunks landed"
    );

    let reads_before = source.chunk_reads().len();
    let run = start(&source, &sink, schema(tables), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    let resumed: Vec<_> = source.chunk_reads()[reads_before..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let expected: Vec<_> = chunks[4..].iter().map(|c| c.range.clone()).collect();
    assert_eq!(
        resumed, expected,
        "resume reads exactly the unfinished chunks"
    );
    assert!(sink
        .stored("shop", "orders")
        .iter()
        .all(|(_, r)| r.version == 1));
    run.stop().await;
}

#[tokio::test]
async fn transient_errors_are_retried() {
    let source = MemorySource::with_sample_table("shop", "orders", 30);
    let sink = destination();
    sink.faults()
        .arm(FailPoint::Prepare, None, 2, Retry::Transient);
    source
        .faults()
        .arm(FailPoint::ReadChunk, Some("orders"), 2, Retry::Transient);
    sink.faults()
        .arm(FailPoint::Commit, Some("orders"), 2, Retry::Transient);
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;

    source
        .faults()
        .arm(FailPoint::StreamNext, Some("orders"), 2, Retry::Transient);
    sink.faults()
        .arm(FailPoint::Apply, Some("orders"), 1, Retry::Transient);
    for id in 1..=10 {
        source.update("orders", row(id, 1));
    }
    sink.wait_until_equal(&source, "shop", "orders").await;
    for point in [FailPoint::Commit, FailPoint::Apply, FailPoint::Prepare] {
        assert_eq!(sink.faults().pending(point), 0, "{point:?} fired");
    }
    assert_eq!(source.faults().pending(FailPoint::StreamNext), 0);
    let status = run.status.get(&key("orders")).unwrap();
    assert_eq!(status.state, TableState::Streaming);
    assert!(status.last_error.unwrap_or_default().contains("injected"));
    assert_no_double_apply(&source, &sink, "orders");
    run.stop().await;
}

#[tokio::test]
async fn exhausted_retries_fail_then_recover_after_cooldown() {
    let source = MemorySource::with_sample_table("shop", "orders", 5);
    let sink = destination();
    // max_retries is 3: the fourth consecutive failure marks the table failed.
    sink.faults()
        .arm(FailPoint::EnsureTable, Some("orders"), 4, Retry::Transient);
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    wait_for("table to be marked failed", WAIT, || {
        run.status
            .get(&key("orders"))
            .is_some_and(|s| s.state == TableState::Failed)
    })
    .await;
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(
        run.status.get(&key("orders")).unwrap().state,
        TableState::Streaming
    );
    run.stop().await;
}

#[tokio::test]
async fn permanent_error_fails_only_its_table() {
    let source = MemorySource::with_sample_table("shop", "good", 20);
    source.create_table("bad");
    source.insert("bad", row(1, 0));
    let sink = destination();
    source
        .faults()
        .arm(FailPoint::PlanSnapshot, Some("bad"), 1, Retry::Permanent);
    let run = start(&source, &sink, schema("    good: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "good").await;
    wait_for("bad to fail", WAIT, || {
        run.status
            .get(&key("bad"))
            .is_some_and(|s| s.state == TableState::Failed)
    })
    .await;
    let bad = run.status.get(&key("bad")).unwrap();
    assert!(bad
        .last_error
        .unwrap()
        .contains("injected failure at PlanSnapshot"));

    source.insert("good", row(500, 0));
    source.insert("bad", row(2, 0));
    sink.wait_until_equal(&source, "shop", "good").await;
    assert!(
        sink.live_rows("shop", "bad").is_empty(),
        "the failed table stays stopped"
    );
    run.stop().await;
}

#[tokio::test]
async fn shutdown_commits_the_batch_in_hand() {
    let source = MemorySource::with_sample_table("shop", "orders", 10);
    let sink = destination();
    let mut s = settings();
    s.batch_max_wait = Duration::from_secs(3600); // only shutdown can flush this batch
    let run = start(
        &source,
        &sink,
        schema("    orders: { batch_size: 100000 }\n"),
        s,
    );
    sink.wait_until_equal(&source, "shop", "orders").await;
    let commits = sink.commits();

    for id in 1..=50 {
        source.update("orders", row(id % 10 + 1, id));
    }
    wait_for("50 changes in the batch", WAIT, || {
        run.status
            .get(&key("orders"))
            .is_some_and(|s| s.pending_changes == 50)
    })
    .await;
    assert_eq!(sink.commits(), commits, "nothing committed before shutdown");
    run.stop().await;

    assert_eq!(sink.live_rows("shop", "orders"), source.rows("orders"));
    let Some(Phase::Streaming { position, .. }) =
        sink.checkpoint("shop", "orders").map(|c| c.phase)
    else {
        panic!("streaming checkpoint expected");
    };
    assert_eq!(position, source.head());
    assert_eq!(sink.commits(), commits + 1, "one batch, one commit");
}

/// A change arriving after a quiet spell is written `batch_max_wait` after it arrives, not
/// at the next idle checkpoint: heartbeats had pushed the writer's deadline that far.
#[tokio::test]
async fn a_change_after_idle_heartbeats_is_not_held_until_the_idle_checkpoint() {
    // Through the shared feed, which tells idle tables where it is every second.
    let source = MemorySource::with_sample_table("shop", "orders", 5).with_feed();
    let sink = destination();
    let mut s = settings();
    s.idle_checkpoint_interval = Duration::from_secs(3600);
    let run = start(&source, &sink, schema("    orders: {}\n"), s);
    sink.wait_until_equal(&source, "shop", "orders").await;
    let heard = |after: chrono::DateTime<chrono::Utc>| {
        run.status
            .get(&key("orders"))
            .and_then(|s| s.last_source_ts)
            .is_some_and(|ts| ts > after)
    };
    let quiet_from = chrono::Utc::now();
    wait_for("a heartbeat", WAIT, || heard(quiet_from)).await;
    // One more heartbeat, sent later than batch_max_wait after that one was handled: the
    // deadline it set has passed, so the writer has gone idle.
    let idle_from = chrono::Utc::now() + chrono::Duration::milliseconds(30);
    wait_for("a later heartbeat", WAIT, || heard(idle_from)).await;

    source.update("orders", row(1, 1));
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;
}

/// A table whose contents the source replaces without row events (MongoDB's `$out`, or a
/// rename onto it) is copied again by itself: rows only the old contents had are gone.
#[tokio::test]
async fn a_table_replaced_at_the_source_is_copied_again() {
    let source = MemorySource::with_sample_table("shop", "orders", 10).with_feed();
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    source.update("orders", row(1, 1));
    sink.wait_until_equal(&source, "shop", "orders").await;
    let reads = source.chunk_reads().len();

    source.replace_contents("orders", (5..=15).map(|id| row(id, 7)).collect());
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert!(source.chunk_reads().len() > reads, "copied again");
    // And it streams on from the new copy.
    source.update("orders", row(15, 8));
    source.insert("orders", row(16, 0));
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;
}

#[tokio::test]
async fn restart_resumes_from_checkpoint_without_duplicates() {
    let source = MemorySource::with_sample_table("shop", "orders", 20);
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    for id in 1..=5 {
        source.update("orders", row(id, 1));
    }
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;

    // Written while the replicator is down.
    for id in 1..=5 {
        source.update("orders", row(id, 2));
    }
    source.delete("orders", vec![Value::Int(20)]);
    let reads = source.chunk_reads().len();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(
        source.chunk_reads().len(),
        reads,
        "no re-snapshot after a clean restart"
    );
    for (k, stored) in sink.stored("shop", "orders") {
        assert_eq!(stored.version, source.changes_for("orders", &k), "{k:?}");
    }
    run.stop().await;
}

#[tokio::test]
async fn full_load_disabled_streams_from_now() {
    let source = MemorySource::with_sample_table("shop", "events", 10);
    let sink = destination();
    let run = start(
        &source,
        &sink,
        schema("    events: { full_load_enabled: false }\n"),
        settings(),
    );
    wait_for("streaming", WAIT, || {
        run.status
            .get(&key("events"))
            .is_some_and(|s| s.state == TableState::Streaming)
    })
    .await;
    source.insert("events", row(100, 0));
    source.update("events", row(1, 1));
    wait_for("two new changes", WAIT, || {
        sink.live_rows("shop", "events").len() == 2
    })
    .await;
    assert_eq!(
        sink.live_rows("shop", "events"),
        vec![row(1, 1), row(100, 0)]
    );
    assert!(source.chunk_reads().is_empty(), "no snapshot");
    run.stop().await;
}

#[tokio::test]
async fn large_transaction_is_committed_once() {
    let source = MemorySource::with_sample_table("shop", "orders", 5);
    let sink = destination();
    let mut s = settings();
    s.batch_max_wait = Duration::from_secs(3600);
    let run = start(
        &source,
        &sink,
        schema("    orders: { batch_size: 50 }\n"),
        s,
    );
    sink.wait_until_equal(&source, "shop", "orders").await;
    let commits = sink.commits();
    source.transaction("orders", (1..=500).map(|id| row(id, 7)).collect());
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(
        sink.commits(),
        commits + 1,
        "a source transaction is never split"
    );
    run.stop().await;
}

#[tokio::test]
async fn schema_changes_apply_in_order_with_rows() {
    let source = MemorySource::with_sample_table("shop", "orders", 5);
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    let mut col = Column::new("status", ColumnType::Text { max_len: Some(20) });
    col.default = Some(Value::Text("new".into()));
    source.add_column("orders", col);
    let mut r = row(6, 0);
    r.values.push(Value::Text("paid".into()));
    source.insert("orders", r);
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(sink.schema_of("shop", "orders").unwrap().columns.len(), 4);
    assert_eq!(
        sink.live_rows("shop", "orders")[0].values[3],
        Value::Text("new".into())
    );
    run.stop().await;
}

/// A column renamed while the engine is stopped, with changes on both sides of the
/// rename: a source that replays DDL from its log resumes from the shape recorded at the
/// checkpoint, so the rename applies at its position and the landing table is renamed,
/// not given a second column. Starting from today's shape instead, the replayed rename
/// meets a column that already exists and the table fails.
#[tokio::test]
async fn a_rename_while_stopped_replays_from_the_recorded_shape() {
    let source = MemorySource::with_sample_table("shop", "orders", 5).with_schema_in_log();
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    source.update("orders", row(1, 3));
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;
    let recorded = sink.checkpoint("shop", "orders").and_then(|c| c.shape);
    let recorded = recorded.expect("the streaming checkpoint records the shape");
    assert!(recorded.column_index("name").is_some());

    source.update("orders", row(2, 4));
    source.rename_column("orders", "name", "title");
    source.update("orders", row(3, 5));
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    let landed = sink.schema_of("shop", "orders").unwrap();
    let names: Vec<&str> = landed.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "title", "qty"], "renamed in place");
    let recorded = sink.checkpoint("shop", "orders").and_then(|c| c.shape);
    assert_eq!(
        recorded.map(|s| s.columns[1].name.clone()).as_deref(),
        Some("title")
    );
    run.stop().await;
}

#[tokio::test]
async fn excluded_columns_never_land() {
    let source = MemorySource::with_sample_table("shop", "orders", 5);
    let sink = destination();
    let run = start(
        &source,
        &sink,
        schema("    orders: { exclude_columns: [name] }\n"),
        settings(),
    );
    wait_for("snapshot", WAIT, || {
        sink.live_rows("shop", "orders").len() == 5
    })
    .await;
    source.update("orders", row(1, 9));
    wait_for("update", WAIT, || {
        sink.live_rows("shop", "orders")[0] == Row::new(vec![Value::Int(1), Value::Int(19)])
    })
    .await;
    let cols: Vec<_> = sink
        .schema_of("shop", "orders")
        .unwrap()
        .columns
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(cols, ["id", "qty"]);
    run.stop().await;
}

#[tokio::test]
async fn fenced_writer_cannot_commit() {
    let source = MemorySource::with_sample_table("shop", "orders", 5);
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    // Another replica takes the table over (as once the lease lapsed).
    sink.take_over(&key("orders"), "other-pod");
    source.insert("orders", row(99, 0));
    wait_for("fenced table to leave this replica", WAIT, || {
        run.status.get(&key("orders")).is_none()
    })
    .await;
    assert_eq!(
        sink.lease_owner(&key("orders")).as_deref(),
        Some("other-pod")
    );
    if sink.checkpoints_apart() {
        // Data committed alone is not fenced (a destination without a shared transaction
        // relies on idempotent writes): what the stale owner cannot do is move the
        // checkpoint, so the new owner reads its changes again.
        let checkpoint = sink.checkpoint("shop", "orders").unwrap();
        assert!(
            matches!(&checkpoint.phase, Phase::Streaming { position, .. } if *position != source.head()),
            "the stale owner's checkpoint was refused: {checkpoint:?}"
        );
    } else {
        assert_eq!(
            sink.live_rows("shop", "orders").len(),
            5,
            "the stale owner wrote nothing"
        );
    }
    run.stop().await;
}

#[tokio::test]
async fn a_checkpoint_lost_after_its_data_landed_only_replays_the_batch() {
    let source = MemorySource::with_sample_table("shop", "orders", 20);
    let sink = MemorySink::with_checkpoints_apart();
    let run = start(
        &source,
        &sink,
        schema(
            "    orders: {}
",
        ),
        settings(),
    );
    sink.wait_until_equal(&source, "shop", "orders").await;
    let commits = sink.commits();
    sink.faults().arm(
        FailPoint::SaveCheckpoint,
        Some("orders"),
        2,
        Retry::Transient,
    );
    for id in 1..=10 {
        source.update("orders", row(id, 1));
    }
    source.delete("orders", vec![Value::Int(20)]);
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(sink.faults().pending(FailPoint::SaveCheckpoint), 0);
    assert!(
        sink.commits() >= commits + 3,
        "the data committed, its checkpoint failed, the batch was applied again"
    );
    let status = run.status.get(&key("orders")).unwrap();
    assert_eq!(status.state, TableState::Streaming);
    run.stop().await;
}

#[tokio::test]
async fn table_without_key_is_rejected_with_a_hint() {
    let source = MemorySource::new("shop");
    let mut schema_def = warp_core::TableSchema {
        id: warp_core::TableId::new("shop", "log"),
        columns: vec![Column::new("line", ColumnType::Text { max_len: None })],
        primary_key: vec![],
    };
    source.create_table_with(schema_def.clone());
    source.create_table("orders");
    let sink = destination();
    let run = start(&source, &sink, schema("    orders: {}\n"), settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    let log = run.status.get(&key("log")).unwrap();
    assert_eq!(log.state, TableState::Failed);
    assert!(log.hint.unwrap().contains("primary_key"));
    run.stop().await;

    // With `primary_key` configured the same table replicates.
    schema_def.primary_key = vec![];
    let run = start(
        &source,
        &sink,
        schema("    log: { primary_key: line }\n"),
        settings(),
    );
    wait_for("log streaming", WAIT, || {
        run.status
            .get(&key("log"))
            .is_some_and(|s| s.state == TableState::Streaming)
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn dry_run_plans_and_writes_nothing() {
    let source = MemorySource::with_sample_table("shop", "orders", 42);
    source.create_table_with(warp_core::TableSchema {
        id: warp_core::TableId::new("shop", "nokey"),
        columns: vec![Column::new("x", ColumnType::Int32)],
        primary_key: vec![],
    });
    let sink = destination();
    let pipeline = Pipeline::new(
        schema("    orders: { parallel_streams: 3 }\n"),
        Arc::new(source.clone()),
        Arc::new(sink.clone()),
        Arc::new(sink.control()),
        settings(),
    );
    let plans = pipeline.plan().await.unwrap();
    assert_eq!(plans.len(), 2);
    let nokey = plans.iter().find(|p| p.table == "nokey").unwrap();
    assert!(nokey.problem.as_deref().unwrap().contains("primary_key"));
    let orders = plans.iter().find(|p| p.table == "orders").unwrap();
    assert_eq!(
        (
            orders.estimated_rows,
            orders.parallel_streams,
            orders.snapshot
        ),
        (Some(42), 3, true)
    );
    assert_eq!(orders.ddl, ["create shop.orders (3 columns)"]);
    assert!(sink.is_untouched(), "a dry run writes nothing");
}

#[tokio::test]
async fn resync_recopies_one_table_while_others_stream() {
    let source = MemorySource::with_sample_table("shop", "a", 30);
    source.create_table("b");
    source.insert("b", row(1, 0));
    let sink = destination();
    let pipeline = Pipeline::new(
        schema("    a: {}\n"),
        Arc::new(source.clone()),
        Arc::new(sink.clone()),
        Arc::new(sink.control()),
        settings(),
    );
    let control = pipeline.control();
    let status = pipeline.status();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(pipeline.run(shutdown.clone()));
    sink.wait_until_equal(&source, "shop", "a").await;
    sink.wait_until_equal(&source, "shop", "b").await;
    let reads_of = |t: &str| {
        source
            .chunk_reads()
            .iter()
            .filter(|(name, _)| name == t)
            .count()
    };
    let (a_reads, b_reads) = (reads_of("a"), reads_of("b"));

    assert!(!control.resync("nope"), "unknown tables are refused");
    assert!(control.resync("a"));
    source.insert("b", row(2, 0));
    wait_for("a copied again", WAIT, || reads_of("a") > a_reads).await;
    sink.wait_until_equal(&source, "shop", "a").await;
    sink.wait_until_equal(&source, "shop", "b").await;
    assert_eq!(reads_of("b"), b_reads, "b was not re-copied");
    assert_eq!(status.get(&key("a")).unwrap().state, TableState::Streaming);
    assert!(
        sink.stored("shop", "a").iter().all(|(_, r)| r.version == 1),
        "re-copied rows are not new versions"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// A resync copies over the landing table: rows the source deleted where the stream
/// could not see it (a purged log, a dropped partition: no log entry) are removed at the
/// end of the copy, soft-deleted as configured; a crash in the middle of that copy keeps
/// the decision, and a table copied into an empty landing table skips the sweep.
#[tokio::test]
async fn a_recopy_removes_the_rows_the_source_no_longer_has() {
    for strategy in ["soft", "hard"] {
        let source = MemorySource::with_sample_table("shop", "a", 30);
        let sink = destination();
        let pipeline = Pipeline::new(
            schema(&format!("    a: {{ deletion_strategy: {strategy} }}\n")),
            Arc::new(source.clone()),
            Arc::new(sink.clone()),
            Arc::new(sink.control()),
            settings(),
        );
        let control = pipeline.control();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(pipeline.run(shutdown.clone()));
        sink.wait_until_equal(&source, "shop", "a").await;
        for id in [3, 7, 29] {
            source.delete_unlogged("a", vec![Value::Int(id)]);
        }
        assert_eq!(sink.live_rows("shop", "a").len(), 30, "unlogged: unseen");
        // The re-copy's first read fails after its plan committed: resumed from its
        // checkpoint, it still sweeps.
        source
            .faults()
            .arm(FailPoint::ReadChunk, Some("a"), 1, Retry::Transient);
        assert!(control.resync("a"));
        sink.wait_until_equal(&source, "shop", "a").await;
        assert_eq!(sink.live_rows("shop", "a").len(), 27, "{strategy}");
        let stored = sink.stored("shop", "a");
        let gone: Vec<_> = stored
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(k, _)| k)
            .collect();
        if strategy == "soft" {
            let expected = [3, 7, 29].map(|id| vec![Value::Int(id)]);
            assert_eq!(gone, expected.iter().collect::<Vec<_>>());
        } else {
            assert!(gone.is_empty() && stored.len() == 27, "hard: removed");
        }
        assert_eq!(
            source.faults().pending(FailPoint::ReadChunk),
            0,
            "the read failed"
        );
        shutdown.cancel();
        handle.await.unwrap().unwrap();
    }
}

/// Table `a` (300 rows, chunks of 20) streaming from a source that re-copies while
/// streaming.
async fn streaming_in_fifteen_chunks() -> (MemorySource, MemorySink, Running) {
    let source = MemorySource::with_sample_table("shop", "a", 300).with_recopy_while_streaming();
    let sink = destination();
    let tables = schema("    a: { snapshot_chunk_size: 20 }\n");
    let run = start(&source, &sink, tables, settings());
    sink.wait_until_equal(&source, "shop", "a").await;
    (source, sink, run)
}

/// A resync of a streaming table whose source reads chunks at exact log positions: the
/// table is copied again chunk by chunk between the stream's batches while a writer
/// keeps changing it. Its checkpoint never leaves streaming, rows deleted behind the
/// log's back are swept, and no row counts more versions than the source made changes.
#[tokio::test]
async fn a_resync_recopies_while_the_table_keeps_streaming() {
    let (source, sink, run) = streaming_in_fifteen_chunks().await;
    let control = &run.control;
    for id in [3, 77, 299] {
        source.delete_unlogged("a", vec![Value::Int(id)]);
    }
    let reads_before = source.chunk_reads().len();
    let writer = {
        let source = source.clone();
        tokio::spawn(async move {
            for round in 1..=40 {
                for id in (1..=300).step_by(13) {
                    if ![3, 77, 299].contains(&id) {
                        source.update("a", row(id, round));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Seen at every chunk read of the re-copy: the checkpoint is a streaming one (a full
    // resync plans a snapshot first).
    let phases = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let (sink, phases) = (sink.clone(), Arc::clone(&phases));
        source.on_chunk_read(move |_| {
            let phase = sink.checkpoint("shop", "a").map(|c| c.phase);
            let streaming = matches!(phase, Some(Phase::Streaming { .. }));
            phases.lock().unwrap().push(streaming);
        });
    }
    assert!(control.resync("a"));
    wait_for("the re-copy to read every chunk", WAIT, || {
        source.chunk_reads().len() >= reads_before + 15
    })
    .await;
    let phases = phases.lock().unwrap().clone();
    assert!(
        phases.len() >= 15 && phases.iter().all(|s| *s),
        "{phases:?}"
    );
    writer.await.unwrap();
    sink.wait_until_equal(&source, "shop", "a").await;
    assert_eq!(sink.live_rows("shop", "a").len(), 297, "swept");
    // The swept rows' deletes are the source's own, made without the log: counted apart.
    for (k, stored) in sink.stored("shop", "a") {
        let changes = source.changes_for("a", &k) + u64::from(stored.deleted);
        assert!(
            stored.version <= changes,
            "{k:?}: version {} of {changes}",
            stored.version
        );
    }
    run.stop().await;
}

/// `stream_during_copy`: a table's first copy runs inside its stream from the start —
/// no snapshot phase at any chunk read, changes made during the copy stream at once, and
/// the table ends equal. A crash before its first chunk still copies them all (the plan
/// is in the first checkpoint): the first read fails here and the attempt restarts.
#[tokio::test]
async fn a_first_copy_can_run_inside_the_stream() {
    let source = MemorySource::with_sample_table("shop", "a", 300).with_recopy_while_streaming();
    let sink = destination();
    let phases = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let (sink, phases) = (sink.clone(), Arc::clone(&phases));
        source.on_chunk_read(move |s| {
            let phase = sink.checkpoint("shop", "a").map(|c| c.phase);
            phases
                .lock()
                .unwrap()
                .push(matches!(phase, Some(Phase::Streaming { .. })));
            if s.chunk_reads().len() == 3 {
                s.update("a", row(290, 1));
            }
        });
    }
    source
        .faults()
        .arm(FailPoint::ReadChunk, Some("a"), 1, Retry::Transient);
    let tables = schema("    a: { snapshot_chunk_size: 20, stream_during_copy: true }\n");
    let run = start(&source, &sink, tables, settings());
    sink.wait_until_equal(&source, "shop", "a").await;
    let phases = phases.lock().unwrap().clone();
    assert!(
        phases.len() == 15 && phases.iter().all(|s| *s),
        "{phases:?}"
    );
    assert_eq!(
        source.faults().pending(FailPoint::ReadChunk),
        0,
        "the read failed"
    );
    assert_no_double_apply(&source, &sink, "a");
    run.stop().await;
}

/// A re-copy interrupted after five of its fifteen chunks (the sixth read fails, the
/// attempt restarts from the checkpoint) goes on from its sixth chunk: its chunks to go
/// are recorded with each streaming checkpoint. Started over, it would read 20 chunks.
#[tokio::test]
async fn an_interrupted_recopy_resumes_from_its_next_chunk() {
    let (source, sink, run) = streaming_in_fifteen_chunks().await;
    let control = &run.control;
    source.delete_unlogged("a", vec![Value::Int(150)]);
    let before = source.chunk_reads().len();
    source.on_chunk_read(move |s| {
        if s.chunk_reads().len() == before + 5 {
            s.faults()
                .arm(FailPoint::ReadChunk, Some("a"), 1, Retry::Transient);
        }
    });
    assert!(control.resync("a"));
    wait_for("the re-copy's sweep", WAIT, || {
        sink.live_rows("shop", "a").len() == 299
    })
    .await;
    assert_eq!(
        source.faults().pending(FailPoint::ReadChunk),
        0,
        "the read failed"
    );
    assert_eq!(source.chunk_reads().len(), before + 15);
    sink.wait_until_equal(&source, "shop", "a").await;
    run.stop().await;
}

#[tokio::test]
async fn a_chunk_that_needs_a_wider_shape_evolves_the_table_and_is_read_again() {
    let source = MemorySource::with_sample_table("shop", "orders", 40);
    source.infer_shape();
    // After the first chunk is read, the data grows a field the discovered shape lacks
    // (as a document source finds a new field in a later document).
    let added = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&added);
    source.on_chunk_read(move |s| {
        if !flag.swap(true, Ordering::SeqCst) {
            s.add_column(
                "orders",
                Column::new("note", ColumnType::Text { max_len: None }),
            );
        }
    });
    let sink = destination();
    let run = start(
        &source,
        &sink,
        schema("    orders: { parallel_streams: 2 }\n"),
        settings(),
    );
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(sink.schema_of("shop", "orders").unwrap().columns.len(), 4);
    let reads = source.chunk_reads().len();
    assert!(
        reads > 4,
        "40 rows in chunks of 10 are 4 reads, plus re-reads after the reshape ({reads})"
    );
    // The stream replays the column addition; the table already has it.
    let mut r = row(41, 0);
    r.values.push(Value::Text("late".into()));
    source.insert("orders", r);
    sink.wait_until_equal(&source, "shop", "orders").await;
    run.stop().await;
}

#[tokio::test]
async fn a_chunk_read_in_the_old_shape_lands_before_another_chunk_widens_the_table() {
    // Chunk 1 reads its rows in the discovered shape and is held before writing them;
    // meanwhile chunk 2 meets the wider data. The table may only widen once chunk 1's
    // rows are in (they were read in the old shape), never under them.
    let source = MemorySource::with_sample_table("shop", "orders", 40);
    source.infer_shape();
    let sink = destination();
    let added = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, held) = (Arc::clone(&added), sink.clone());
    source.on_chunk_read(move |s| {
        if !flag.swap(true, Ordering::SeqCst) {
            held.lock_table("orders");
            s.add_column(
                "orders",
                Column::new("note", ColumnType::Text { max_len: None }),
            );
        }
    });
    let run = start(
        &source,
        &sink,
        schema("    orders: { parallel_streams: 2 }\n"),
        settings(),
    );
    wait_for("the second chunk read", WAIT, || {
        source.chunk_reads().len() >= 2
    })
    .await;
    sink.unlock_table("orders");
    wait_for("the table copied", WAIT, || {
        let state = run.status.get(&key("orders")).map(|s| s.state);
        assert_ne!(
            state,
            Some(TableState::Failed),
            "{:?}",
            run.status.get(&key("orders"))
        );
        state == Some(TableState::Streaming)
    })
    .await;
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(sink.schema_of("shop", "orders").unwrap().columns.len(), 4);
    run.stop().await;
}

#[tokio::test]
async fn delete_detection_finds_rows_the_stream_cannot_see() {
    let schema = polled_schema("    orders: { delete_detection_interval: 0.05 }\n");
    let source = MemorySource::with_sample_table("shop", "orders", 10);
    let sink = destination();
    let run = start(&source, &sink, schema, settings());
    sink.wait_until_equal(&source, "shop", "orders").await;
    source.delete_unlogged("orders", vec![Value::Int(3)]);
    source.delete_unlogged("orders", vec![Value::Int(7)]);
    sink.wait_until_equal(&source, "shop", "orders").await;
    assert_eq!(sink.live_rows("shop", "orders").len(), 8);
    run.stop().await;
}

#[tokio::test]
async fn a_row_read_before_delete_detection_is_not_brought_back() {
    // A polling source: the stream reads rows as they are, and cannot see deletes.
    let schema =
        polled_schema("    orders: { delete_detection_interval: 0.05, deletion_strategy: soft }\n");
    let source = MemorySource::with_sample_table("shop", "orders", 10);
    source.poll_current_state();
    let sink = destination();
    // Batches are committed by delete detection only (it commits what is in hand first).
    let mut tuned = settings();
    tuned.batch_max_wait = Duration::from_secs(600);
    let run = start(&source, &sink, schema, tuned);
    sink.wait_until_equal(&source, "shop", "orders").await;

    // Detection is held in its first step, committing a change to row 2...
    sink.lock_table("orders");
    source.update("orders", row(2, 1));
    wait_for("detection waiting on the table", WAIT, || {
        sink.waiting() > 0
    })
    .await;
    // ...while the stream reads row 3 as it is now, and row 3 is then deleted.
    let read = source.entries_read();
    source.update("orders", row(3, 1));
    wait_for("row 3 read by the stream", WAIT, || {
        source.entries_read() > read
    })
    .await;
    source.delete_unlogged("orders", vec![Value::Int(3)]);
    sink.unlock_table("orders");

    // Detection deletes row 3; the copy of it read before must not bring it back.
    sink.wait_until_equal(&source, "shop", "orders").await;
    let (_, row3) = sink
        .stored("shop", "orders")
        .into_iter()
        .find(|(k, _)| *k == vec![Value::Int(3)])
        .expect("row 3 is kept, soft-deleted");
    assert!(row3.deleted, "row 3 is deleted");
    assert_eq!(
        row3.version, 2,
        "row 3 was copied, then deleted: a higher version means it came back in between"
    );
    run.stop().await;
}
