//! A snapshot chunk's binlog position is exact while the table is being written: the
//! first change the stream delivers after it is the one right after the rows read.
//! Both ways of pinning it run against MariaDB: its own `binlog_snapshot_*` and the
//! MySQL path (a brief `LOCK TABLES … READ`), forced by the test hook.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::{Change, KeyRange, Value};

mod common;

/// Snapshot reads per mode, each checked against the stream.
const READS: usize = 15;

#[tokio::test]
async fn a_chunk_position_is_exact_under_concurrent_writes() {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let db = "cw_snapshot_position";
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    conn.query_drop("CREATE TABLE c (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO c VALUES (1, 0)")
        .await
        .unwrap();
    let source = common::source_config(
        &format!(
            "connection_string: '{url}/{db}', server_id: {}",
            common::server_id(3_700_000)
        ),
        db,
    )
    .unwrap();
    let t = source.discover().await.unwrap().remove(0);

    // One counter, incremented by its own transactions as fast as the server takes them.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let url = format!("{url}/{db}");
        tokio::spawn(async move {
            let mut w = mysql_async::Conn::from_url(&url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                w.query_drop("UPDATE c SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
            }
        })
    };

    for forced in [false, true] {
        warp_source_mysql::force_table_lock_snapshots(forced);
        for _ in 0..READS {
            let read = source.read_chunk(&t, &KeyRange::ALL).await.unwrap();
            let position = read.position.clone();
            let rows = common::rows_of_chunk(read).await;
            let Value::Int(copied) = rows[0][1] else {
                panic!("{rows:?}")
            };
            let mut stream = source.stream(&t, &position).await.unwrap();
            let next = loop {
                let fragment = tokio::time::timeout(Duration::from_secs(20), stream.next())
                    .await
                    .expect("a change in time")
                    .unwrap()
                    .unwrap();
                if let Some(Change::Row(e)) = fragment.changes.first() {
                    break e.after.as_ref().unwrap().values[1].clone();
                }
            };
            assert_eq!(
                next,
                Value::Int(copied + 1),
                "table lock: {forced}: the first change after the chunk's position follows the rows read"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
}
