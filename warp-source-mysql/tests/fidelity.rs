//! Exact copies from MySQL/MariaDB: every column type and character set lands the same
//! values by the snapshot (query results) and by the binlog (row events), value by value,
//! against the binlog-enabled MariaDB peer (WARP_TEST_MARIADB_URL).

use std::collections::BTreeMap;
use std::time::Duration;

use common::Configured;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use warp_core::{Change, ChangeEvent, FeedItem, Key, Operation, Source, StreamFragment, Value};

mod common;

async fn setup(name: &str, ddl: &[&str]) -> (Configured, mysql_async::Conn) {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let db = format!("cw_fid_{name}");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, &db).await;
    conn.query_drop("SET NAMES utf8mb4").await.unwrap();
    for stmt in ddl {
        conn.query_drop(*stmt).await.unwrap();
    }
    let source = common::source_config(
        &format!(
            "connection_string: '{url}/{db}', server_id: {}",
            common::server_id(3_500_000)
        ),
        &db,
    )
    .unwrap();
    (source, conn)
}

type Fragments = futures::stream::BoxStream<'static, warp_core::Result<StreamFragment>>;

/// The row events of the next `n` transactions.
/// `table` as discovered now (after a DDL, as a restarted replicator sees it).
async fn rediscovered(
    source: &Configured,
    table: &warp_core::TableSchema,
) -> warp_core::TableSchema {
    let found = source.discover().await.unwrap();
    found.into_iter().find(|x| x.id == table.id).unwrap()
}

/// The row changes of the next `n` transactions that carry any (heartbeats keep an idle
/// stream alive, so the whole read has a deadline too).
async fn row_events(stream: &mut Fragments, n: usize) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen < n {
        let f = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{n} transactions in time; {seen} read: {events:?}"))
            .unwrap()
            .unwrap();
        let before = events.len();
        events.extend(f.changes.into_iter().filter_map(|c| match c {
            Change::Row(e) => Some(e),
            _ => None,
        }));
        if f.commit.is_some() && events.len() > before {
            seen += 1;
        }
    }
    events
}

type Feed = futures::stream::BoxStream<'static, warp_core::Result<FeedItem>>;

/// The next item that carries changes or a table's failure (heartbeats skipped).
async fn next_significant(feed: &mut Feed) -> FeedItem {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .expect("feed in time (deadline for a hung reader)")
            .unwrap()
            .unwrap();
        match &item {
            FeedItem::Fragment { changes, .. } if changes.is_empty() => continue,
            _ => return item,
        }
    }
}

async fn exec_all(conn: &mut mysql_async::Conn, statements: &[&str]) {
    for sql in statements {
        conn.query_drop(*sql).await.unwrap();
    }
}

type ByKey = BTreeMap<Vec<u8>, Vec<Value>>;

/// Rows keyed by their first column's bytes (the key of every table here).
fn by_key(rows: impl IntoIterator<Item = Vec<Value>>) -> ByKey {
    rows.into_iter()
        .map(|r| {
            let key = match &r[0] {
                Value::Bytes(b) => b.clone(),
                Value::Int(i) => i.to_be_bytes().to_vec(),
                other => panic!("key {other:?}"),
            };
            (key, r)
        })
        .collect()
}

/// Compares two keyed row sets column by column, naming every difference.
fn assert_same(what: &str, columns: &[String], snapshot: &ByKey, streamed: &ByKey) {
    assert_eq!(
        snapshot.keys().collect::<Vec<_>>(),
        streamed.keys().collect::<Vec<_>>(),
        "{what}: the same keys"
    );
    let mut differences = Vec::new();
    for (key, s) in snapshot {
        let b = &streamed[key];
        for (i, (x, y)) in s.iter().zip(b).enumerate() {
            if x != y {
                differences.push(format!(
                    "key {key:02x?} column {}: snapshot {x:?}, binlog {y:?}",
                    columns[i]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{what}:\n{}",
        differences.join("\n")
    );
}

const MATRIX: &str = "CREATE TABLE m (
    id BINARY(16) PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    d65 DECIMAL(65,30), d0 DECIMAL(10,0), fl FLOAT, db DOUBLE, b1 BIT(1), b64 BIT(64),
    bn BINARY(6), vb VARBINARY(10), bl BLOB, ch CHAR(5), vc VARCHAR(20), tx TEXT,
    l1 VARCHAR(20) CHARACTER SET latin1, l1b VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin,
    c1250 VARCHAR(20) CHARACTER SET cp1250, c1251 VARCHAR(20) CHARACTER SET cp1251,
    c1256 VARCHAR(20) CHARACTER SET cp1256, c1257 VARCHAR(20) CHARACTER SET cp1257,
    l2 VARCHAR(20) CHARACTER SET latin2, k8r VARCHAR(20) CHARACTER SET koi8r,
    u3 VARCHAR(20) CHARACTER SET utf8mb3, asc1 VARCHAR(20) CHARACTER SET ascii,
    u2 VARCHAR(20) CHARACTER SET ucs2, u16 VARCHAR(20) CHARACTER SET utf16,
    u16le VARCHAR(20) CHARACTER SET utf16le, u32 VARCHAR(20) CHARACTER SET utf32,
    ct1 CHAR(6) CHARACTER SET latin1, t32 TEXT CHARACTER SET utf32,
    en ENUM('a','b'), st SET('x','y','z'), dt DATE, dt0 DATETIME, dt6 DATETIME(6),
    ts3 TIMESTAMP(3) NULL, tm TIME, tm6 TIME(6), yr YEAR, js JSON, pt POINT,
    gs INT AS (i * 2) STORED, inv INT INVISIBLE DEFAULT 7)";

/// Minimum extremes, maximum extremes, nulls: each under a key ending in zero bytes.
const ROWS: &str = "INSERT INTO m (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d65, d0, fl, db,
    b1, b64, bn, vb, bl, ch, vc, tx, l1, l1b, c1250, c1251, c1256, c1257, l2, k8r,
    u3, asc1, u2, u16, u16le, u32, ct1, t32, en, st, dt, dt0, dt6, ts3, tm, tm6, yr, js, pt) VALUES
  (x'00000000000000000000000000000000', -128, 0, -32768, 0, -8388608, 0, -2147483648, 0,
    -9223372036854775808, 0, '-99999999999999999999999999999999999.999999999999999999999999999999',
    -9999999999, -3.40282e38, -1.7976931348623157e308, b'0', b'0', x'00', x'00', x'0000', 'a  ',
    '', '', 'café€‰ÿ', 'CAFÉ', 'Łódź čř', 'привет Ё', 'مرحبا', 'ąčęėįšųūž', 'łódź', 'привет',
    'ü€', 'plain', 'ü€', '😀x', '😀x', '😀x', 'é  ', 'long 😀',
    'a', '', '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000000',
    '2000-01-01 00:00:00.000', '-838:59:59', '-838:59:58.999999', 0, '[]', ST_GeomFromText('POINT(0 0)')),
  (x'01000000000000000000000000000000', 127, 255, 32767, 65535, 8388607, 16777215, 2147483647,
    4294967295, 9223372036854775807, 18446744073709551615,
    '99999999999999999999999999999999999.999999999999999999999999999999', 9999999999,
    3.40282e38, 1.7976931348623157e308, b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
    x'ffffff000000', x'ff00', x'ff00ff00', 'abcde', 'x y z ', 'tab\there', 'ÿ', 'ÿ', 'ž', 'Ё',
    'ب', 'ž', 'ż', 'Ъ', '€', 'x', '\\0', '𝄞', '𝄞', '𝄞', 'x', 'x',
    'b', 'x,y,z', '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999',
    '2037-12-31 00:00:00.999', '838:59:59', '838:59:59.000000', 2155,
    '{\"k\": [1, 2.5, \"s\", null, true, {\"n\": 18446744073709551615}]}', ST_GeomFromText('POINT(1.5 -2.25)')),
  (x'ab0000000000000000000000000000ff', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, '0000-00-00', NULL, NULL, NULL, NULL, NULL, 1901, NULL, NULL)";

async fn snapshot(source: &Configured, t: &warp_core::TableSchema) -> ByKey {
    by_key(common::copy_all(source, t, 2).await)
}

#[tokio::test]
async fn every_type_and_charset_lands_the_same_by_snapshot_and_by_stream() {
    let (source, conn) = setup("matrix", &[MATRIX]).await;
    parity_matrix(source, conn).await;
}

/// The same matrix with every row transaction reaching the reader as MySQL 8 writes it
/// under `binlog_transaction_compression`: one zstd-compressed payload event.
#[tokio::test]
async fn every_type_lands_the_same_from_mysql8_compressed_transactions() {
    let (_, conn) = setup("matrix8", &[MATRIX]).await;
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let upstream = url.trim_start_matches("mysql://root@").to_owned();
    let (port, sent) = common::compressing::proxy(upstream, false).await;
    let source = common::through_proxy(port, "cw_fid_matrix8", 3_550_000);
    parity_matrix(source, conn).await;
    assert!(
        sent.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the inserts, updates and deletes came compressed"
    );
}

/// Inserts, updates and deletes of the matrix's rows, each image equal to the snapshot
/// of the same rows value by value.
async fn parity_matrix(source: Configured, mut conn: mysql_async::Conn) {
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap(); // the zero date
    let t = source.discover().await.unwrap().remove(0);
    let columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    assert!(
        columns.iter().any(|c| c == "inv"),
        "an invisible column is part of the shape: {columns:?}"
    );
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();

    // Inserts: the binlog's after-images against the snapshot of the same rows.
    conn.query_drop(ROWS).await.unwrap();
    let inserted = row_events(&mut stream, 1).await;
    assert!(inserted.iter().all(|e| e.op == Operation::Insert));
    let copied = snapshot(&source, &t).await;
    assert_eq!(copied.len(), 3);
    let streamed = by_key(inserted.into_iter().map(|e| e.after.unwrap().values));
    assert_same("inserts", &columns, &copied, &streamed);

    // Updates: before-images equal the rows as copied, after-images the rows copied next.
    conn.query_drop(
        "UPDATE m SET i = COALESCE(i, 0) DIV 2, l1 = CONCAT(COALESCE(l1, ''), 'é'), yr = 0",
    )
    .await
    .unwrap();
    let updated = row_events(&mut stream, 1).await;
    assert_eq!(updated.len(), 3);
    let before = by_key(updated.iter().map(|e| e.before.clone().unwrap().values));
    assert_same("update before-images", &columns, &copied, &before);
    let copied = snapshot(&source, &t).await;
    let after = by_key(updated.iter().map(|e| e.after.clone().unwrap().values));
    assert_same("update after-images", &columns, &copied, &after);

    // Deletes: the key of a row whose key ends in zero bytes is the key that was copied.
    conn.query_drop("DELETE FROM m").await.unwrap();
    let deleted = row_events(&mut stream, 1).await;
    let gone = by_key(deleted.iter().map(|e| e.before.clone().unwrap().values));
    assert_same("delete before-images", &columns, &copied, &gone);
    let keys: Vec<Vec<Value>> = deleted.iter().map(|e| e.key.clone()).collect();
    let copied_keys: Vec<Vec<Value>> = copied.values().map(|r| vec![r[0].clone()]).collect();
    assert_eq!(keys, copied_keys, "delete keys are the copied keys");
}

/// Every byte a single-byte character set defines lands as the same character by either
/// path (the server's own conversion is the reference).
#[tokio::test]
async fn every_byte_of_each_single_byte_charset_decodes_as_the_server_converts_it() {
    let charsets = [
        "latin1", "cp1250", "cp1251", "cp1256", "cp1257", "latin2", "koi8r",
    ];
    let columns: Vec<String> = charsets
        .iter()
        .map(|c| format!("{c} VARCHAR(256) CHARACTER SET {c}"))
        .collect();
    let ddl = format!(
        "CREATE TABLE b (id INT PRIMARY KEY, {})",
        columns.join(", ")
    );
    let (source, mut conn) = setup("bytes", &[&ddl]).await;
    // The bytes each set defines: those the server converts to something other than `?`.
    // Row 1 holds them all; row 2 a byte each set leaves undefined, where it has one.
    let (mut values, mut undefined_values) = (Vec::new(), Vec::new());
    let mut undefined_count = 0;
    for cs in charsets {
        let mut defined = Vec::new();
        for b in 0u8..=255 {
            let converted: Option<String> = conn
                .query_first(format!(
                    "SELECT HEX(CONVERT(_{cs} X'{b:02x}' USING utf8mb4))"
                ))
                .await
                .unwrap();
            if b == b'?' || converted.as_deref() != Some("3F") {
                defined.push(b);
            }
        }
        assert!(defined.len() > 240, "{cs}: {} bytes defined", defined.len());
        let hex: String = defined.iter().map(|b| format!("{b:02x}")).collect();
        values.push(format!("_{cs} X'{hex}'"));
        undefined_values.push(match (0u8..=255).find(|b| !defined.contains(b)) {
            Some(b) => {
                undefined_count += 1;
                format!("_{cs} X'41{b:02x}'")
            }
            None => "NULL".into(),
        });
    }
    assert!(undefined_count >= 4, "cp1250, cp1251, cp1256, cp1257");
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop(format!(
        "INSERT INTO b VALUES (1, {}), (2, {})",
        values.join(", "),
        undefined_values.join(", ")
    ))
    .await
    .unwrap();
    let streamed = by_key(
        row_events(&mut stream, 1)
            .await
            .into_iter()
            .map(|e| e.after.unwrap().values),
    );
    let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    let copied = snapshot(&source, &t).await;
    assert_same("all bytes", &names, &copied, &streamed);
    // An undefined byte is refused by both paths, never landed as `?` or as a guess.
    let refused = copied.values().nth(1).unwrap();
    for (i, v) in undefined_values.iter().enumerate() {
        match (&refused[i + 1], v.as_str()) {
            (Value::Null, "NULL") => {}
            (Value::Unreadable(reason), _) => {
                assert!(reason.contains(charsets[i]), "{reason}")
            }
            (other, _) => panic!("{}: {v} was copied as {other:?}", charsets[i]),
        }
    }
}

/// A character set the binlog path cannot decode exactly is refused per row with a reason
/// naming it, never decoded as something else.
#[tokio::test]
async fn a_charset_without_an_exact_decoder_is_refused_by_name() {
    let (source, mut conn) = setup(
        "sjis",
        &[
            "CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET sjis,
             k VARCHAR(10) CHARACTER SET koi8u, c VARCHAR(10) CHARACTER SET cp866)",
        ],
    )
    .await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    conn.query_drop("INSERT INTO s VALUES (1, 'テスト', 'ґєї', 'Ўў')")
        .await
        .unwrap();
    let events = row_events(&mut stream, 1).await;
    let streamed = &events[0].after.as_ref().unwrap().values;
    for (i, charset) in [(1, "sjis"), (2, "koi8u"), (3, "cp866")] {
        match &streamed[i] {
            Value::Unreadable(reason) => assert!(reason.contains(charset), "{reason}"),
            other => panic!("a {charset} value was decoded as {other:?}"),
        }
    }
    // The snapshot reads them through the server's conversion.
    let copied = snapshot(&source, &t).await;
    assert_eq!(
        copied.values().next().unwrap()[1..],
        [
            Value::Text("テスト".into()),
            Value::Text("ґєї".into()),
            Value::Text("Ўў".into())
        ]
    );
}

/// Parents deleted with `foreign_key_checks=0` keep their children at the source (InnoDB
/// runs no action): the rows event says so, and no cascade is reproduced.
#[tokio::test]
async fn parents_deleted_without_foreign_key_checks_keep_their_children() {
    let (source, mut conn) = setup(
        "fkc",
        &[
            "CREATE TABLE parent (id INT PRIMARY KEY)",
            "CREATE TABLE child (id INT PRIMARY KEY, p INT,
               FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE)",
            "INSERT INTO parent VALUES (1), (2)",
            "INSERT INTO child VALUES (10, 1), (20, 2)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    let child = tables.iter().position(|t| t.id.name == "child").unwrap();
    conn.query_drop("SET SESSION foreign_key_checks = 0")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM parent WHERE id = 1")
        .await
        .unwrap();
    conn.query_drop("SET SESSION foreign_key_checks = 1")
        .await
        .unwrap();
    conn.query_drop("DELETE FROM parent WHERE id = 2")
        .await
        .unwrap();
    let remaining: Vec<i32> = conn.query("SELECT id FROM child").await.unwrap();
    assert_eq!(remaining, [10], "the source kept the first child");
    let mut child_deletes = Vec::new();
    let mut commits = 0;
    while commits < 2 {
        let item = next_significant(&mut feed).await;
        let FeedItem::Fragment { changes, commit } = item else {
            panic!("{item:?}")
        };
        let rows = changes.iter().any(|c| matches!(c.change, Change::Row(_)));
        child_deletes.extend(changes.into_iter().filter_map(|c| match c.change {
            Change::Cascade(cascade) if c.table == child => Some(cascade.matching),
            Change::Row(e) if c.table == child => Some(e.key),
            _ => None,
        }));
        commits += usize::from(commit.is_some() && rows);
    }
    assert_eq!(
        child_deletes,
        [vec![Value::Int(2)]],
        "only the cascade InnoDB ran (children of parent 2) is reproduced"
    );
}

/// A chain through a table the feed does not serve yet (it is still being copied, so it
/// joins the feed later): the parent's delete still carries the action on the served
/// grandchild, found through the middle table. Before, no action was computed through an
/// unserved middle, and the grandchild kept its rows for good once its position passed
/// the delete (seen in `cascade_e2e` under load).
#[tokio::test]
async fn a_chain_through_a_table_not_served_yet_still_reaches_the_grandchild() {
    let (source, mut conn) = setup(
        "fkchain",
        &[
            "CREATE TABLE parent (id INT PRIMARY KEY)",
            "CREATE TABLE middle (id INT PRIMARY KEY, p INT,
               FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE)",
            "CREATE TABLE grandchild (id INT PRIMARY KEY, m INT,
               FOREIGN KEY (m) REFERENCES middle (id) ON DELETE CASCADE)",
            "INSERT INTO parent VALUES (1)",
            "INSERT INTO middle VALUES (10, 1)",
            "INSERT INTO grandchild VALUES (100, 10)",
        ],
    )
    .await;
    let served: Vec<_> = (source.discover().await.unwrap().into_iter())
        .filter(|t| t.id.name != "middle")
        .collect();
    let start = source.current_position(&served[0]).await.unwrap();
    let mut feed = source.open_feed(&served, &start).await.unwrap();
    let grandchild = served
        .iter()
        .position(|t| t.id.name == "grandchild")
        .unwrap();
    conn.query_drop("DELETE FROM parent WHERE id = 1")
        .await
        .unwrap();
    let FeedItem::Fragment { changes, .. } = next_significant(&mut feed).await else {
        panic!("a fragment")
    };
    let actions: Vec<(usize, Vec<String>)> = (changes.into_iter())
        .filter_map(|c| match c.change {
            Change::Cascade(a) => Some((c.table, a.via.iter().map(|h| h.table.clone()).collect())),
            _ => None,
        })
        .collect();
    assert_eq!(actions, [(grandchild, vec!["middle".to_owned()])]);
}

/// Partition maintenance that removes rows without row events stops its table with the
/// statement named (the other tables stream on); one that empties every partition is a
/// truncate; one that only moves rows between partitions changes nothing.
#[tokio::test]
async fn partition_drops_stop_the_table_and_moves_change_nothing() {
    let (source, mut conn) = setup(
        "parts",
        &[
            "CREATE TABLE p (id INT PRIMARY KEY) PARTITION BY RANGE (id) (
               PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20),
               PARTITION p2 VALUES LESS THAN (30))",
            "CREATE TABLE q (id INT PRIMARY KEY) PARTITION BY RANGE (id) (
               PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20))",
            "CREATE TABLE other (id INT PRIMARY KEY)",
            "INSERT INTO p VALUES (1), (11), (21)",
            "INSERT INTO q VALUES (1), (11)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let index = |name: &str| tables.iter().position(|t| t.id.name == name).unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "ALTER TABLE p REORGANIZE PARTITION p0, p1 INTO (PARTITION p01 VALUES LESS THAN (20))",
            "ALTER TABLE p DROP PARTITION p2",
            "ALTER TABLE q TRUNCATE PARTITION ALL",
            "INSERT INTO other VALUES (1)",
        ],
    )
    .await;
    let mut failed = None;
    let mut truncated = Vec::new();
    let mut other_rows = 0;
    while other_rows == 0 {
        let item = next_significant(&mut feed).await;
        match item {
            FeedItem::TableFailed { table, error } => {
                assert!(failed.is_none(), "one table fails: {error}");
                failed = Some((table, error.to_string()));
            }
            FeedItem::Fragment { changes, .. } => {
                for c in changes {
                    match c.change {
                        Change::Truncate => truncated.push(c.table),
                        Change::Row(_) if c.table == index("other") => other_rows += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    let (table, error) = failed.expect("the dropped partition stopped its table");
    assert_eq!(table, index("p"));
    assert!(error.contains("DROP PARTITION p2"), "{error}");
    assert_eq!(truncated, [index("q")]);
}

/// Rows logged before an `ALTER` that reorders ENUM and SET labels, read after it (a
/// replicator stopped across the change): the labels are the event's, not today's.
#[tokio::test]
async fn enum_and_set_labels_are_read_as_they_were_when_logged() {
    let (source, mut conn) = setup(
        "labels",
        &["CREATE TABLE c (id INT PRIMARY KEY, e ENUM('red','green','blue'), s SET('x','y','z'))"],
    )
    .await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    conn.query_drop("INSERT INTO c VALUES (1, 'green', 'y'), (2, 'blue', 'x,z')")
        .await
        .unwrap();
    conn.query_drop(
        "ALTER TABLE c MODIFY e ENUM('blue','green','red','pink'), MODIFY s SET('z','y','x')",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO c VALUES (3, 'pink', 'z')")
        .await
        .unwrap();
    // Discovered after the ALTER, as a restarted replicator would.
    let t = rediscovered(&source, &t).await;
    let mut stream = source.stream(&t, &start).await.unwrap();
    let events = row_events(&mut stream, 2).await;
    let text = |s: &str| Value::Text(s.into());
    let set = |s: &[&str]| Value::Array(s.iter().map(|l| text(l)).collect());
    let landed: Vec<Vec<Value>> = events
        .into_iter()
        .map(|e| e.after.unwrap().values[1..].to_vec())
        .collect();
    assert_eq!(
        landed,
        [
            vec![text("green"), set(&["y"])],
            vec![text("blue"), set(&["x", "z"])],
            vec![text("pink"), set(&["z"])],
        ]
    );
}

/// Columns changed after their values were logged, before the reader starts (a `CONVERT`
/// or `MODIFY` while the replicator was stopped): the events before the statement carry
/// the old set's bytes and the old integer width and signedness, and are decoded by them,
/// read from their table map (the catalog says the new ones). An ENUM and a GEOMETRY column before the text column check which columns
/// the server's table map lists sets for.
#[tokio::test]
async fn text_converted_to_another_set_after_it_was_logged_reads_in_its_logged_set() {
    let (source, mut conn) = setup(
        "converted",
        &[
            "CREATE TABLE c (id INT PRIMARY KEY, e ENUM('a','b'), g GEOMETRY, \
           t VARCHAR(20) CHARACTER SET cp1251, u VARCHAR(20) CHARACTER SET latin1, \
           n INT UNSIGNED, b TINYINT UNSIGNED) \
           DEFAULT CHARSET = utf8mb4",
        ],
    )
    .await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    conn.query_drop(
        "INSERT INTO c VALUES (1, 'b', POINT(1, 2), 'Привет', 'café', 4000000000, 200), \
         (2, 'a', NULL, 'ёж', 'façade', 1, 2)",
    )
    .await
    .unwrap();
    conn.query_drop(
        "ALTER TABLE c MODIFY t VARCHAR(20) CHARACTER SET koi8r, MODIFY u VARCHAR(20) CHARACTER SET cp1250, \
         MODIFY n BIGINT, MODIFY b SMALLINT",
    )
    .await
    .unwrap();
    conn.query_drop("INSERT INTO c VALUES (3, 'a', NULL, 'Мир', 'dvůr', -5, -300)")
        .await
        .unwrap();
    // Discovered after the ALTER, as a restarted replicator would.
    let t = rediscovered(&source, &t).await;
    let mut stream = source.stream(&t, &start).await.unwrap();
    let events = row_events(&mut stream, 2).await;
    let landed: Vec<Vec<Value>> = events
        .into_iter()
        .map(|e| e.after.unwrap().values[3..].to_vec())
        .collect();
    // Logged unsigned, so read as unsigned; then signed, as the catalog says now.
    let (text, uint, int) = (|s: &str| Value::Text(s.into()), Value::UInt, Value::Int);
    assert_eq!(
        landed,
        [
            vec![text("Привет"), text("café"), uint(4_000_000_000), uint(200)],
            vec![text("ёж"), text("façade"), uint(1), uint(2)],
            vec![text("Мир"), text("dvůr"), int(-5), int(-300)],
        ]
    );
}

/// Under `lower_case_table_names=0` (the peer's, Linux's default) a database whose name
/// differs from ours only in case is another database: its DDL leaves our table alone,
/// as its rows do.
#[tokio::test]
async fn a_database_named_like_ours_in_another_case_is_another_database() {
    let (source, mut conn) = setup(
        "case",
        &[
            "CREATE TABLE orders (id INT PRIMARY KEY)",
            "INSERT INTO orders VALUES (1)",
        ],
    )
    .await;
    let setting: u8 = conn
        .query_first("SELECT @@lower_case_table_names")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(setting, 0, "the peer keeps names case-sensitive");
    exec_all(
        &mut conn,
        &[
            "DROP DATABASE IF EXISTS CW_FID_CASE",
            "CREATE DATABASE CW_FID_CASE",
            "CREATE TABLE CW_FID_CASE.orders (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let t = source.discover().await.unwrap().remove(0);
    let start = source.current_position(&t).await.unwrap();
    let mut stream = source.stream(&t, &start).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "INSERT INTO CW_FID_CASE.orders VALUES (7)",
            "TRUNCATE TABLE CW_FID_CASE.orders",
            "INSERT INTO orders VALUES (2)",
        ],
    )
    .await;
    let mut changes = Vec::new();
    while !changes.iter().any(|c| matches!(c, Change::Row(_))) {
        let f = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("binlog event in time")
            .unwrap()
            .unwrap();
        changes.extend(f.changes);
    }
    let keys: Vec<&Vec<Value>> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Row(e) => Some(&e.key),
            _ => None,
        })
        .collect();
    assert!(
        !changes.iter().any(|c| matches!(c, Change::Truncate)),
        "{changes:?}"
    );
    assert_eq!(keys, [&vec![Value::Int(2)]]);
}

/// The served database dropped and created again with a table of the same name (a
/// restore, a test reset): the table is emptied and copied again instead of streaming on
/// over rows that no longer exist.
#[tokio::test]
async fn a_dropped_database_has_its_tables_copied_again() {
    let (source, mut conn) = setup(
        "dropdb",
        &[
            "CREATE TABLE t (id INT PRIMARY KEY)",
            "INSERT INTO t VALUES (1)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "DROP DATABASE cw_fid_dropdb",
            "CREATE DATABASE cw_fid_dropdb",
            "CREATE TABLE cw_fid_dropdb.t (id INT PRIMARY KEY)",
            "INSERT INTO cw_fid_dropdb.t VALUES (2)",
        ],
    )
    .await;
    let error = loop {
        let item = next_significant(&mut feed).await;
        match item {
            FeedItem::TableFailed { error, .. } => break error,
            FeedItem::Fragment { changes, .. } => assert!(
                !changes.iter().any(|c| matches!(c.change, Change::Row(_))),
                "a row of the new table streamed into the old one: {changes:?}"
            ),
        }
    };
    assert!(
        matches!(&error, warp_core::Error::Replaced { how, .. } if how.contains("dropped")),
        "{error}"
    );
}

/// A key is placed in a snapshot chunk only where the server would put it: under an
/// insensitive collation the server chunks `a, B, c` in that order while bytes order them
/// `B, a, c`, so a byte-wise test took `a` for a key of `B`'s chunk and the hand-over
/// skipped its change (the row kept its old value). `_bin` keys keep the byte-wise test.
#[tokio::test]
async fn chunk_membership_follows_the_servers_key_order() {
    let (source, _conn) = setup(
        "collation",
        &[
            "CREATE TABLE ci (k VARCHAR(10) COLLATE utf8mb4_general_ci PRIMARY KEY)",
            "CREATE TABLE cb (k VARCHAR(10) COLLATE utf8mb4_bin PRIMARY KEY)",
            "INSERT INTO ci VALUES ('a'), ('B'), ('c'), ('D'), ('e')",
            // utf8mb4_bin pads with spaces: 'c\x01' sorts below 'c' (as 'c\x01' < 'c ').
            "INSERT INTO cb VALUES ('a'), ('B'), ('c'), ('c\x01'), ('D'), ('e')",
        ],
    )
    .await;
    for t in source.discover().await.unwrap() {
        let plan = source.plan_snapshot(&t, 1).await.unwrap();
        let mut claimed = 0;
        for chunk in &plan.chunks {
            let read = common::rows_of_chunk(source.read_chunk(&t, chunk).await.unwrap()).await;
            for key in ["a", "B", "c", "c\u{1}", "D", "e"] {
                let key = vec![Value::Text(key.into())];
                if source.source.chunk_contains(&t.id, chunk, &key) {
                    claimed += 1;
                    assert!(
                        read.contains(&key),
                        "{}: {key:?} placed in a chunk the server read as {read:?}",
                        t.id.name
                    );
                }
            }
        }
        // Byte order is the server's for the `_bin` table: every key is placed but 'c\x01'
        // and the key of the chunk it bounds ('a').
        let expected = if t.id.name == "cb" { 4 } else { 0 };
        assert_eq!(claimed, expected, "{}", t.id.name);
    }
}

/// Verification asks which destination keys the source still holds: only a key as
/// stored counts, never one the collation merely deems equal (another case, trailing
/// spaces under PAD SPACE), and stored text of single-byte sets is matched as decoded.
#[tokio::test]
async fn existing_keys_are_the_keys_as_stored_not_as_the_collation_compares() {
    let (source, _conn) = setup(
        "exists",
        &[
            "CREATE TABLE ci (k VARCHAR(10) COLLATE utf8mb4_general_ci PRIMARY KEY)",
            "CREATE TABLE l1 (k VARCHAR(10) CHARACTER SET latin1 PRIMARY KEY, n INT)",
            "CREATE TABLE two (a INT, b VARCHAR(5), PRIMARY KEY (a, b))",
            "INSERT INTO ci VALUES ('Abc'), ('x ')",
            "INSERT INTO l1 VALUES (_latin1 0x636166E9, 1)",
            "INSERT INTO two VALUES (1, 'p'), (2, 'q')",
        ],
    )
    .await;
    let text = |k: &str| vec![Value::Text(k.into())];
    // (table, keys asked, keys held)
    let cases: [(&str, Vec<Key>, Vec<Key>); 3] = [
        (
            "ci",
            vec![text("abc"), text("Abc"), text("x"), text("x "), text("zz")],
            vec![text("Abc"), text("x ")],
        ),
        ("l1", vec![text("café"), text("cafe")], vec![text("café")]),
        (
            "two",
            vec![
                vec![Value::Int(1), Value::Text("p".into())],
                vec![Value::Int(1), Value::Text("q".into())],
                vec![Value::Int(2), Value::Text("q".into())],
            ],
            vec![
                vec![Value::Int(1), Value::Text("p".into())],
                vec![Value::Int(2), Value::Text("q".into())],
            ],
        ),
    ];
    let tables = source.discover().await.unwrap();
    for (name, asked, held) in cases {
        let t = tables.iter().find(|t| t.id.name == name).unwrap();
        let found = source.existing_keys(t, &asked).await.unwrap();
        assert_eq!(found, Some(held), "{name}");
    }
}

/// A reload (`DROP TABLE`, `CREATE TABLE`, rows): the reader asks for the table to be
/// emptied and copied again (before the DROP's commit reaches the table); while the table
/// is missing its copy retries (the server's 1146 is transient), and once it is back the
/// copy reads the new rows.
#[tokio::test]
async fn a_dropped_table_is_copied_again_once_created_again() {
    let (source, mut conn) = setup(
        "reload",
        &[
            "CREATE TABLE t (id INT PRIMARY KEY)",
            "INSERT INTO t VALUES (1), (2)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let t = tables[0].clone();
    let start = source.current_position(&t).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    conn.query_drop("DROP TABLE t").await.unwrap();
    match next_significant(&mut feed).await {
        FeedItem::TableFailed {
            table: 0,
            error: warp_core::Error::Replaced { how, .. },
        } => assert!(how.contains("dropped"), "{how}"),
        other => panic!("expected the table to be replaced, got {other:?}"),
    }
    let missing = source
        .source
        .plan_snapshot(&t, &source.schema.table("t").read_settings(), 10)
        .await
        .expect_err("the table is gone");
    assert!(missing.is_transient(), "{missing}");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(5))")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (3, 'new')")
        .await
        .unwrap();
    let t = source.discover().await.unwrap().remove(0);
    let copied = common::copy_all(&source, &t, 10).await;
    assert_eq!(copied, [vec![Value::Int(3), Value::Text("new".into())]]);
}

/// A primary key changed by `ALTER TABLE` (here widened to two columns): rows would
/// collide under the old key, so the table stops naming both keys; a statement about
/// something else leaves it streaming.
#[tokio::test]
async fn a_changed_primary_key_stops_its_table() {
    let (source, mut conn) = setup(
        "pk",
        &[
            "CREATE TABLE t (id INT NOT NULL, region CHAR(2) NOT NULL, v INT, PRIMARY KEY (id))",
            "CREATE TABLE other (id INT PRIMARY KEY)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let t = tables.iter().position(|x| x.id.name == "t").unwrap();
    let start = source.current_position(&tables[0]).await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "ALTER TABLE t ADD COLUMN w INT",
            "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, region)",
            "INSERT INTO t VALUES (1, 'eu', 1, NULL), (1, 'us', 2, NULL)",
            "INSERT INTO other VALUES (1)",
        ],
    )
    .await;
    let mut failed = None;
    let mut rows_of_t = 0;
    let mut other_rows = 0;
    while other_rows == 0 {
        let item = next_significant(&mut feed).await;
        match item {
            FeedItem::TableFailed { table, error } => failed = Some((table, error.to_string())),
            FeedItem::Fragment { changes, .. } => {
                for c in changes {
                    match c.change {
                        Change::Row(_) if c.table == t => rows_of_t += 1,
                        Change::Row(_) => other_rows += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    let (table, error) = failed.expect("the table stopped");
    assert_eq!(table, t);
    assert!(
        error.contains("changed the primary key from (id) to (id, region)"),
        "{error}"
    );
    assert_eq!(rows_of_t, 0, "no row keyed by the old key after the change");
}

/// A column renamed while the reader was stopped: the log before the rename names the old
/// column, today's catalog the new one. Mapping by name would lose the values (they
/// landed as NULL under the new name), so the table is copied again instead.
#[tokio::test]
async fn a_column_renamed_while_stopped_has_the_table_copied_again() {
    let (source, mut conn) = setup(
        "renamed",
        &["CREATE TABLE t (id INT PRIMARY KEY, email VARCHAR(20))"],
    )
    .await;
    let before = source.discover().await.unwrap();
    let start = source.current_position(&before[0]).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "INSERT INTO t VALUES (1, 'a@x')",
            "ALTER TABLE t RENAME COLUMN email TO contact",
            "INSERT INTO t VALUES (2, 'b@x')",
        ],
    )
    .await;
    // Restarted: the catalog is read after the rename, the log from before it.
    let tables = source.discover().await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    match next_significant(&mut feed).await {
        FeedItem::TableFailed {
            error: warp_core::Error::Replaced { how, .. },
            ..
        } => assert!(how.contains("email"), "{how}"),
        other => panic!("expected a new copy, got {other:?}"),
    }
}

/// A column only added, or only dropped, while stopped is no reshape: the stream goes on
/// (an added column reads its default in older rows, as at the source; a dropped one keeps
/// its landed values). Both at once look like a rename and are copied again.
#[tokio::test]
async fn a_column_only_added_or_only_dropped_while_stopped_streams_on() {
    let (source, mut conn) = setup(
        "added",
        &[
            "CREATE TABLE dropped (id INT PRIMARY KEY, old_note VARCHAR(20), v INT)",
            "CREATE TABLE added (id INT PRIMARY KEY, v INT)",
        ],
    )
    .await;
    let before = source.discover().await.unwrap();
    let start = source.current_position(&before[0]).await.unwrap();
    exec_all(
        &mut conn,
        &[
            "INSERT INTO dropped VALUES (1, 'n', 1)",
            "INSERT INTO added VALUES (2, 2)",
            "ALTER TABLE dropped DROP COLUMN old_note",
            "ALTER TABLE added ADD COLUMN w INT DEFAULT 9",
            "INSERT INTO dropped VALUES (3, 3)",
            "INSERT INTO added VALUES (4, 4, 4)",
        ],
    )
    .await;
    let tables = source.discover().await.unwrap();
    let mut feed = source.open_feed(&tables, &start).await.unwrap();
    let txns = common::transactions(&mut feed, 4, Duration::from_secs(30)).await;
    let keys: Vec<Option<i64>> = txns
        .iter()
        .flat_map(|(rows, _)| rows.iter().map(|r| r.0))
        .collect();
    assert_eq!(keys, [Some(1), Some(2), Some(3), Some(4)]);
}

/// A key holding a byte its set does not define is dead-lettered with its row, and the
/// copy pages on past it: the cursor is the key as the server compares it, not the
/// unreadable decoded value (read page by page, one row each).
#[tokio::test]
async fn the_copy_pages_past_a_key_it_cannot_decode() {
    let (_, mut conn) = setup(
        "undefined_key",
        &["CREATE TABLE k (k VARCHAR(10) CHARACTER SET cp1250 PRIMARY KEY, v INT)"],
    )
    .await;
    conn.query_drop(
        "INSERT INTO k VALUES ('a', 1), (_cp1250 X'6181', 2), ('b', 3), ('c', 4), ('d', 5)",
    )
    .await
    .unwrap();
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let source = common::tuned_source(
        &format!(
            "connection_string: '{url}/cw_fid_undefined_key', server_id: {}",
            common::server_id(3_560_000)
        ),
        "cw_fid_undefined_key",
        ", stream_batch_size: 1",
    )
    .unwrap();
    let t = source.discover().await.unwrap().remove(0);
    let copied = common::copy_all(&source, &t, 100).await;
    let values: Vec<&Value> = copied.iter().map(|r| &r[1]).collect();
    assert_eq!(
        values,
        [1, 2, 3, 4, 5].map(Value::Int).iter().collect::<Vec<_>>(),
        "every row once, in key order"
    );
    assert!(matches!(&copied[1][0], Value::Unreadable(r) if r.contains("0x81")));
}
