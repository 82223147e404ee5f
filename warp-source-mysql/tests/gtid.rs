//! MySQL GTIDs (`gtid_mode=ON`): the reader keeps the GTID set of every position it hands
//! out and resumes with `COM_BINLOG_DUMP_GTID`, so a failover to a primary whose binlog
//! files have other names resumes instead of failing. MariaDB writes its own GTIDs, so a
//! proxy in front of the MariaDB peer speaks MySQL's shapes: each MariaDB GTID event
//! becomes MySQL's GTID_EVENT (or MySQL 8.4's tagged GTID_TAGGED_LOG_EVENT) for one source
//! uuid, followed by `BEGIN` or `XA START` as MySQL writes them; each GTID list becomes a
//! PREVIOUS_GTIDS event; `SELECT @@GLOBAL.gtid_mode` answers `ON`; and a
//! `COM_BINLOG_DUMP_GTID` is served by MariaDB's own GTID resume (`@slave_connect_state`)
//! after the set's last transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dump_proxy::{self, event_type, Rewrite, MARIADB_GTID, MARIADB_GTID_LIST};
use mysql_async::prelude::Queryable;
use mysql_common::binlog::events::{GtidEvent, PreviousGtidsEvent, PreviousGtidsSid, QueryEvent};
use mysql_common::packets::{ComBinlogDumpGtid, GnoInterval, Tag};
use mysql_common::proto::{MyDeserialize, MySerialize};
use warp_core::{FeedItem, Position};
use warp_source_mysql::BinlogPosition;

mod common;

/// The source uuid every rewritten GTID carries.
const SOURCE_UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
const GTID_EVENT: u8 = 33;
const PREVIOUS_GTIDS: u8 = 35;
const GTID_TAGGED: u8 = 42;

fn source_uuid() -> [u8; 16] {
    let hex: String = SOURCE_UUID.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The GTID-set text of transactions 1..=`last` of the source (with `tag`).
fn set_through(tag: Option<&str>, last: u64) -> String {
    match tag {
        Some(tag) => format!("{SOURCE_UUID}:{tag}:1-{last}"),
        None => format!("{SOURCE_UUID}:1-{last}"),
    }
}

/// A MariaDB GTID event's sequence number, and the xid of the XA transaction it starts
/// (`FL_PREPARED_XA`), as MySQL's `XA START` statement writes it.
fn mariadb_gtid(body: &[u8]) -> (u64, Option<String>) {
    let seq = u64::from_le_bytes(body[..8].try_into().unwrap());
    let flags = body[12];
    if flags & 64 == 0 {
        return (seq, None);
    }
    let at = if flags & 2 != 0 { 21 } else { 13 };
    let format = u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
    let (gtrid, bqual) = (usize::from(body[at + 4]), usize::from(body[at + 5]));
    let data = &body[at + 6..at + 6 + gtrid + bqual];
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let xid = format!(
        "X'{}',X'{}',{format}",
        hex(&data[..gtrid]),
        hex(&data[gtrid..])
    );
    (seq, Some(xid))
}

/// Speaks MySQL's GTID shapes on a MariaDB binlog dump.
struct MysqlGtids {
    tag: Option<&'static str>,
    mariadb_server_id: u32,
    /// Every GTID set a client asked to resume after.
    resumed_after: Arc<Mutex<Vec<String>>>,
}

impl Rewrite for MysqlGtids {
    fn event(&mut self, event: Vec<u8>) -> Vec<Vec<u8>> {
        let mut body = Vec::new();
        match event_type(&event) {
            MARIADB_GTID => {
                let (seq, xa) = mariadb_gtid(dump_proxy::body(&event));
                let ty = match self.tag {
                    Some(tag) => {
                        GtidEvent::new_tagged(source_uuid(), Tag::new(tag).unwrap(), seq)
                            .serialize(&mut body);
                        GTID_TAGGED
                    }
                    None => {
                        GtidEvent::new(source_uuid(), seq).serialize(&mut body);
                        GTID_EVENT
                    }
                };
                let gtid = dump_proxy::event_like(&event, ty, &body);
                let statement = match xa {
                    Some(xid) => format!("XA START {xid}"),
                    None => "BEGIN".to_owned(),
                };
                let mut query = Vec::new();
                QueryEvent::new(Vec::new(), Vec::new())
                    .with_query(statement.into_bytes())
                    .serialize(&mut query);
                vec![
                    gtid,
                    dump_proxy::event_like(&event, dump_proxy::QUERY_EVENT, &query),
                ]
            }
            MARIADB_GTID_LIST => {
                // count (low 28 bits), then domain (4), server (4), seq_no (8) each.
                let list = dump_proxy::body(&event);
                let count = u32::from_le_bytes(list[..4].try_into().unwrap()) & 0x0fff_ffff;
                let last = (0..count as usize)
                    .map(|i| &list[4 + 16 * i..4 + 16 * (i + 1)])
                    .filter(|entry| entry[..4] == [0; 4])
                    .map(|entry| u64::from_le_bytes(entry[8..16].try_into().unwrap()))
                    .max();
                let sids = last
                    .map(|last| {
                        let tag = self.tag.map(|t| Tag::new(t).unwrap());
                        PreviousGtidsSid::new(
                            source_uuid(),
                            tag,
                            vec![GnoInterval::new(1, last + 1)],
                        )
                    })
                    .into_iter()
                    .collect();
                PreviousGtidsEvent::new(sids).serialize(&mut body);
                vec![dump_proxy::event_like(&event, PREVIOUS_GTIDS, &body)]
            }
            _ => vec![event],
        }
    }

    fn command(&mut self, command: Vec<u8>) -> Vec<Vec<u8>> {
        match command.first() {
            Some(&dump_proxy::COM_QUERY)
                if command[1..].eq_ignore_ascii_case(b"SELECT @@GLOBAL.gtid_mode") =>
            {
                let mut query = vec![dump_proxy::COM_QUERY];
                query.extend(b"SELECT 'ON'");
                vec![query]
            }
            Some(&dump_proxy::COM_BINLOG_DUMP_GTID) => {
                let mut buf = mysql_common::io::ParseBuf(&command);
                let dump = ComBinlogDumpGtid::deserialize((), &mut buf).unwrap();
                let sids = dump.sids();
                let set: Vec<String> = sids.iter().map(ToString::to_string).collect();
                self.resumed_after.lock().unwrap().push(set.join(","));
                let last = sids
                    .iter()
                    .filter(|s| s.uuid() == source_uuid())
                    .flat_map(|s| s.intervals().iter().map(|i| i.end() - 1))
                    .max()
                    .unwrap_or(0);
                let mut state = vec![dump_proxy::COM_QUERY];
                state.extend(
                    format!(
                        "SET @slave_connect_state = '0-{}-{last}'",
                        self.mariadb_server_id
                    )
                    .into_bytes(),
                );
                // COM_BINLOG_DUMP: pos (4), flags (2), server id (4), no file name.
                let mut plain = vec![dump_proxy::COM_BINLOG_DUMP];
                plain.extend(4u32.to_le_bytes());
                plain.extend(0u16.to_le_bytes());
                plain.extend(command[3..7].iter());
                vec![state, plain]
            }
            _ => vec![command],
        }
    }
}

struct Setup {
    source: common::Configured,
    conn: mysql_async::Conn,
    resumed_after: Arc<Mutex<Vec<String>>>,
}

async fn setup(db: &str, tag: Option<&'static str>) -> Setup {
    let url = warp_e2e::peer_url("WARP_TEST_MARIADB_URL");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    common::fresh_database(&mut conn, db).await;
    // Dropped and created again before the start: a learning start reads the DROP
    // again, which must not take the table out.
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "DROP TABLE t",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let mariadb_server_id: u32 = conn
        .query_first("SELECT @@server_id")
        .await
        .unwrap()
        .unwrap();
    let resumed_after = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&resumed_after);
    let upstream = url.trim_start_matches("mysql://root@").to_owned();
    let port = dump_proxy::start(upstream, move || MysqlGtids {
        tag,
        mariadb_server_id,
        resumed_after: Arc::clone(&shared),
    })
    .await;
    let source = common::through_proxy(port, db, 3_800_000);
    Setup {
        source,
        conn,
        resumed_after,
    }
}

/// Inserts `id` in a transaction of its own; returns its MariaDB sequence number (the
/// GNO the proxy gives it).
async fn insert(conn: &mut mysql_async::Conn, id: i64) -> u64 {
    conn.exec_drop("INSERT INTO t VALUES (?, 'v')", (id,))
        .await
        .unwrap();
    let last: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    last.rsplit('-').next().unwrap().parse().unwrap()
}

/// The next `n` committed transactions with rows: the ids inserted and the commit's
/// position. The deadline is for a hung feed (a learning start reads the binlog file).
async fn transactions(
    feed: &mut futures::stream::BoxStream<'static, warp_core::Result<FeedItem>>,
    n: usize,
) -> Vec<(Vec<i64>, BinlogPosition)> {
    common::transactions(feed, n, Duration::from_secs(300))
        .await
        .into_iter()
        .map(|(rows, at)| (rows.into_iter().filter_map(|(id, _)| id).collect(), at))
        .collect()
}

async fn positions_carry_the_set_and_a_failover_resumes_by_it(db: &str, tag: Option<&'static str>) {
    let Setup {
        source,
        mut conn,
        resumed_after,
    } = setup(db, tag).await;
    let t = source.discover().await.unwrap().remove(0);
    insert(&mut conn, 1).await;
    // A start position as the status statement reports it: no GTID set.
    let start = source.current_position(&t).await.unwrap();
    assert_eq!(BinlogPosition::decode(&start).unwrap().gtid_set, None);
    let mut feed = source
        .open_feed(std::slice::from_ref(&t), &start)
        .await
        .unwrap();
    let seq2 = insert(&mut conn, 2).await;
    let seq3 = insert(&mut conn, 3).await;
    // The set was learnt from the file's start: each commit carries every transaction
    // up to its own. Row 1, before the start, was read again but not handed out.
    let got = transactions(&mut feed, 2).await;
    assert_eq!(got[0].0, [2]);
    assert_eq!(got[1].0, [3]);
    assert_eq!(got[0].1.gtid_set.as_deref(), Some(&*set_through(tag, seq2)));
    assert_eq!(got[1].1.gtid_set.as_deref(), Some(&*set_through(tag, seq3)));
    assert!(resumed_after.lock().unwrap().is_empty());
    drop(feed);

    // A failover: the checkpoint after row 2 names a file and offset of another server.
    let mut checkpoint = got[0].1.clone();
    checkpoint.file = "elsewhere-bin.000042".into();
    checkpoint.pos = 4711;
    let seq4 = insert(&mut conn, 4).await;
    let mut feed = source
        .open_feed(
            std::slice::from_ref(&t),
            &Position::encode(&checkpoint).unwrap(),
        )
        .await
        .unwrap();
    let got = transactions(&mut feed, 2).await;
    assert_eq!(
        *resumed_after.lock().unwrap(),
        [set_through(tag, seq2)],
        "resumed with COM_BINLOG_DUMP_GTID after the checkpoint's set"
    );
    // Exactly what followed the checkpoint: nothing again, nothing lost.
    assert_eq!(got[0].0, [3]);
    assert_eq!(got[1].0, [4]);
    assert_eq!(got[1].1.gtid_set.as_deref(), Some(&*set_through(tag, seq4)));
    assert_ne!(
        got[1].1.file, "elsewhere-bin.000042",
        "the server's own file names"
    );
}

#[tokio::test]
async fn positions_carry_the_gtid_set_and_a_failover_resumes_by_it() {
    positions_carry_the_set_and_a_failover_resumes_by_it("cw_gtid", None).await;
}

#[tokio::test]
async fn tagged_gtids_of_mysql_8_4_are_followed_too() {
    positions_carry_the_set_and_a_failover_resumes_by_it("cw_gtid_tagged", Some("cw_tag")).await;
}
