//! The binlog feed: one dump connection for every table a replica serves. The reader is
//! a dispatcher: each event goes to the handler of its kind — rows (`rows`), DDL
//! (`ddl`), transaction boundaries, savepoints and XA (`transaction`), GTIDs (`gtid`),
//! compressed transactions (`payload`) — and what a handler completes is handed to the
//! engine: committed transactions tagged by table, fragments of large ones, a table's
//! stop with its reason, heartbeats while idle.

mod ddl;
mod gtid;
mod payload;
mod rows;
mod tables;
mod transaction;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use mysql_async::binlog::events::{Event, EventData, IncidentEvent, QueryEvent, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Pool};
use warp_core::{Commit, FeedItem};

use crate::ddl_scope::NameCase;
use crate::discover::MysqlTable;
use crate::error::{Context, MysqlError, Result};
use crate::gtid_set::GtidStart;
use crate::position::BinlogPosition;
use crate::table_map::Collations;
use crate::unhandled::{self, Refused, Undecoded};
use crate::xa::{self, XaLedger, XaStatement};
pub use gtid::GtidState;
use gtid::{Gtids, MARIADB_GTID_EVENT};
use payload::Payloads;
use tables::{Served, ServedTables};
use transaction::{Transaction, Undo};

/// Changes sent per fragment inside a large source transaction.
const FRAGMENT_CHANGES: usize = 2_000;
/// Heartbeat period asked of the server: an idle table still advances.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Counts zero dates read as NULL, per table name.
pub type ZeroDates = Arc<dyn Fn(&str, u64) + Send + Sync>;

struct Reader {
    stream: BinlogStream,
    pool: Pool,
    database: String,
    /// The binlog file being read.
    file: String,
    served: ServedTables,
    /// Shapes learnt from DDL, shared with the source (a later feed starts from them).
    learnt: Arc<Mutex<HashMap<String, MysqlTable>>>,
    zero_dates: ZeroDates,
    /// The consumer's start, when the dump began earlier (at a prepared XA transaction):
    /// transactions up to here are read again for their XA state, not handed out.
    replay_until: Option<BinlogPosition>,
    /// Items ready before the next read (a table failed by a DDL, then its commit).
    ready: VecDeque<FeedItem>,
    gtids: Gtids,
    txn: Transaction,
    xa: XaLedger,
    payloads: Payloads,
    /// The server's collations, for what a table map says about a column.
    collations: Collations,
    /// Tables whose column kinds are still compared with each event's table map: until
    /// one agrees, the catalog read at the start may already hold a `CONVERT` or `MODIFY`
    /// the events before it do not (`rows::logged_overrides`).
    kinds_unconfirmed: Vec<bool>,
}

/// What a binlog feed needs besides its tables and start.
pub struct FeedSetup {
    pub pool: Pool,
    pub opts: mysql_async::Opts,
    pub server_id: u32,
    pub database: String,
    pub learnt: Arc<Mutex<HashMap<String, MysqlTable>>>,
    pub zero_dates: ZeroDates,
}

/// Opens one binlog dump from `from` and yields the committed transactions of `tables`
/// (changes tagged with the table's index), heartbeats while idle. Parents the feed does
/// not serve are read too, for their children's cascades only.
pub async fn feed(
    setup: FeedSetup,
    tables: Vec<MysqlTable>,
    parents: Vec<MysqlTable>,
    from: BinlogPosition,
) -> Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
    let mut conn = mysql_async::Conn::new(setup.opts)
        .await
        .context("connect for binlog")?;
    let period = HEARTBEAT.as_nanos().to_string();
    conn.query_drop(format!("SET @master_heartbeat_period = {period}"))
        .await
        .context("set heartbeat")?;
    let mariadb_gtid = (from.gtid.as_deref())
        .map(GtidState::parse)
        .unwrap_or_default();
    let by_gtid =
        !mariadb_gtid.is_empty() && !gtid::file_position_matches(&mut conn, &from).await?;
    let mysql_gtid = GtidStart::plan(&mut conn, &from).await?;
    let cascades_logged = crate::foreign_keys::server_logs_actions(&mut conn).await?;
    let names = name_case(&mut conn).await?;
    let collations = Collations::read(&mut conn).await?;
    let kinds_unconfirmed = vec![true; tables.len() + parents.len()];
    // Ask MariaDB for real GTID events (MySQL ignores this variable).
    conn.query_drop("SET @mariadb_slave_capability = 4")
        .await
        .context("set capability")?;
    // From the start of an XA transaction still prepared at `from`, if any, so its
    // changes are read again (what lies between is at or before the checkpoints).
    let (dump_file, dump_pos) = match mysql_gtid {
        GtidStart::Learn => {
            tracing::info!(file = %from.file, "reading the binlog file from its start to learn the GTID set of the start position");
            (from.file.clone(), 4)
        }
        _ => from.dump_start(),
    };
    let start = DumpStart {
        file: &dump_file,
        pos: dump_pos,
        by_gtid,
    };
    let request = start
        .request(&mut conn, setup.server_id, &from, &mysql_gtid)
        .await?;
    let stream = conn
        .get_binlog_stream(request)
        .await
        .context("start binlog dump")?;
    let replay = !by_gtid && (dump_file.as_str(), dump_pos) != (from.file.as_str(), from.pos);
    let reader = Reader {
        stream,
        pool: setup.pool,
        database: setup.database,
        served: ServedTables::new(tables, parents, names, cascades_logged),
        learnt: setup.learnt,
        zero_dates: setup.zero_dates,
        txn: Transaction::new(BinlogPosition::new(dump_file.clone(), dump_pos)),
        file: dump_file,
        replay_until: replay.then(|| from.clone()),
        ready: VecDeque::new(),
        gtids: Gtids::new(mariadb_gtid, &mysql_gtid),
        xa: XaLedger::default(),
        payloads: Payloads::default(),
        collations,
        kinds_unconfirmed,
    };
    Ok(stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next().await {
            Ok(item) => Some((Ok(item), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed())
}

/// What an event asks of the reader.
enum Step {
    /// Handled: `Some` when it completes something to hand to the engine.
    Done(Option<FeedItem>),
    /// A statement that may be DDL, for [`Reader::statement`].
    Statement(Statement),
}

struct Statement {
    default_db: String,
    sql: String,
    log_pos: u32,
    ts: Option<DateTime<Utc>>,
}

/// Where the dump starts: a file and offset, or (after a failover) MariaDB's GTIDs.
struct DumpStart<'a> {
    file: &'a str,
    pos: u64,
    /// The file/offset does not belong to this server's history: resume after the
    /// recorded GTIDs instead.
    by_gtid: bool,
}

impl<'a> DumpStart<'a> {
    async fn request(
        &self,
        conn: &mut mysql_async::Conn,
        server_id: u32,
        from: &BinlogPosition,
        mysql_gtid: &'a GtidStart,
    ) -> Result<BinlogStreamRequest<'a>> {
        let request = BinlogStreamRequest::new(server_id);
        Ok(if let GtidStart::Resume(set) = mysql_gtid {
            tracing::info!(gtid_set = %set, "resuming the binlog after a GTID set");
            (request.with_gtid().with_gtid_set(set.sids()))
                .with_filename(b"".as_slice())
                .with_pos(4u64)
        } else if self.by_gtid {
            tracing::warn!(gtid = from.gtid.as_deref().unwrap_or(""), file = %from.file, "binlog file/offset not valid on this server; resuming by GTID");
            conn.exec_drop("SET @slave_connect_state = ?", (from.gtid.clone(),))
                .await
                .context("set GTID state")?;
            request.with_filename(b"".as_slice()).with_pos(4u64)
        } else {
            (request.with_filename(self.file.as_bytes())).with_pos(self.pos)
        })
    }
}

impl Reader {
    fn position(&self, log_pos: u32) -> BinlogPosition {
        let mut p = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        self.gtids.stamp(&mut p);
        p.resume_at = self.xa.resume_from().map(|r| (r.file, r.pos));
        p
    }

    /// Whether a transaction ending at `log_pos` is read again, not handed out.
    fn replaying(&self, log_pos: u32) -> bool {
        self.replay_until.as_ref().is_some_and(|until| {
            BinlogPosition::new(self.file.clone(), u64::from(log_pos)) <= *until
        })
    }

    /// The transaction read so far, committed at `log_pos`; `None` while replaying what
    /// the consumer already has (a dump started early to read a prepared XA again).
    fn commit(
        &mut self,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Option<FeedItem>> {
        let at = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        let replayed = self.replay_until.as_ref().map(|until| at <= *until);
        let (changes, txn_ts) = self.txn.end(at);
        match replayed {
            Some(true) => return Ok(None),
            Some(false) => self.replay_until = None,
            None => {}
        }
        let commit = Commit {
            position: self.position(log_pos).encode()?,
            source_ts: ts.or(txn_ts),
        };
        Ok(Some(FeedItem::Fragment {
            changes,
            commit: Some(commit),
        }))
    }

    /// Takes `index` out of the feed with `error`, reported before the next read.
    fn fail(&mut self, index: usize, error: warp_core::Error) {
        self.served.take_out(index);
        if self.served.is_parent_only(index) {
            tracing::warn!(%error, "a parent table read for its children's cascades can no longer be read: their cascades are not reproduced");
            return;
        }
        self.ready.push_back(FeedItem::TableFailed {
            table: index,
            error,
        });
    }

    /// Reads events until there is something to hand to the engine.
    async fn next(&mut self) -> warp_core::Result<FeedItem> {
        let item = self.read_next().await?;
        // A table stopped while this item was read hears it first: a commit must not
        // carry its checkpoint past what it never applied.
        if self.ready.is_empty() {
            return Ok(item);
        }
        self.ready.push_back(item);
        Ok(self.ready.pop_front().expect("not empty"))
    }

    async fn read_next(&mut self) -> warp_core::Result<FeedItem> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            let event = self.next_event().await?;
            let item = match self.dispatch(&event)? {
                Step::Done(item) => item,
                // Boxed: a catalog read's future is large and DDL is rare, so the path
                // every event takes stays small (a large future is copied per event).
                Step::Statement(statement) => Box::pin(self.statement(statement)).await?,
            };
            if let Some(item) = item {
                return Ok(item);
            }
        }
    }

    async fn next_event(&mut self) -> warp_core::Result<Event> {
        match self.stream.next().await {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => {
                let err = MysqlError::from_driver("binlog", e);
                if err.is_position_lost() {
                    return Err(warp_core::Error::PositionLost {
                        table: format!("{} binlog", self.database),
                        position: self.file.clone(),
                        detail: err.to_string(),
                    });
                }
                Err(err.into())
            }
            None => Err(warp_core::Error::source_transient(
                "binlog stream closed by the server",
            )),
        }
    }

    /// Hands `event` to the handler of its kind.
    fn dispatch(&mut self, event: &Event) -> warp_core::Result<Step> {
        let header = event.header();
        let log_pos = self.payloads.position(header.log_pos(), &self.file)?;
        let ts = DateTime::from_timestamp(i64::from(header.timestamp()), 0);
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            self.gtids.observe_mariadb(event.data(), header.server_id());
            if let Some(xid) = xa::mariadb_xa_start(event.data()) {
                self.xa.start(xid);
                self.txn.ts = ts;
            }
            return Ok(Step::Done(None));
        }
        let Some(data) = self.data_of(event)? else {
            return Ok(Step::Done(None));
        };
        if self.gtids.observe(&data) {
            return Ok(Step::Done(None));
        }
        let done = match data {
            EventData::RotateEvent(_) => {
                self.file = crate::rotate::target(event);
                None
            }
            EventData::HeartbeatEvent if self.txn.pending.is_empty() && log_pos > 0 => {
                self.commit(log_pos, Some(Utc::now()))?
            }
            EventData::XaPrepareLogEvent(_) => {
                self.xa_prepared(log_pos)?;
                None
            }
            EventData::QueryEvent(q) => return self.query(&q, log_pos, ts),
            EventData::XidEvent(_) => self.commit(log_pos, ts)?,
            // The server could not log what happened (e.g. LOST_EVENTS): a replica of it
            // stops here too.
            EventData::IncidentEvent(incident) => {
                return Err(self.broken(log_pos, incident_text(&incident)))
            }
            // The driver hands out the decompressed inner events next.
            EventData::TransactionPayloadEvent(_) => {
                self.payloads.start(log_pos);
                None
            }
            EventData::RowsEvent(rows) => self.rows_event(&rows, log_pos)?,
            _ => None,
        };
        Ok(Step::Done(done))
    }

    /// The event's decoded body; `None` for types the decoder does not know (MariaDB's
    /// own) that can carry no row.
    fn data_of<'e>(&self, event: &'e Event) -> warp_core::Result<Option<EventData<'e>>> {
        match event.read_data() {
            Ok(Some(d)) => Ok(Some(d)),
            Ok(None) => match unhandled::classify(event.header().event_type_raw()) {
                Undecoded::Ignorable => Ok(None),
                Undecoded::Compressed => Err(self.refuse(Refused::Compressed)),
                Undecoded::Unknown(code) => Err(self.refuse(Refused::Unknown(code))),
            },
            Err(e) => Err(warp_core::Error::source_transient(format!(
                "undecodable binlog event: {e}"
            ))),
        }
    }

    /// A statement: a transaction boundary, a savepoint or rollback, an XA statement, or
    /// one that may be DDL (left to [`Reader::statement`], which reads the catalog).
    fn query(
        &mut self,
        q: &QueryEvent<'_>,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Step> {
        let sql = q.query().into_owned();
        if let Some(xa) = XaStatement::parse(&sql) {
            return self.xa_statement(xa, log_pos, ts).map(Step::Done);
        }
        let trimmed = sql.trim().to_ascii_uppercase();
        if trimmed == "BEGIN" {
            self.txn.begin(ts);
            return Ok(Step::Done(None));
        }
        if let Some(undo) = Undo::parse(&trimmed) {
            return self.undo(undo, log_pos, ts).map(Step::Done);
        }
        // DDL read again before the consumer's position was applied then.
        if trimmed == "COMMIT" || self.replaying(log_pos) {
            return self.commit(log_pos, ts).map(Step::Done);
        }
        Ok(Step::Statement(Statement {
            default_db: q.schema().into_owned(),
            sql,
            log_pos,
            ts,
        }))
    }

    /// A statement that may be DDL: a commit of its own when it touches a served table.
    /// (A table the statement stopped hears it before this commit: `next`.)
    async fn statement(&mut self, s: Statement) -> warp_core::Result<Option<FeedItem>> {
        if self.ddl(&s.default_db, &s.sql).await? {
            self.commit(s.log_pos, s.ts)
        } else {
            Ok(None)
        }
    }

    /// A rows event: its changes join the transaction; a large transaction is handed out
    /// in fragments (an XA transaction is held whole until its outcome is known).
    fn rows_event(
        &mut self,
        rows: &RowsEventData<'_>,
        log_pos: u32,
    ) -> warp_core::Result<Option<FeedItem>> {
        let Some(tme) = self.stream.get_tme(rows.table_id()) else {
            // Its columns cannot be known: nothing after it can be trusted.
            return Err(self.broken(
                log_pos,
                format!(
                    "a rows event for table id {} without its table map",
                    rows.table_id()
                ),
            ));
        };
        let served =
            (self.served).index_of(&tme.database_name(), &self.database, &tme.table_name());
        let Some(index) = served else {
            return Ok(None);
        };
        if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
            let table = self.served.name(index);
            self.fail(index, unhandled::refusal(&table, Refused::PartialUpdate));
            return Ok(None);
        }
        let tme = tme.clone();
        self.rows(index, rows, &tme)?;
        if self.xa.reading() || self.replay_until.is_some() {
            return Ok(None);
        }
        let fragment = self.txn.fragment(FRAGMENT_CHANGES);
        Ok(fragment.map(|changes| FeedItem::Fragment {
            changes,
            commit: None,
        }))
    }

    /// The binlog at `log_pos` cannot be followed: the feed stops there, named.
    fn broken(&self, log_pos: u32, what: String) -> warp_core::Error {
        warp_core::Error::source_permanent(
            format!("{} binlog {}:{log_pos}: {what}", self.database, self.file),
            Some("the changes from this position on cannot be read exactly: resync the tables of this schema (cartridge-warp resync)".to_owned()),
        )
    }

    fn refuse(&self, what: Refused) -> warp_core::Error {
        unhandled::refusal(&format!("{} binlog", self.database), what)
    }
}

fn incident_text(incident: &IncidentEvent<'_>) -> String {
    match incident.incident_type() {
        Ok(kind) => format!("an INCIDENT event ({kind:?}: {})", incident.message()),
        Err(_) => format!("an INCIDENT event of unknown type: {}", incident.message()),
    }
}

/// How the server compares database and table names.
async fn name_case(conn: &mut mysql_async::Conn) -> Result<NameCase> {
    let setting: Option<u8> = conn
        .query_first("SELECT @@lower_case_table_names")
        .await
        .context("read lower_case_table_names")?;
    Ok(NameCase::from_setting(setting.unwrap_or(0)))
}
