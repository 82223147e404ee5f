//! The binlog feed against the MariaDB peer: one dump connection for many tables, changes
//! tagged with their table in commit order, DDL routed to the table it names, a dropped
//! table taken out while the others go on.

use std::time::Duration;

use common::Configured;
use futures::stream::BoxStream;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::{Change, FeedItem, TableSchema, Value};

mod common;

async fn setup(db: &str, tables: &[&str]) -> (Configured, mysql_async::Conn) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    for t in tables {
        conn.query_drop(format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))"
        ))
        .await
        .unwrap();
    }
    let source = common::source_config(
        &format!(
            "connection_string: '{url}/{db}', server_id: {}",
            common::server_id(3_500_000)
        ),
        db,
    )
    .unwrap();
    (source, conn)
}

/// What the feed yields, reduced to (table index, change) per committed transaction, and
/// failed tables; heartbeats are left out.
#[derive(Debug, Default)]
struct Seen {
    transactions: Vec<Vec<(usize, Change)>>,
    failed: Vec<(usize, String)>,
}

async fn read_until(
    feed: &mut BoxStream<'static, warp_core::Result<FeedItem>>,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    let mut open: Vec<(usize, Change)> = Vec::new();
    let read = async {
        while !done(seen) {
            match feed.next().await.expect("feed ended").expect("feed error") {
                FeedItem::Fragment { changes, commit } => {
                    open.extend(changes.into_iter().map(|c| (c.table, c.change)));
                    if commit.is_some() && !open.is_empty() {
                        seen.transactions.push(std::mem::take(&mut open));
                    }
                }
                FeedItem::TableFailed { table, error } => {
                    seen.failed.push((table, error.to_string()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the feed delivered in time");
}

fn id_of(change: &Change) -> Option<i64> {
    match change {
        Change::Row(e) => match e.key.first() {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        },
        _ => None,
    }
}

async fn tables(source: &Configured, names: &[&str]) -> Vec<TableSchema> {
    let all = source.discover().await.unwrap();
    names
        .iter()
        .map(|n| all.iter().find(|t| t.id.name == *n).unwrap().clone())
        .collect()
}

#[tokio::test]
async fn one_feed_tags_every_tables_changes_in_commit_order() {
    let (source, mut conn) = setup("cw_feed_order", &["a", "b", "c", "ignored"]).await;
    let served = tables(&source, &["a", "b", "c"]).await;
    let start = source.current_position(&served[0]).await.unwrap();
    let mut feed = source.open_feed(&served, &start).await.unwrap();
    conn.query_drop("INSERT INTO a VALUES (1, 'a1')")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO ignored VALUES (9, 'x')")
        .await
        .unwrap();
    conn.query_drop(
        "BEGIN; INSERT INTO c VALUES (2, 'c2'); UPDATE a SET v = 'a1b' WHERE id = 1; INSERT INTO b VALUES (3, 'b3'); COMMIT",
    )
    .await
    .unwrap();
    conn.query_drop("DELETE FROM b WHERE id = 3").await.unwrap();
    let mut seen = Seen::default();
    read_until(&mut feed, &mut seen, |s| s.transactions.len() >= 3).await;
    let tagged: Vec<Vec<(usize, Option<i64>)>> = seen
        .transactions
        .iter()
        .map(|t| t.iter().map(|(i, c)| (*i, id_of(c))).collect())
        .collect();
    assert_eq!(
        tagged,
        vec![
            vec![(0, Some(1))],
            vec![(2, Some(2)), (0, Some(1)), (1, Some(3))],
            vec![(1, Some(3))],
        ],
        "each transaction whole, tagged with its tables, in commit order; `ignored` left out"
    );
}

#[tokio::test]
async fn ddl_reaches_only_the_table_it_names_and_a_dropped_table_leaves_the_feed_alone() {
    let (source, mut conn) = setup("cw_feed_ddl", &["a", "b"]).await;
    let served = tables(&source, &["a", "b"]).await;
    let start = source.current_position(&served[0]).await.unwrap();
    let mut feed = source.open_feed(&served, &start).await.unwrap();
    conn.query_drop("ALTER TABLE b ADD COLUMN extra INT DEFAULT 7")
        .await
        .unwrap();
    conn.query_drop("DROP TABLE a").await.unwrap();
    conn.query_drop("INSERT INTO b VALUES (1, 'b1', 8)")
        .await
        .unwrap();
    let mut seen = Seen::default();
    read_until(&mut feed, &mut seen, |s| {
        s.transactions.len() >= 2 && !s.failed.is_empty()
    })
    .await;
    assert!(
        matches!(&seen.transactions[0][..], [(1, Change::Schema(_))]),
        "the ALTER is b's: {:?}",
        seen.transactions[0]
    );
    assert_eq!(seen.failed.len(), 1);
    assert_eq!(seen.failed[0].0, 0, "a is taken out");
    assert!(
        seen.failed[0].1.contains("dropped at the source"),
        "{}",
        seen.failed[0].1
    );
    let row = &seen.transactions[1];
    assert_eq!(row.len(), 1);
    assert_eq!(row[0].0, 1);
    match &row[0].1 {
        Change::Row(e) => assert_eq!(
            e.after.as_ref().unwrap().values,
            vec![Value::Int(1), Value::Text("b1".into()), Value::Int(8)],
            "decoded with b's new shape"
        ),
        other => panic!("expected b's row, got {other:?}"),
    }
}

/// The dump's first (artificial) rotate event names the file and, with
/// `binlog_checksum = CRC32` (the servers' default), ends in 4 checksum bytes that the
/// decoder cannot know of yet. A checksum byte that was a '.' once made the name
/// `mysql-bin.000001.`: a position that sorts before every real one, so every change the
/// dump delivered was dropped as already applied (issue 21's "a binlog stream that
/// delivered events but committed nothing", and scaleout_e2e's table that stopped
/// receiving). Started where the rotate event's checksum holds a '.', the reader names
/// the file exactly.
#[tokio::test]
async fn a_rotate_checksum_holding_a_dot_leaves_the_file_name_exact() {
    let (source, mut conn) = setup("cw_feed_rotate", &["r"]).await;
    let checksum: String = conn
        .query_first("SELECT @@global.binlog_checksum")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checksum, "CRC32", "the peer runs with the servers' default");
    for i in 0..400 {
        conn.query_drop(format!("INSERT INTO r VALUES ({i}, 'x')"))
            .await
            .unwrap();
    }
    let (file, _): (String, u64) = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|row: mysql_async::Row| (row.get(0).unwrap(), row.get(1).unwrap()))
        .unwrap();
    // Transaction starts (GTID events) of this test's inserts: valid places to start.
    let events: Vec<(u64, String, String)> = conn
        .query_map(
            format!("SHOW BINLOG EVENTS IN '{file}'"),
            |row: mysql_async::Row| {
                (
                    row.get::<u64, _>(1).unwrap(),
                    row.get::<String, _>(2).unwrap(),
                    row.get::<String, _>(5).unwrap_or_default(),
                )
            },
        )
        .await
        .unwrap();
    let created = events
        .iter()
        .rposition(|e| e.2.contains("CREATE TABLE r "))
        .expect("the table's creation in the binlog");
    let starts: Vec<u64> = events[created..]
        .iter()
        .filter(|e| e.1 == "Gtid")
        .map(|e| e.0)
        .collect();
    assert!(starts.len() >= 300, "{} transaction starts", starts.len());
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut start = None;
    for (n, pos) in starts.iter().enumerate() {
        let raw = mysql_async::Conn::from_url(&url).await.unwrap();
        let request =
            mysql_async::BinlogStreamRequest::new(common::server_id(3_600_000) + 1 + n as u32 % 10)
                .with_filename(file.as_bytes())
                .with_pos(*pos);
        let mut dump = raw.get_binlog_stream(request).await.unwrap();
        let rotate = dump.next().await.unwrap().unwrap();
        let data = rotate.data();
        let _ = dump.close().await;
        if data[data.len() - 4..].contains(&b'.') {
            start = Some(*pos);
            break;
        }
    }
    let start = start.expect("a start whose rotate checksum holds a '.' (about 1 in 64 do)");

    let served = tables(&source, &["r"]).await;
    let from = warp_core::Position::from_json(serde_json::json!({ "file": file, "pos": start }));
    let mut feed = source.open_feed(&served, &from).await.unwrap();
    let commit = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let FeedItem::Fragment {
                commit: Some(c), ..
            } = feed.next().await.unwrap().unwrap()
            {
                return c;
            }
        }
    })
    .await
    .expect("a commit within 20 s");
    assert_eq!(
        commit.position.as_json()["file"],
        serde_json::Value::String(file.clone()),
        "{}",
        commit.position
    );
}
