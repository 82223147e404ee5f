//! Transactions the server logs and then rolls back. MySQL writes a transaction that
//! also changed a non-transactional table whole, ended by a `ROLLBACK` query (and a
//! partial rollback as `SAVEPOINT` / `ROLLBACK TO`); MariaDB 10.11 logs the
//! non-transactional part on its own instead. A proxy in front of the MariaDB peer gives
//! the reader MySQL's shape: the armed transaction's end becomes `ROLLBACK`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::dump_proxy::{self, event_type, Rewrite, QUERY_EVENT, XID_EVENT};
use mysql_async::binlog::events::QueryEvent;
use mysql_async::prelude::Queryable;
use mysql_common::proto::MySerialize;

mod common;

/// Turns the next transaction's end (XID, or the `COMMIT` query of a non-transactional
/// one) into a `ROLLBACK` query while armed.
struct Rollback(Arc<AtomicBool>);

impl Rewrite for Rollback {
    fn event(&mut self, event: Vec<u8>) -> Vec<Vec<u8>> {
        let ty = event_type(&event);
        let ends =
            ty == XID_EVENT || (ty == QUERY_EVENT && dump_proxy::body(&event).ends_with(b"COMMIT"));
        if !ends || !self.0.swap(false, Ordering::SeqCst) {
            return vec![event];
        }
        let mut body = Vec::new();
        QueryEvent::new(Vec::new(), Vec::new())
            .with_query(b"ROLLBACK".to_vec())
            .serialize(&mut body);
        vec![dump_proxy::event_like(&event, QUERY_EVENT, &body)]
    }
}

#[tokio::test]
async fn a_logged_rollback_keeps_only_the_non_transactional_changes() {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let db = "cw_rollback";
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    for sql in [
        "CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE mine (id INT PRIMARY KEY) ENGINE=MyISAM",
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let armed = Arc::new(AtomicBool::new(false));
    let shared = Arc::clone(&armed);
    let upstream = url.trim_start_matches("mysql://root@").to_owned();
    let port = dump_proxy::start(upstream, move || Rollback(Arc::clone(&shared))).await;
    let source = common::through_proxy(port, db, 4_000_000);
    let tables = source.discover().await.unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();

    // Each armed transaction ends in ROLLBACK as the reader sees it.
    armed.store(true, Ordering::SeqCst);
    conn.query_drop("INSERT INTO inno VALUES (1), (2)")
        .await
        .unwrap();
    armed.store(true, Ordering::SeqCst);
    conn.query_drop("INSERT INTO mine VALUES (10)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO inno VALUES (3)")
        .await
        .unwrap();
    let txns = common::transactions(&mut feed, 2, Duration::from_secs(30)).await;
    assert!(!armed.load(Ordering::SeqCst), "both rollbacks were written");
    use warp_core::Operation::Insert;
    assert_eq!(
        txns[0].0,
        [(Some(10), Insert)],
        "the MyISAM row stays; the rolled-back InnoDB rows are gone"
    );
    assert_eq!(txns[1].0, [(Some(3), Insert)], "nothing carried over");
}
