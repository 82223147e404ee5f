//! The binlog feed against the MariaDB peer: one dump connection for many tables, changes
//! tagged with their table in commit order, DDL routed to the table it names, a dropped
//! table taken out while the others go on.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::{Change, FeedItem, Source, TableSchema, Value};
use warp_source_mysql::MysqlSource;

mod common;

async fn setup(db: &str, tables: &[&str]) -> (MysqlSource, mysql_async::Conn) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    conn.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    conn.query_drop(format!("USE {db}")).await.unwrap();
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

async fn tables(source: &MysqlSource, names: &[&str]) -> Vec<TableSchema> {
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
