//! MySQL 8's compressed transactions (`binlog_transaction_compression=ON`, 8.0.20+): a
//! transaction's events travel zstd-compressed inside one TRANSACTION_PAYLOAD_EVENT (type
//! 40) whose inner events carry no position (`log_pos` 0) and no checksum, starting with a
//! `BEGIN` query. MariaDB cannot write them, so a proxy in front of the MariaDB peer
//! rewrites each row transaction of the binlog dump into that shape (the payload body
//! serialised by mysql_common, compressed with zstd, CRC32 over the outer event), the
//! payload event ending where the real transaction ended. The feed must read the rows
//! and commit at the payload's end, never at `file:0`; a payload that cannot be
//! decompressed stops the feed with what to change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::compressing;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::FeedItem;

mod common;

async fn setup(
    db: &str,
    corrupt: bool,
) -> (common::Configured, mysql_async::Conn, Arc<AtomicUsize>) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    let upstream = url.trim_start_matches("mysql://root@").to_owned();
    let (port, sent) = compressing::proxy(upstream, corrupt).await;
    let source = common::source_config(
        &format!(
            "connection_string: 'mysql://root@127.0.0.1:{port}/{db}', ssl_mode: disabled, server_id: {}",
            common::server_id(3_600_000)
        ),
        db,
    )
    .unwrap();
    (source, conn, sent)
}

async fn transactions(
    feed: &mut futures::stream::BoxStream<'static, warp_core::Result<FeedItem>>,
    n: usize,
) -> Vec<common::Transaction> {
    common::transactions(feed, n, Duration::from_secs(20)).await
}

#[tokio::test]
async fn compressed_transactions_are_read_and_commit_at_the_payload_end() {
    let (source, mut conn, compressed_sent) = setup("cw_compressed", false).await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut feed = source
        .open_feed(std::slice::from_ref(&t), &start)
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    conn.query_drop(
        "BEGIN; UPDATE t SET v = 'uno' WHERE id = 1; DELETE FROM t WHERE id = 2; COMMIT",
    )
    .await
    .unwrap();
    let compressed = transactions(&mut feed, 2).await;
    // They came compressed: the proxy was in the path and rewrote them.
    assert!(compressed_sent.load(Ordering::SeqCst) >= 2);
    use warp_core::Operation::*;
    assert_eq!(compressed[0].0, [(Some(1), Insert), (Some(2), Insert)]);
    assert_eq!(compressed[1].0, [(Some(1), Update), (Some(2), Delete)]);
    for (_, at) in &compressed {
        assert!(at.pos > 4, "committed at {}:{}", at.file, at.pos);
    }
    // The same transactions read straight from the server (uncompressed) end at the
    // same positions: the payload's end is the transaction's.
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let direct = common::source_config(
        &format!(
            "connection_string: '{url}/cw_compressed', server_id: {}",
            common::server_id(3_700_000)
        ),
        "cw_compressed",
    )
    .unwrap();
    direct.discover().await.unwrap();
    let mut plain = direct.open_feed(&[t], &start).await.unwrap();
    let uncompressed = transactions(&mut plain, 2).await;
    assert_eq!(compressed, uncompressed);
}

#[tokio::test]
async fn a_payload_that_cannot_be_decompressed_stops_the_feed_with_what_to_change() {
    let (source, mut conn, _) = setup("cw_compressed_bad", true).await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut feed = source.open_feed(&[t], &start).await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (2, 'two')")
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match feed.next().await.expect("feed ended") {
                Ok(FeedItem::Fragment { changes, .. }) => {
                    assert!(
                        changes.is_empty(),
                        "rows delivered from a broken payload: {changes:?}"
                    );
                }
                Ok(FeedItem::TableFailed { error, .. }) => break error,
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("the feed stopped in time");
    let text = error.to_string();
    assert!(text.contains("could not be decompressed"), "{text}");
    assert!(!error.is_transient(), "{error:?}");
}
