//! The MySQL source against a real binlog-enabled MariaDB (WARP_TEST_MARIADB_URL).

use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use common::Configured;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::{
    Change, ColumnType, Decimal, Interval, Operation, Position, SchemaChange, Source,
    StreamFragment, Value,
};

mod common;

/// A fresh database `cw_<name>` and a source reading it.
async fn setup(name: &str, ddl: &[&str]) -> (Configured, mysql_async::Conn, String) {
    setup_with(name, ddl, "").await
}

async fn setup_with(
    name: &str,
    ddl: &[&str],
    source_extra: &str,
) -> (Configured, mysql_async::Conn, String) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let db = format!("cw_{name}");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, &db).await;
    for stmt in ddl {
        conn.query_drop(*stmt).await.unwrap();
    }
    let source = common::source_config(
        &format!(
            "connection_string: '{url}/{db}', server_id: {}{source_extra}",
            common::server_id(3_000_000)
        ),
        &db,
    )
    .unwrap();
    (source, conn, db)
}

const ALL_TYPES: &str = "CREATE TABLE t (
    id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, iu INT UNSIGNED,
    bu BIGINT UNSIGNED, dec1 DECIMAL(30,9), fl FLOAT, db DOUBLE, b1 BIT(1), b5 BIT(5),
    vc VARCHAR(20), tx TEXT, bin VARBINARY(8), d DATE, dt DATETIME(6), ts TIMESTAMP(6) NULL,
    tm TIME(3), yr YEAR, js JSON, en ENUM('small','large'), st SET('a','b','c'))";

const INSERT: &str = "INSERT INTO t VALUES (1, -128, 65535, -8388608, 4294967295, 18446744073709551615,
    '123456789012345678901.123456789', 0.5, 0.1, b'1', b'10110', 'héllo\ttab', 'long text', x'00ff10',
    '2024-02-29', '2024-02-29 23:59:58.123456', '2024-03-01 01:02:03.654321', '-838:59:59.500', 2024,
    '{\"a\": [1, 2.5]}', 'large', 'a,c'), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, '0000-00-00', NULL, NULL, NULL, NULL, NULL, NULL, '')";

fn expected() -> Vec<Vec<Value>> {
    let dec = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
    let dt = NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_micro_opt(23, 59, 58, 123_456)
        .unwrap();
    let ts = Utc.with_ymd_and_hms(2024, 3, 1, 1, 2, 3).unwrap()
        + chrono::Duration::microseconds(654_321);
    let full = vec![
        Value::Int(1),
        Value::Int(-128),
        Value::UInt(65535),
        Value::Int(-8_388_608),
        Value::UInt(4_294_967_295),
        Value::UInt(u64::MAX),
        dec("123456789012345678901.123456789"),
        Value::Float32(0.5),
        Value::Float64(0.1),
        Value::Bool(true),
        Value::Bits(vec![true, false, true, true, false]),
        Value::Text("héllo\ttab".into()),
        Value::Text("long text".into()),
        Value::Bytes(vec![0, 255, 16]),
        Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
        Value::Timestamp(dt),
        Value::TimestampTz(ts),
        Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: -(((838 * 60 + 59) * 60 + 59) * 1_000_000 + 500_000),
        }),
        Value::Int(2024),
        // As MariaDB stored it: passed on as text, parsed only by the destination.
        Value::JsonText(r#"{"a": [1, 2.5]}"#.into()),
        Value::Text("large".into()),
        Value::Array(vec![Value::Text("a".into()), Value::Text("c".into())]),
    ];
    let mut empty = vec![Value::Null; full.len()];
    empty[0] = Value::Int(2);
    empty[21] = Value::Array(vec![]);
    vec![full, empty]
}

fn rows_of(changes: &[Change]) -> Vec<(Operation, Vec<Value>)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Row(e) => Some((
                e.op,
                e.after
                    .as_ref()
                    .or(e.before.as_ref())
                    .unwrap()
                    .values
                    .clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Reads fragments until `n` transactions (with commits) arrived.
async fn transactions(
    stream: &mut futures::stream::BoxStream<'static, warp_core::Result<StreamFragment>>,
    n: usize,
) -> Vec<StreamFragment> {
    let mut out = Vec::new();
    let mut merged = Vec::new();
    while out.len() < n {
        let f = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("binlog event in time")
            .unwrap()
            .unwrap();
        merged.extend(f.changes);
        if let Some(c) = f.commit {
            if !merged.is_empty() {
                out.push(StreamFragment::transaction(std::mem::take(&mut merged), c));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_mysql_type_decodes_the_same_from_snapshot_and_binlog() {
    let (source, mut conn, _db) = setup("types", &[ALL_TYPES]).await;
    source.check().await.expect("binlog prerequisites met");
    let tables = source.discover().await.unwrap();
    let t = tables.iter().find(|t| t.id.name == "t").unwrap().clone();
    let ty = |c: &str| {
        t.columns
            .iter()
            .find(|x| x.name == c)
            .unwrap()
            .column_type
            .clone()
    };
    assert_eq!(
        ty("js"),
        ColumnType::Json,
        "MariaDB JSON (LONGTEXT + json_valid) lands as jsonb"
    );
    assert_eq!(ty("bu"), ColumnType::UInt64);
    assert_eq!(ty("tm"), ColumnType::Interval);

    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap(); // allow the zero date
    conn.query_drop(INSERT).await.unwrap();
    let txns = transactions(&mut stream, 1).await;
    let streamed = rows_of(&txns[0].changes);
    assert_eq!(
        streamed.iter().map(|(op, _)| *op).collect::<Vec<_>>(),
        [Operation::Insert, Operation::Insert]
    );
    assert_eq!(
        streamed.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        expected(),
        "binlog decoding"
    );

    let plan = source.plan_snapshot(&t, 1).await.unwrap();
    assert_eq!(plan.chunks.len(), 2, "one row per chunk: {:?}", plan.chunks);
    let mut copied = Vec::new();
    for chunk in &plan.chunks {
        let read = source.read_chunk(&t, chunk).await.unwrap();
        assert!(source
            .compare_positions(&read.position, &start)
            .unwrap()
            .is_ge());
        copied.extend(common::rows_of_chunk(read).await);
    }
    assert_eq!(copied, expected(), "snapshot decoding");
}

#[tokio::test]
async fn updates_deletes_and_ddl_arrive_as_transactions() {
    let (source, mut conn, _db) = setup(
        "stream",
        &[
            "CREATE TABLE o (id INT PRIMARY KEY, name VARCHAR(10), qty INT)",
            "CREATE TABLE other (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let t = table(&source, "o").await;
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop("INSERT INTO o VALUES (1, 'a', 1), (2, 'b', 2)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO other VALUES (1)")
        .await
        .unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    conn.query_drop("UPDATE o SET qty = 10 WHERE id = 1")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM o WHERE id = 2").await.unwrap();
    conn.query_drop("COMMIT").await.unwrap();
    conn.query_drop("ALTER TABLE o ADD COLUMN status VARCHAR(8) NOT NULL DEFAULT 'new'")
        .await
        .unwrap();
    conn.query_drop("ALTER TABLE o RENAME COLUMN name TO title")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO o VALUES (3, 'c', 3, 'paid')")
        .await
        .unwrap();

    let txns = transactions(&mut stream, 5).await;
    let ops: Vec<Vec<Operation>> = txns
        .iter()
        .map(|t| rows_of(&t.changes).into_iter().map(|(op, _)| op).collect())
        .collect();
    assert_eq!(ops[0], [Operation::Insert, Operation::Insert]);
    assert_eq!(
        ops[1],
        [Operation::Update, Operation::Delete],
        "one source transaction, one fragment"
    );
    assert!(
        matches!(&txns[2].changes[..], [Change::Schema(SchemaChange::AddColumn(c))] if c.name == "status" && c.default == Some(Value::Text("new".into())))
    );
    assert_eq!(
        txns[3].changes,
        [Change::Schema(SchemaChange::RenameColumn {
            from: "name".into(),
            to: "title".into()
        })]
    );
    assert_eq!(
        rows_of(&txns[4].changes)[0].1,
        [
            Value::Int(3),
            Value::Text("c".into()),
            Value::Int(3),
            Value::Text("paid".into())
        ]
    );
    // Positions only move forward.
    let positions: Vec<Position> = txns
        .iter()
        .map(|t| t.commit.clone().unwrap().position)
        .collect();
    for w in positions.windows(2) {
        assert!(source.compare_positions(&w[0], &w[1]).unwrap().is_lt());
    }
    // Resuming (as a restarted engine does: re-discover, then stream from the checkpoint)
    // delivers exactly what followed; the rename is already in the discovered shape.
    let fresh = table(&source, "o").await;
    let mut again = source.stream(&fresh, &positions[2]).await.unwrap();
    let resumed = transactions(&mut again, 1).await;
    assert_eq!(resumed[0].changes, txns[4].changes);
    assert_eq!(resumed[0].commit, txns[4].commit);
}

/// The error a stream from `from` ends with, at once.
async fn stream_error(
    source: &Configured,
    t: &warp_core::TableSchema,
    from: &Position,
) -> warp_core::Error {
    let mut stream = source.stream(t, from).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an answer in time")
        .expect("an item")
        .unwrap_err()
}

#[tokio::test]
async fn a_purged_binlog_position_is_an_actionable_error() {
    let (source, _conn, _db) = setup("purged", &["CREATE TABLE p (id INT PRIMARY KEY)"]).await;
    let t = source.discover().await.unwrap().into_iter().next().unwrap();
    let gone = Position::encode(&warp_source_mysql::BinlogPosition::new(
        "mysql-bin.000000",
        4,
    ))
    .unwrap();
    let err = stream_error(&source, &t, &gone).await;
    assert!(
        matches!(err, warp_core::Error::PositionLost { .. }),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("resync"), "{:?}", err.hint());
}

#[tokio::test]
async fn a_position_beyond_the_end_of_its_file_is_not_taken_for_a_purged_binlog() {
    let (source, _conn, _db) = setup("badpos", &["CREATE TABLE p (id INT PRIMARY KEY)"]).await;
    let t = source.discover().await.unwrap().into_iter().next().unwrap();
    let now =
        warp_source_mysql::BinlogPosition::decode(&source.current_position(&t).await.unwrap())
            .unwrap();
    let beyond = Position::encode(&warp_source_mysql::BinlogPosition::new(
        now.file.clone(),
        now.pos + 10_000_000,
    ))
    .unwrap();
    let err = stream_error(&source, &t, &beyond).await;
    assert!(
        !matches!(err, warp_core::Error::PositionLost { .. }) && !err.is_transient(),
        "{err}"
    );
    assert!(err.to_string().contains("1236"), "{err}");
    assert!(
        err.hint().unwrap().contains("not an event start"),
        "{:?}",
        err.hint()
    );
}

#[tokio::test]
async fn timestamp_polling_delivers_ties_once_and_sees_updates() {
    let (source, mut conn, _db) = setup_with(
        "polling",
        &["CREATE TABLE p (id INT PRIMARY KEY, v VARCHAR(10), updated_at DATETIME(6) NOT NULL)"],
        ", change_detection_strategy: timestamp, change_detection_column: updated_at",
    )
    .await;
    source.check().await.unwrap();
    let t = source.discover().await.unwrap().into_iter().next().unwrap();
    conn.query_drop(
        "INSERT INTO p VALUES (0, 'z', '2023-12-31 00:00:00'), \
         (1, 'a', '2024-01-01 00:00:00'), (2, 'b', '2024-01-01 00:00:00')",
    )
    .await
    .unwrap();
    let start = source.current_position(&t).await.unwrap();
    assert_eq!(
        start.as_json()["watermark"]["value"]["v"],
        "2024-01-01T00:00:00"
    );
    assert!(
        start.as_json()["watermark"].get("after").is_none(),
        "a start position is before every row at its value: {start}"
    );
    // The copy takes the rows below the newest value; the rows at it are the polls'.
    let plan = source.plan_snapshot(&t, 100).await.unwrap();
    let mut copied = Vec::new();
    for chunk in &plan.chunks {
        let read = source.read_chunk(&t, chunk).await.unwrap();
        copied.extend(common::rows_of_chunk(read).await);
    }
    assert_eq!(
        copied.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        [Value::Int(0)]
    );
    let mut stream = source.stream(&t, &start).await.unwrap();
    let first = next_fragment(&mut stream).await;
    assert_eq!(
        rows_of(&first.changes)
            .iter()
            .map(|(_, v)| v[0].clone())
            .collect::<Vec<_>>(),
        [Value::Int(1), Value::Int(2)]
    );
    // A third row tied at the same timestamp arrives once; the first two are not repeated.
    conn.query_drop("INSERT INTO p VALUES (3, 'c', '2024-01-01 00:00:00')")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.is_empty() {
        seen = rows_of(&next_fragment(&mut stream).await.changes);
    }
    assert_eq!(
        seen.iter().map(|(_, v)| v[0].clone()).collect::<Vec<_>>(),
        [Value::Int(3)]
    );
    conn.query_drop("UPDATE p SET v = 'a2', updated_at = '2024-01-02 00:00:00' WHERE id = 1")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.is_empty() {
        seen = rows_of(&next_fragment(&mut stream).await.changes);
    }
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1[1], Value::Text("a2".into()));
    // Nothing new: heartbeats only.
    assert!(next_fragment(&mut stream).await.changes.is_empty());
    // Delete detection compares key sets: the source's are read here.
    conn.query_drop("DELETE FROM p WHERE id = 2").await.unwrap();
    let mut keys = source.live_keys(&t).await.unwrap().unwrap();
    keys.sort_by(|a, b| warp_core::cmp_keys(a, b));
    assert_eq!(
        keys,
        [
            vec![Value::Int(0)],
            vec![Value::Int(1)],
            vec![Value::Int(3)]
        ]
    );
}

/// `performance.stream_batch_size` bounds the rows of each fetch: snapshot pages and
/// polling queries.
#[tokio::test]
async fn stream_batch_size_bounds_every_fetch() {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let (_, mut conn, db) = setup(
        "fetch",
        &["CREATE TABLE f (id INT PRIMARY KEY, updated_at DATETIME(6) NOT NULL)"],
    )
    .await;
    conn.query_drop(
        "INSERT INTO f SELECT seq, '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_25",
    )
    .await
    .unwrap();
    let source = |extra: &str| {
        common::tuned_source(
            &format!(
                "connection_string: '{url}/{db}', server_id: {}{extra}",
                common::server_id(3_100_000)
            ),
            &db,
            ", stream_batch_size: 7",
        )
        .unwrap()
    };
    let copying = source("");
    let t = table(&copying, "f").await;
    let plan = copying.plan_snapshot(&t, 1_000).await.unwrap();
    assert_eq!(plan.chunks.len(), 1);
    let read = copying.read_chunk(&t, &plan.chunks[0]).await.unwrap();
    let pages: Vec<usize> = read
        .rows
        .map(|p| p.unwrap().into_rows().unwrap().len())
        .collect()
        .await;
    assert_eq!(pages, [7, 7, 7, 4]);

    // One value for every row: a poll's rows are then one fragment (a fragment per value).
    conn.query_drop("UPDATE f SET updated_at = '2024-01-01'")
        .await
        .unwrap();
    let polling =
        source(", change_detection_strategy: timestamp, change_detection_column: updated_at");
    let t = table(&polling, "f").await;
    let mut stream = polling
        .stream(&t, &warp_core::Watermark::at(None).encode().unwrap())
        .await
        .unwrap();
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < 25 {
        sizes.push(rows_of(&next_fragment(&mut stream).await.changes).len());
    }
    assert_eq!(sizes, [7, 7, 7, 4]);
}

async fn next_fragment(
    s: &mut futures::stream::BoxStream<'static, warp_core::Result<StreamFragment>>,
) -> StreamFragment {
    tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn resumes_by_gtid_when_the_file_is_not_this_servers() {
    let (source, mut conn, _db) = setup("gtid", &["CREATE TABLE g (id INT PRIMARY KEY)"]).await;
    let t = source.discover().await.unwrap().into_iter().next().unwrap();
    let plan = source.plan_snapshot(&t, 100).await.unwrap();
    let start: warp_source_mysql::BinlogPosition = plan.start.decode().unwrap();
    assert!(
        start.gtid.is_some(),
        "the snapshot position carries the GTID state: {start:?}"
    );
    let mut stream = source.stream(&t, &plan.start).await.unwrap();
    for id in 1..=3 {
        conn.query_drop(format!("INSERT INTO g VALUES ({id})"))
            .await
            .unwrap();
    }
    let txns = transactions(&mut stream, 3).await;
    let positions: Vec<warp_source_mysql::BinlogPosition> = txns
        .iter()
        .map(|t| t.commit.as_ref().unwrap().position.decode().unwrap())
        .collect();
    assert!(
        positions.iter().all(|p| p.gtid.is_some()),
        "every commit records its GTID: {positions:?}"
    );
    assert_ne!(positions[0].gtid, positions[1].gtid);

    // As after a failover: the file is unknown here, the GTID is not.
    let mut moved = positions[0].clone();
    moved.file = "mysql-bin.999999".into();
    moved.pos = 4;
    let mut resumed = source.stream(&t, &moved.encode().unwrap()).await.unwrap();
    let after = transactions(&mut resumed, 2).await;
    assert_eq!(after[0].changes, txns[1].changes);
    assert_eq!(after[1].changes, txns[2].changes);
}

#[tokio::test]
async fn undecodable_values_are_marked_not_guessed() {
    let (source, mut conn, _db) = setup(
        "latin",
        &["CREATE TABLE l (id INT PRIMARY KEY, name VARCHAR(10) CHARACTER SET sjis, note VARCHAR(10))"],
    )
    .await;
    let t = source.discover().await.unwrap().into_iter().next().unwrap();
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop("SET NAMES utf8mb4").await.unwrap();
    conn.query_drop("INSERT INTO l VALUES (1, 'テ', 'plain')")
        .await
        .unwrap();
    let txns = transactions(&mut stream, 1).await;
    let rows = rows_of(&txns[0].changes);
    // The binlog carries sjis bytes, which the reader has no exact decoder for: the cell
    // is marked for the dead-letter table rather than guessed. Its neighbour is untouched.
    assert!(
        matches!(&rows[0].1[1], Value::Unreadable(why) if why.contains("sjis")),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[0].1[2], Value::Text("plain".into()));
}

#[tokio::test]
async fn binlog_readers_do_not_starve_the_connection_pool() {
    let (source, _conn, _db) = setup_with(
        "pool",
        &[
            "CREATE TABLE a (id INT PRIMARY KEY)",
            "CREATE TABLE b (id INT PRIMARY KEY)",
            "CREATE TABLE c (id INT PRIMARY KEY)",
        ],
        ", connection_pool_size: 2",
    )
    .await;
    // Held binlog connections would block every later pool user: bound the whole scenario.
    let scenario = async {
        let tables = source.discover().await.unwrap();
        let mut streams = Vec::new();
        for t in &tables {
            let from = source.current_position(t).await.unwrap();
            streams.push(source.stream(t, &from).await.unwrap());
        }
        // Three readers are streaming; the pool of two still serves snapshots and checks.
        source.plan_snapshot(&tables[0], 100).await.unwrap();
        source.check().await.unwrap();
        streams.len()
    };
    let n = tokio::time::timeout(Duration::from_secs(20), scenario)
        .await
        .expect("binlog readers must not hold pool connections");
    assert_eq!(n, 3);
}

/// Discovers and returns one table's shape.
async fn table(source: &Configured, name: &str) -> warp_core::TableSchema {
    source
        .discover()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id.name == name)
        .unwrap()
}

#[tokio::test]
async fn enum_and_set_labels_arrive_from_the_binlog_as_written() {
    let (source, mut conn, _db) = setup(
        "labels",
        &["CREATE TABLE films (id INT PRIMARY KEY,
            rating ENUM('G','PG-13','NC-17','It''s (b)','a,b)'),
            colours SET('Red','GREEN','(x)'))"],
    )
    .await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop(
        "INSERT INTO films VALUES (1, 'NC-17', 'Red,GREEN'), (2, 'It''s (b)', '(x)'), (3, 'a,b)', '')",
    )
    .await
    .unwrap();
    let txns = transactions(&mut stream, 1).await;
    let streamed: Vec<Vec<Value>> = rows_of(&txns[0].changes)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let text = |s: &str| Value::Text(s.into());
    let set = |s: &[&str]| Value::Array(s.iter().map(|l| text(l)).collect());
    let expected = vec![
        vec![Value::Int(1), text("NC-17"), set(&["Red", "GREEN"])],
        vec![Value::Int(2), text("It's (b)"), set(&["(x)"])],
        vec![Value::Int(3), text("a,b)"), set(&[])],
    ];
    assert_eq!(streamed, expected, "binlog");
    // The snapshot reads the same labels from the server.
    assert_eq!(
        common::copy_all(&source, &t, 100).await,
        expected,
        "snapshot"
    );
}

/// Chunks, polls and checks reuse pooled connections instead of connecting each time
/// (counted per user by MariaDB's user statistics, so other tests do not disturb it).
#[tokio::test]
async fn pooled_connections_are_reused() {
    let (_, mut conn, db) = setup(
        "pool_reuse",
        &[
            "CREATE TABLE p (id INT PRIMARY KEY)",
            "INSERT INTO p SELECT seq FROM seq_1_to_12",
        ],
    )
    .await;
    let user = format!("cw_pool_{}", std::process::id());
    for sql in [
        "SET GLOBAL userstat = 1".to_owned(),
        format!("DROP USER IF EXISTS '{user}'@'%'"),
        format!("CREATE USER '{user}'@'%'"),
        format!("GRANT ALL ON *.* TO '{user}'@'%'"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL").replace("root@", &format!("{user}@"));
    let source = common::source_config(
        &format!(
            "connection_string: '{url}/{db}', change_detection_strategy: timestamp, \
             change_detection_column: id"
        ),
        &db,
    )
    .unwrap();
    let t = table(&source, "p").await;
    // Twelve chunks of one row, read one after another (the row at the newest `id` is
    // left to the polls).
    assert_eq!(common::copy_all(&source, &t, 1).await.len(), 11);
    let opened: u64 = conn
        .query_first(format!(
            "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS WHERE USER = '{user}'"
        ))
        .await
        .unwrap()
        .expect("user statistics are on");
    // Seen: 6 (the pool grows to the reads' peak concurrency); 56 when every returned
    // connection was closed. Fewer than one per chunk proves reuse without a tight bound.
    assert!(
        opened < 12,
        "{opened} connections opened for 12 chunk reads"
    );
}

/// A writer's session logging MINIMAL images (an UPDATE logs the key before and only the
/// changed column after) stops the table: nothing lands in the wrong column or as a
/// default over a real value.
#[tokio::test]
async fn a_partial_row_image_stops_the_table_instead_of_shifting_values() {
    let (source, mut conn, _db) = setup(
        "minimal_image",
        &[
            "CREATE TABLE m (id INT PRIMARY KEY, a VARCHAR(10), b VARCHAR(10))",
            "INSERT INTO m VALUES (1, 'a', 'b')",
        ],
    )
    .await;
    let t = table(&source, "m").await;
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop("SET SESSION binlog_row_image = MINIMAL")
        .await
        .unwrap();
    conn.query_drop("UPDATE m SET b = 'x' WHERE id = 1")
        .await
        .unwrap();
    let err = loop {
        let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an answer in time")
            .expect("an item");
        match item {
            Ok(f) if f.changes.is_empty() => continue,
            Ok(f) => panic!("a partial image was applied: {:?}", f.changes),
            Err(e) => break e,
        }
    };
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("binlog_row_image"), "{err}");
    assert!(err.hint().unwrap_or_default().contains("FULL"), "{err}");
}

/// DDL names resolve against the statement's own default database: truncating and
/// dropping another schema's `orders` from a session in ours leaves our `orders` alone
/// (read by name matching, ours was truncated at the destination, then failed).
#[tokio::test]
async fn ddl_on_another_schemas_table_of_the_same_name_leaves_ours_alone() {
    let (source, mut conn, _db) = setup(
        "ddl_scope",
        &["CREATE TABLE orders (id INT PRIMARY KEY, v INT)"],
    )
    .await;
    for sql in [
        "DROP DATABASE IF EXISTS cw_ddl_scope_other",
        "CREATE DATABASE cw_ddl_scope_other",
        "CREATE TABLE cw_ddl_scope_other.orders (id INT PRIMARY KEY)",
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let t = table(&source, "orders").await;
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    // The session's default database is ours (`USE cw_ddl_scope`).
    for sql in [
        "TRUNCATE TABLE cw_ddl_scope_other.orders",
        "DROP TABLE cw_ddl_scope_other.orders",
        "ALTER TABLE orders ADD COLUMN w INT",
        "INSERT INTO orders VALUES (1, 2, 3)",
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let mut changes = Vec::new();
    while !changes.iter().any(|c| matches!(c, Change::Row(_))) {
        changes.extend(next_fragment(&mut stream).await.changes);
    }
    assert!(
        !changes.iter().any(|c| matches!(c, Change::Truncate)),
        "{changes:?}"
    );
    assert_eq!(
        rows_of(&changes),
        [(
            Operation::Insert,
            vec![Value::Int(1), Value::Int(2), Value::Int(3)]
        )]
    );
}

/// XA transactions apply when committed, at the commit's position, never when only
/// prepared, and never when rolled back; a stream resumed between the prepare and the
/// commit still delivers them.
#[tokio::test]
async fn xa_transactions_apply_only_when_committed_and_survive_a_resume() {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    // A prepared transaction outlives its session: one left by an earlier failed run
    // would hold the table's locks.
    let mut admin = mysql_async::Conn::from_url(&url).await.unwrap();
    let left: Vec<(i64, i64, i64, String)> = admin.query("XA RECOVER").await.unwrap();
    for (_, _, _, xid) in left.iter().filter(|x| x.3.starts_with("cw_xa_")) {
        admin
            .query_drop(format!("XA ROLLBACK '{xid}'"))
            .await
            .unwrap();
    }
    let (source, mut conn, db) = setup("xa", &["CREATE TABLE x (id INT PRIMARY KEY)"]).await;
    // A session with a prepared XA transaction runs nothing but its outcome.
    let mut other = mysql_async::Conn::from_url(format!("{url}/{db}"))
        .await
        .unwrap();
    let t = table(&source, "x").await;
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    let (gone, kept) = ("cw_xa_gone", "cw_xa_kept");
    for (session, sql) in [
        (0, format!("XA START '{gone}'")),
        (0, "INSERT INTO x VALUES (1)".into()),
        (0, format!("XA END '{gone}'")),
        (0, format!("XA PREPARE '{gone}'")),
        (1, "INSERT INTO x VALUES (2)".into()),
        (0, format!("XA ROLLBACK '{gone}'")),
        (0, format!("XA START '{kept}'")),
        (0, "INSERT INTO x VALUES (3)".into()),
        (0, format!("XA END '{kept}'")),
        (0, format!("XA PREPARE '{kept}'")),
        (1, "INSERT INTO x VALUES (4)".into()),
    ] {
        let c = if session == 0 { &mut conn } else { &mut other };
        c.query_drop(sql).await.unwrap();
    }
    // Until `kept` commits: 2 and 4 only.
    let mut seen = Vec::new();
    let mut after_four = None;
    while after_four.is_none() {
        let fragment = next_fragment(&mut stream).await;
        for (op, values) in rows_of(&fragment.changes) {
            assert_eq!(op, Operation::Insert);
            seen.push(values[0].clone());
            if values[0] == Value::Int(4) {
                after_four = fragment.commit.clone().map(|c| c.position);
            }
        }
    }
    assert_eq!(seen, [Value::Int(2), Value::Int(4)]);
    // No stream starts while it is prepared: its commit would land in neither the copy
    // nor the stream (retried by the engine until it is decided).
    let read = source.schema.table("x").read_settings();
    let waits = source
        .source
        .plan_snapshot(&t, &read, 100)
        .await
        .unwrap_err();
    assert!(
        waits.is_transient() && waits.to_string().contains("XA transaction(s) prepared"),
        "{waits}"
    );
    // A reader resumed from there (a restart) reads `kept` again and applies it at its
    // commit; the first stream does the same.
    let mut resumed = source.stream(&t, &after_four.unwrap()).await.unwrap();
    conn.query_drop(format!("XA COMMIT '{kept}'"))
        .await
        .unwrap();
    for s in [&mut stream, &mut resumed] {
        let rows = loop {
            let rows = rows_of(&next_fragment(s).await.changes);
            if !rows.is_empty() {
                break rows;
            }
        };
        assert_eq!(rows, [(Operation::Insert, vec![Value::Int(3)])]);
    }
}

/// A stream's start position is taken between two XA checks: a transaction prepared
/// before the position and committed right after it — where a check that only followed
/// the position saw nothing prepared any more — holds the start back; once it is decided,
/// the position is taken.
#[tokio::test]
async fn a_start_position_is_held_back_by_an_xa_transaction_committed_right_after_it() {
    use warp_source_mysql::start_position::{between_xa_checks, current};
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let xid = "cw_xa_straddle";
    let mut admin = mysql_async::Conn::from_url(&url).await.unwrap();
    let left: Vec<(i64, i64, i64, String)> = admin.query("XA RECOVER").await.unwrap();
    if left.iter().any(|x| x.3 == xid) {
        admin
            .query_drop(format!("XA ROLLBACK '{xid}'"))
            .await
            .unwrap();
    }
    let (_source, mut xa, _db) =
        setup("xastraddle", &["CREATE TABLE s (id INT PRIMARY KEY)"]).await;
    for sql in [
        format!("XA START '{xid}'"),
        "INSERT INTO s VALUES (1)".into(),
        format!("XA END '{xid}'"),
        format!("XA PREPARE '{xid}'"),
    ] {
        xa.query_drop(sql).await.unwrap();
    }
    let mut committed = false;
    let straddled = between_xa_checks(&mut admin, async |c| {
        let position = current(c).await;
        xa.query_drop(format!("XA COMMIT '{xid}'")).await.unwrap();
        committed = true;
        position
    })
    .await;
    if !committed {
        // Refused before the position was read (the check that guards it).
        xa.query_drop(format!("XA COMMIT '{xid}'")).await.unwrap();
    }
    match straddled {
        Err(warp_source_mysql::MysqlError::Busy { message, .. }) => {
            assert!(message.contains("XA transaction(s) prepared"), "{message}")
        }
        other => panic!("a position inside a prepared XA transaction was taken: {other:?}"),
    }
    between_xa_checks(&mut admin, async |c| current(c).await)
        .await
        .expect("a position once the transaction is decided");
}

/// Online schema changes end by swapping a rebuilt table in under the old name, in a
/// statement that names no column: gh-ost's and pt-online-schema-change's statement
/// sequences, replayed, deliver the new column and every value written after the swap.
#[tokio::test]
async fn online_schema_change_swaps_bring_the_new_shape() {
    let (source, mut conn, _db) = setup(
        "osc",
        &[
            "CREATE TABLE ghost (id INT PRIMARY KEY, v INT)",
            "CREATE TABLE ptosc (id INT PRIMARY KEY, v INT)",
            "INSERT INTO ghost VALUES (1, 1)",
            "INSERT INTO ptosc VALUES (1, 1)",
        ],
    )
    .await;
    let tool_runs: [(&str, &[&str]); 2] = [
        (
            "ghost",
            &[
                // gh-ost: ghost and changelog tables, row copy, then the atomic cut-over.
                "CREATE TABLE _ghost_gho LIKE ghost",
                "ALTER TABLE _ghost_gho ADD COLUMN note VARCHAR(20) DEFAULT 'new'",
                "CREATE TABLE _ghost_ghc (id BIGINT AUTO_INCREMENT PRIMARY KEY, hint VARCHAR(64))",
                "INSERT IGNORE INTO _ghost_gho (id, v) SELECT id, v FROM ghost",
                "INSERT INTO ghost VALUES (2, 2)",
                "REPLACE INTO _ghost_gho (id, v) VALUES (2, 2)",
                "RENAME TABLE ghost TO _ghost_del, _ghost_gho TO ghost",
                "DROP TABLE IF EXISTS _ghost_del",
                "DROP TABLE IF EXISTS _ghost_ghc",
                "INSERT INTO ghost VALUES (3, 3, 'after')",
            ],
        ),
        (
            "ptosc",
            &[
                // pt-online-schema-change: new table, triggers, chunked copy, swap.
                "CREATE TABLE _ptosc_new LIKE ptosc",
                "ALTER TABLE _ptosc_new ADD COLUMN note VARCHAR(20) DEFAULT 'new'",
                "CREATE TRIGGER pt_osc_ins AFTER INSERT ON ptosc FOR EACH ROW \
                 REPLACE INTO _ptosc_new (id, v) VALUES (NEW.id, NEW.v)",
                "INSERT LOW_PRIORITY IGNORE INTO _ptosc_new (id, v) SELECT id, v FROM ptosc LOCK IN SHARE MODE",
                "INSERT INTO ptosc VALUES (2, 2)",
                "RENAME TABLE ptosc TO _ptosc_old, _ptosc_new TO ptosc",
                "DROP TABLE IF EXISTS _ptosc_old",
                "INSERT INTO ptosc VALUES (3, 3, 'after')",
            ],
        ),
    ];
    for (name, statements) in tool_runs {
        let t = table(&source, name).await;
        let start = source.current_position(&t).await.unwrap();
        let mut stream = source.stream(&t, &start).await.unwrap();
        for sql in statements {
            conn.query_drop(*sql).await.unwrap();
        }
        let mut changes = Vec::new();
        while !rows_of(&changes)
            .iter()
            .any(|(_, values)| values[0] == Value::Int(3))
        {
            changes.extend(next_fragment(&mut stream).await.changes);
        }
        let added: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Schema(warp_core::SchemaChange::AddColumn(col)) => Some(col.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(added, ["note"], "{name}: {changes:?}");
        assert_eq!(
            rows_of(&changes),
            [
                (Operation::Insert, vec![Value::Int(2), Value::Int(2)]),
                (
                    Operation::Insert,
                    vec![Value::Int(3), Value::Int(3), Value::Text("after".into())]
                )
            ],
            "{name}"
        );
    }
}

/// Snapshot chunks and pages are sized by row width (`ResolvedTable::chunk_rows`,
/// `ReadSettings::page_rows`) from InnoDB's own estimate: wide rows (off-page text
/// included) read as wide, narrow ones as narrow, and a chunk of wide rows arrives in
/// pages of about 4 MiB instead of 5,000 rows.
#[tokio::test]
async fn row_width_estimates_come_from_the_server_and_size_pages() {
    let (source, mut conn, _db) = setup(
        "widths",
        &[
            "CREATE TABLE wide (id INT PRIMARY KEY, body MEDIUMTEXT) ENGINE=InnoDB",
            "CREATE TABLE narrow (id INT PRIMARY KEY, n INT) ENGINE=InnoDB",
            "CREATE TABLE empty (id INT PRIMARY KEY) ENGINE=InnoDB",
        ],
    )
    .await;
    conn.query_drop(
        "INSERT INTO wide SELECT seq, REPEAT(CHAR(65 + seq % 26), 100000) FROM seq_1_to_60",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO narrow SELECT seq, seq FROM seq_1_to_2000")
        .await
        .unwrap();
    conn.query_drop("ANALYZE TABLE wide, narrow").await.unwrap();
    let mut widths = Vec::new();
    for name in ["wide", "narrow", "empty"] {
        let t = table(&source, name).await;
        widths.push(source.estimate_row_bytes(&t).await.unwrap());
    }
    let (wide, narrow) = (
        widths[0].expect("an estimate"),
        widths[1].expect("an estimate"),
    );
    assert!(wide >= 100_000, "wide rows estimated at {wide} bytes");
    assert!(narrow < 200, "narrow rows estimated at {narrow} bytes");
    assert_eq!(widths[2], None, "an empty table has no width");

    let t = table(&source, "wide").await;
    let read = source
        .read_chunk(&t, &warp_core::KeyRange::ALL)
        .await
        .unwrap();
    let pages: Vec<usize> = read
        .rows
        .map(|p| p.unwrap().into_rows().unwrap().len())
        .collect()
        .await;
    let most = usize::try_from((4 << 20) / wide).unwrap().max(50);
    assert_eq!(pages.iter().sum::<usize>(), 60);
    assert!(
        pages.len() > 1 && pages.iter().all(|&n| n <= most),
        "pages {pages:?}, at most {most} rows each"
    );
}
