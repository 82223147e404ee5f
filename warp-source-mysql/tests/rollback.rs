//! Transactions the server logs and then rolls back. MySQL writes a transaction that
//! also changed a non-transactional table whole, ended by a `ROLLBACK` query (and a
//! partial rollback as `SAVEPOINT` / `ROLLBACK TO`); MariaDB 10.11 logs the
//! non-transactional part on its own instead. A proxy in front of the MariaDB peer gives
//! the reader MySQL's shape: the armed transaction's end becomes `ROLLBACK`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::dump_proxy::{self, event_type, Rewrite, QUERY_EVENT, XID_EVENT};
use futures::StreamExt;
use mysql_async::binlog::events::QueryEvent;
use mysql_async::prelude::Queryable;
use mysql_common::proto::MySerialize;

mod common;

const TABLE_MAP_EVENT: u8 = 19;

/// Turns the end (XID, or the `COMMIT` query of a non-transactional one) of the next
/// transaction that maps a table of `db` into a `ROLLBACK` query while armed (other
/// suites write to the same server meanwhile).
struct Rollback {
    armed: Arc<AtomicBool>,
    db: &'static str,
    ours: bool,
}

impl Rollback {
    fn new(armed: &Arc<AtomicBool>, db: &'static str) -> Self {
        Self {
            armed: Arc::clone(armed),
            db,
            ours: false,
        }
    }
}

impl Rewrite for Rollback {
    fn event(&mut self, event: Vec<u8>) -> Vec<Vec<u8>> {
        let ty = event_type(&event);
        if ty == TABLE_MAP_EVENT {
            // table id (6), flags (2), then the database name with its length byte.
            let body = dump_proxy::body(&event);
            let len = usize::from(body[8]);
            self.ours |= &body[9..9 + len] == self.db.as_bytes();
        }
        let ends =
            ty == XID_EVENT || (ty == QUERY_EVENT && dump_proxy::body(&event).ends_with(b"COMMIT"));
        if !ends {
            return vec![event];
        }
        let ours = std::mem::take(&mut self.ours);
        if !ours || !self.armed.swap(false, Ordering::SeqCst) {
            return vec![event];
        }
        let mut body = Vec::new();
        QueryEvent::new(Vec::new(), Vec::new())
            .with_query(b"ROLLBACK".to_vec())
            .serialize(&mut body);
        vec![dump_proxy::event_like(&event, QUERY_EVENT, &body)]
    }
}

/// A fresh database `db` with `ddl`, and a feed of its tables read through a proxy that
/// rolls back the transactions armed with the returned flag.
async fn armed_feed(
    db: &'static str,
    ddl: &[&str],
) -> (
    mysql_async::Conn,
    Arc<AtomicBool>,
    futures::stream::BoxStream<'static, warp_core::Result<warp_core::FeedItem>>,
) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    for sql in ddl {
        conn.query_drop(*sql).await.unwrap();
    }
    let armed = Arc::new(AtomicBool::new(false));
    let shared = Arc::clone(&armed);
    let upstream = url.trim_start_matches("mysql://root@").to_owned();
    let port = dump_proxy::start(upstream, move || Rollback::new(&shared, db)).await;
    let source = common::through_proxy(port, db, 4_000_000);
    let tables = source.discover().await.unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let feed = source.open_feed(&tables, &start).await.unwrap();
    (conn, armed, feed)
}

#[tokio::test]
async fn a_logged_rollback_keeps_only_the_non_transactional_changes() {
    let (mut conn, armed, mut feed) = armed_feed(
        "cw_rollback",
        &[
            "CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB",
            "CREATE TABLE mine (id INT PRIMARY KEY) ENGINE=MyISAM",
        ],
    )
    .await;

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

/// A rolled-back transaction larger than one fragment: the changes already handed out
/// cannot be taken back, so the table is copied again instead of keeping them.
#[tokio::test]
async fn a_rollback_after_handed_out_fragments_has_the_table_copied_again() {
    let (mut conn, armed, mut feed) = armed_feed(
        "cw_rollback_large",
        &["CREATE TABLE inno (id INT PRIMARY KEY) ENGINE=InnoDB"],
    )
    .await;
    armed.store(true, Ordering::SeqCst);
    conn.query_drop("INSERT INTO inno SELECT seq FROM seq_1_to_2500")
        .await
        .unwrap();
    let mut handed_out = 0;
    let read = async {
        loop {
            match feed.next().await.expect("feed open").expect("feed item") {
                warp_core::FeedItem::Fragment { changes, commit } => {
                    handed_out += changes.len();
                    assert!(
                        commit.is_none() || changes.is_empty(),
                        "no rolled-back change commits"
                    );
                }
                warp_core::FeedItem::TableFailed { error, .. } => break error,
            }
        }
    };
    // The deadline is for a hung reader.
    let error = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the table was stopped in time");
    assert!(
        handed_out >= 2_000,
        "a fragment went out first: {handed_out}"
    );
    assert!(
        matches!(&error, warp_core::Error::Replaced { how, .. } if how.contains("rolled back")),
        "{error}"
    );
}
