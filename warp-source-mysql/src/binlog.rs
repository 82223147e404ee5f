//! The binlog feed: one dump connection for every table a replica serves. Row events are
//! decoded by column name (table-map metadata, `binlog_row_metadata=FULL`) and tagged with
//! their table, grouped into source transactions; DDL becomes schema changes of the tables
//! it names; heartbeats while idle.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::RowsEventFlags;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Pool};
use warp_core::{Change, ChangeEvent, Commit, FeedItem, Operation, Row, TableChange, Value};

use crate::ddl_scope::{self, Effect, NameCase};
use crate::decode::{decode_from, Decoded, Origin};
use crate::discover::{self, MysqlTable};
use crate::error::{Context, MysqlError, Result};
use crate::foreign_keys::Cascades;
use crate::gtid_set::{GtidSet, GtidStart};
use crate::position::BinlogPosition;
use crate::table_map::{column_names, label_overrides};
use crate::types::Kind;
use crate::unhandled::{self, Refused, Undecoded};
use crate::xa::{self, XaLedger, XaStatement};

/// Changes sent per fragment inside a large source transaction.
const FRAGMENT_CHANGES: usize = 2_000;
/// Heartbeat period asked of the server: an idle table still advances.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// MariaDB's GTID event type.
const MARIADB_GTID_EVENT: u8 = 162;

/// MariaDB GTID state, one `domain-server-seq` per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(std::collections::BTreeMap<u32, String>);

impl GtidState {
    pub fn parse(text: &str) -> Self {
        Self(
            text.split(',')
                .filter_map(|g| {
                    let g = g.trim();
                    let domain = g.split('-').next()?.parse().ok()?;
                    Some((domain, g.to_owned()))
                })
                .collect(),
        )
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn render(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.values().cloned().collect::<Vec<_>>().join(","))
    }

    /// Records a GTID event: `data` starts with seq_no (u64 LE) and domain (u32 LE).
    fn observe(&mut self, data: &[u8], server_id: u32) {
        if let (Some(seq), Some(domain)) = (data.get(..8), data.get(8..12)) {
            let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(domain.try_into().unwrap_or_default());
            self.0.insert(domain, format!("{domain}-{server_id}-{seq}"));
        }
    }
}

/// Counts zero dates read as NULL, per table name.
pub type ZeroDates = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// The tables a feed serves; a table whose stream cannot go on is taken out.
type Served = Vec<Option<MysqlTable>>;

struct Reader {
    stream: BinlogStream,
    gtid: GtidState,
    /// The MySQL GTID set at the last event read, once known (`gtid_mode=ON`).
    gtid_set: Option<GtidSet>,
    /// The server runs `gtid_mode=ON`: a PREVIOUS_GTIDS event starts the set.
    gtid_mode: bool,
    pool: Pool,
    database: String,
    tables: Served,
    /// Served tables by name, in the server's name comparison (`names`).
    by_name: HashMap<String, usize>,
    names: NameCase,
    /// Shapes learnt from DDL, shared with the source (a later feed starts from them).
    learnt: Arc<Mutex<HashMap<String, MysqlTable>>>,
    file: String,
    pending: Vec<TableChange>,
    /// Items ready before the next read (a table failed by a DDL, then its commit).
    ready: VecDeque<FeedItem>,
    txn_ts: Option<DateTime<Utc>>,
    zero_dates: ZeroDates,
    /// Where the transaction being read began (the end of the one before it).
    boundary: BinlogPosition,
    /// The consumer's start, when the dump began earlier (at a prepared XA transaction):
    /// transactions up to here are read again for their XA state, not handed out.
    replay_until: Option<BinlogPosition>,
    xa: XaLedger,
    /// The compressed transaction being read (MySQL `binlog_transaction_compression`).
    payload: Option<Payload>,
    /// The foreign-key actions on the served tables.
    cascades: Cascades,
    /// The server logs the rows its foreign-key actions change (MySQL 9.6+ SQL-layer
    /// foreign keys): nothing to reproduce.
    cascades_logged: bool,
    /// `tables` past this index are parents read only for their children's cascades:
    /// nothing of their own is handed out.
    served_count: usize,
    /// The transaction's savepoints, with how many of its changes were read before each.
    savepoints: Vec<(String, usize)>,
    /// Changes of the transaction being read already handed out (fragments of a large
    /// transaction): a rollback cannot take them back.
    handed_out: usize,
    /// The tables those changes belong to.
    handed_tables: std::collections::BTreeSet<usize>,
}

/// A TRANSACTION_PAYLOAD_EVENT whose inner events are being read. They carry no position
/// (`log_pos` 0): the transaction ends where the payload event does.
#[derive(Debug, Clone, Copy)]
struct Payload {
    end: u32,
    inner: u32,
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
/// (changes tagged with the table's index), heartbeats while idle.
pub async fn feed(
    setup: FeedSetup,
    mut tables: Vec<MysqlTable>,
    parents: Vec<MysqlTable>,
    from: BinlogPosition,
) -> Result<BoxStream<'static, warp_core::Result<FeedItem>>> {
    // Parents the feed does not serve are read too, for their children's cascades only.
    let served_count = tables.len();
    tables.extend(parents);
    let mut conn = mysql_async::Conn::new(setup.opts)
        .await
        .context("connect for binlog")?;
    let period = HEARTBEAT.as_nanos().to_string();
    conn.query_drop(format!("SET @master_heartbeat_period = {period}"))
        .await
        .context("set heartbeat")?;
    let gtid = from
        .gtid
        .as_deref()
        .map(GtidState::parse)
        .unwrap_or_default();
    let by_gtid = !gtid.is_empty() && !file_position_matches(&mut conn, &from).await?;
    let mysql_gtid = GtidStart::plan(&mut conn, &from).await?;
    let cascades_logged = crate::foreign_keys::server_logs_actions(&mut conn).await?;
    let names = name_case(&mut conn).await?;
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
    let request = if let GtidStart::Resume(set) = &mysql_gtid {
        tracing::info!(gtid_set = %set, "resuming the binlog after a GTID set");
        BinlogStreamRequest::new(setup.server_id)
            .with_gtid()
            .with_gtid_set(set.sids())
            .with_filename(b"".as_slice())
            .with_pos(4u64)
    } else if by_gtid {
        // The file/offset does not belong to this server's history (failover): resume
        // after the recorded GTIDs instead.
        tracing::warn!(gtid = from.gtid.as_deref().unwrap_or(""), file = %from.file, "binlog file/offset not valid on this server; resuming by GTID");
        conn.exec_drop("SET @slave_connect_state = ?", (from.gtid.clone(),))
            .await
            .context("set GTID state")?;
        BinlogStreamRequest::new(setup.server_id)
            .with_filename(b"".as_slice())
            .with_pos(4u64)
    } else {
        BinlogStreamRequest::new(setup.server_id)
            .with_filename(dump_file.as_bytes())
            .with_pos(dump_pos)
    };
    let stream = conn
        .get_binlog_stream(request)
        .await
        .context("start binlog dump")?;
    let by_name = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (names.key(&t.schema.id.name), i))
        .collect();
    let served: Served = tables.into_iter().map(Some).collect();
    let reader = Reader {
        stream,
        gtid,
        pool: setup.pool,
        database: setup.database,
        cascades: Cascades::among(&served, served_count, cascades_logged),
        cascades_logged,
        tables: served,
        served_count,
        by_name,
        names,
        learnt: setup.learnt,
        file: dump_file.clone(),
        boundary: BinlogPosition::new(dump_file.clone(), dump_pos),
        xa: XaLedger::default(),
        replay_until: (!by_gtid && (dump_file, dump_pos) != (from.file.clone(), from.pos))
            .then(|| from.clone()),
        gtid_mode: mysql_gtid.follows(),
        gtid_set: match mysql_gtid {
            GtidStart::Resume(set) => Some(set),
            _ => None,
        },
        pending: Vec::new(),
        ready: VecDeque::new(),
        txn_ts: None,
        zero_dates: setup.zero_dates,
        payload: None,
        savepoints: Vec::new(),
        handed_out: 0,
        handed_tables: std::collections::BTreeSet::new(),
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

impl Reader {
    fn position(&self, log_pos: u32) -> BinlogPosition {
        let mut p = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        p.gtid = self.gtid.render();
        p.gtid_set = self
            .gtid_set
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(ToString::to_string);
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
        self.boundary = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        self.handed_out = 0;
        self.handed_tables.clear();
        if let Some(until) = &self.replay_until {
            if self.boundary <= *until {
                self.pending.clear();
                self.txn_ts = None;
                return Ok(None);
            }
            self.replay_until = None;
        }
        let commit = Commit {
            position: self.position(log_pos).encode()?,
            source_ts: ts.or(self.txn_ts),
        };
        self.txn_ts = None;
        Ok(Some(FeedItem::Fragment {
            changes: std::mem::take(&mut self.pending),
            commit: Some(commit),
        }))
    }

    /// An XA statement: `Some` when it completes something to hand to the engine.
    fn xa_statement(
        &mut self,
        xa: XaStatement,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Option<FeedItem>> {
        match xa {
            XaStatement::Start(xid) => {
                self.xa.start(xid);
                self.txn_ts = ts;
                Ok(None)
            }
            XaStatement::End => Ok(None),
            XaStatement::CommitOnePhase => {
                self.xa.commit_one_phase();
                self.commit(log_pos, ts)
            }
            XaStatement::Commit(xid) => match self.xa.commit(&xid) {
                Some(changes) => {
                    self.pending = changes;
                    self.commit(log_pos, ts)
                }
                None if self.replaying(log_pos) => self.commit(log_pos, ts),
                None => {
                    // Prepared before this reader's first position: its changes are not
                    // in the rows copied (uncommitted then) and not read here.
                    let error = || {
                        warp_core::Error::source_permanent(
                            format!("XA transaction {xid} was prepared before this table's start position and committed after it; its changes cannot be read"),
                            Some("resync the table (cartridge-warp resync) once no XA transaction is prepared at the source (XA RECOVER)".to_owned()),
                        )
                    };
                    for index in 0..self.tables.len() {
                        if self.tables[index].is_some() {
                            self.fail(index, error());
                        }
                    }
                    self.commit(log_pos, ts)
                }
            },
            XaStatement::Rollback(xid) => {
                self.xa.rollback(&xid);
                self.pending.clear();
                self.commit(log_pos, ts)
            }
        }
    }

    /// A rollback the server logged: a transaction that also changed non-transactional
    /// tables (their changes stay) is written whole and ended by `ROLLBACK`, a partial
    /// rollback by `ROLLBACK TO SAVEPOINT`. The transactional tables' changes after the
    /// point are dropped; the rest stays, as at the source.
    fn undo(
        &mut self,
        undo: Undo,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Option<FeedItem>> {
        let read = self.handed_out + self.pending.len();
        let from = match &undo {
            Undo::Savepoint(name) => {
                self.savepoints.push((name.clone(), read));
                return Ok(None);
            }
            Undo::Rollback => 0,
            Undo::RollbackTo(name) => {
                match self.savepoints.iter().rposition(|(n, _)| n == name) {
                    Some(at) => {
                        self.savepoints.truncate(at + 1);
                        self.savepoints[at].1
                    }
                    // Set before this reader's first event: the whole transaction so far.
                    None => 0,
                }
            }
        };
        if from < self.handed_out {
            // Part of what is undone was handed out already: those tables are copied
            // again rather than left with changes the source rolled back.
            let handed: Vec<usize> = self.handed_tables.iter().copied().collect();
            for index in handed {
                if self.tables[index].as_ref().is_some_and(|t| t.transactional) {
                    let table = self.table_name(index);
                    self.fail(
                        index,
                        warp_core::Error::Replaced {
                            table,
                            how: "rolled back in part after a large transaction's changes were handed out".to_owned(),
                        },
                    );
                }
            }
        }
        let from = from.saturating_sub(self.handed_out).min(self.pending.len());
        let tables = &self.tables;
        let kept: Vec<TableChange> = self
            .pending
            .drain(from..)
            .filter(|c| {
                tables
                    .get(c.table)
                    .and_then(Option::as_ref)
                    .is_some_and(|t| !t.transactional)
            })
            .collect();
        self.pending.extend(kept);
        if undo == Undo::Rollback {
            self.savepoints.clear();
            return self.commit(log_pos, ts);
        }
        Ok(None)
    }

    /// Takes `index` out of the feed with `error`, reported before the next read.
    fn fail(&mut self, index: usize, error: warp_core::Error) {
        if let Some(slot) = self.tables.get_mut(index) {
            *slot = None;
        }
        if index >= self.served_count {
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
            let event = match self.stream.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    let err = MysqlError::from_driver("binlog", e);
                    if err.is_position_lost() {
                        return Err(warp_core::Error::PositionLost {
                            table: format!("{} binlog", self.database),
                            position: self.file.clone(),
                            detail: err.to_string(),
                        });
                    }
                    return Err(err.into());
                }
                None => {
                    return Err(warp_core::Error::source_transient(
                        "binlog stream closed by the server",
                    ))
                }
            };
            let header = event.header();
            let log_pos = self.payload_position(header.log_pos())?;
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                self.gtid.observe(event.data(), header.server_id());
                if let Some(xid) = xa::mariadb_xa_start(event.data()) {
                    self.xa.start(xid);
                    self.txn_ts = DateTime::from_timestamp(i64::from(header.timestamp()), 0);
                }
                continue;
            }
            let ts = DateTime::from_timestamp(i64::from(header.timestamp()), 0);
            let data = match event.read_data() {
                Ok(Some(d)) => d,
                // Types the decoder does not know (MariaDB's own): skipped only when they
                // can carry no row.
                Ok(None) => match unhandled::classify(header.event_type_raw()) {
                    Undecoded::Ignorable => continue,
                    Undecoded::Compressed => return Err(self.refuse(Refused::Compressed)),
                    Undecoded::Unknown(code) => return Err(self.refuse(Refused::Unknown(code))),
                },
                Err(e) => {
                    return Err(warp_core::Error::source_transient(format!(
                        "undecodable binlog event: {e}"
                    )))
                }
            };
            match data {
                EventData::RotateEvent(_) => {
                    self.file = crate::rotate::target(&event);
                }
                EventData::GtidEvent(g) => {
                    if let Some(set) = &mut self.gtid_set {
                        set.add(g.sid(), g.tag().map(|t| t.as_str()), g.gno());
                    }
                }
                // A transaction without a GTID (a file from before `gtid_mode=ON`): no set
                // describes the positions from here until the next file's.
                EventData::AnonymousGtidEvent(_) => self.gtid_set = None,
                EventData::PreviousGtidsEvent(previous) if self.gtid_mode => {
                    let previous = GtidSet::previous(&previous);
                    match &mut self.gtid_set {
                        Some(set) => set.union(&previous),
                        None => self.gtid_set = Some(previous),
                    }
                }
                EventData::HeartbeatEvent if self.pending.is_empty() && log_pos > 0 => {
                    match self.commit(log_pos, Some(Utc::now()))? {
                        Some(item) => return Ok(item),
                        None => continue,
                    }
                }
                EventData::XaPrepareLogEvent(_) => {
                    let changes = std::mem::take(&mut self.pending);
                    if !self.xa.prepare(changes, self.boundary.clone()) {
                        return Err(warp_core::Error::source_permanent(
                            format!(
                                "{}: an XA PREPARE without its XA START in the binlog",
                                self.file
                            ),
                            None,
                        ));
                    }
                    self.boundary = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
                    self.txn_ts = None;
                }
                EventData::QueryEvent(q) => {
                    let sql = q.query().into_owned();
                    if let Some(xa) = XaStatement::parse(&sql) {
                        if let Some(item) = self.xa_statement(xa, log_pos, ts)? {
                            return Ok(item);
                        }
                        continue;
                    }
                    let trimmed = sql.trim().to_ascii_uppercase();
                    if trimmed == "BEGIN" {
                        self.txn_ts = ts;
                        self.savepoints.clear();
                        continue;
                    }
                    if let Some(undo) = Undo::parse(&trimmed) {
                        if let Some(item) = self.undo(undo, log_pos, ts)? {
                            return Ok(item);
                        }
                        continue;
                    }
                    // DDL read again before the consumer's position was applied then.
                    let ends = trimmed == "COMMIT"
                        || self.replaying(log_pos)
                        || self.ddl(&q.schema(), &sql).await?;
                    // (A table the statement stopped hears it before this commit: `next`.)
                    if ends {
                        match self.commit(log_pos, ts)? {
                            Some(item) => return Ok(item),
                            None => continue,
                        }
                    }
                }
                EventData::XidEvent(_) => {
                    if let Some(item) = self.commit(log_pos, ts)? {
                        return Ok(item);
                    }
                }
                // The server could not log what happened (e.g. LOST_EVENTS): a replica
                // of it stops here too.
                EventData::IncidentEvent(incident) => {
                    return Err(self.broken(
                        log_pos,
                        match incident.incident_type() {
                            Ok(kind) => {
                                format!("an INCIDENT event ({kind:?}: {})", incident.message())
                            }
                            Err(_) => {
                                format!("an INCIDENT event of unknown type: {}", incident.message())
                            }
                        },
                    ));
                }
                // The driver hands out the decompressed inner events next.
                EventData::TransactionPayloadEvent(_) => {
                    self.payload = Some(Payload {
                        end: log_pos,
                        inner: 0,
                    });
                }
                EventData::RowsEvent(rows) => {
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
                    if !self.names.same(&tme.database_name(), &self.database) {
                        continue;
                    }
                    let Some(&index) = self.by_name.get(&self.names.key(&tme.table_name())) else {
                        continue;
                    };
                    if self.tables[index].is_none() {
                        continue;
                    }
                    if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
                        let table = self.table_name(index);
                        self.fail(index, unhandled::refusal(&table, Refused::PartialUpdate));
                        continue;
                    }
                    let tme = tme.clone();
                    self.rows(index, &rows, &tme)?;
                    // An XA transaction is held whole until its outcome is known.
                    if self.pending.len() >= FRAGMENT_CHANGES
                        && !self.xa.reading()
                        && self.replay_until.is_none()
                    {
                        self.handed_out += self.pending.len();
                        self.handed_tables
                            .extend(self.pending.iter().map(|c| c.table));
                        return Ok(FeedItem::Fragment {
                            changes: std::mem::take(&mut self.pending),
                            commit: None,
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// The position of an event: its own, or for an event inside a compressed
    /// transaction the payload's end. Fails when a payload's inner events never came
    /// (the driver hands out none when it cannot decompress them).
    fn payload_position(&mut self, log_pos: u32) -> warp_core::Result<u32> {
        let Some(payload) = self.payload else {
            return Ok(log_pos);
        };
        if log_pos == 0 {
            self.payload = Some(Payload {
                inner: payload.inner + 1,
                ..payload
            });
            return Ok(payload.end);
        }
        self.payload = None;
        if payload.inner == 0 {
            return Err(warp_core::Error::source_permanent(
                format!(
                    "{}: the compressed transaction ending at {} could not be decompressed",
                    self.file, payload.end
                ),
                Some(
                    "set binlog_transaction_compression=OFF on the server and resync the tables"
                        .into(),
                ),
            ));
        }
        Ok(log_pos)
    }

    fn table_name(&self, index: usize) -> String {
        self.tables[index]
            .as_ref()
            .map_or_else(String::new, |t| t.schema.id.to_string())
    }

    /// Decodes one rows event of the table at `index` into change events.
    fn rows(
        &mut self,
        index: usize,
        rows: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
    ) -> warp_core::Result<()> {
        let Some(table) = self.tables[index].as_ref() else {
            return Ok(());
        };
        // A parent read for its children alone: an insert changes no child.
        let parent_only = index >= self.served_count;
        if parent_only
            && matches!(
                rows,
                RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
            )
        {
            return Ok(());
        }
        let names = column_names(tme);
        if names.is_empty() {
            // Mapping values by position would shift them after any column change.
            let error = warp_core::Error::Table {
                table: table.schema.id.to_string(),
                message: "the binlog's table map carries no column names (binlog_row_metadata=MINIMAL): its rows cannot be mapped onto columns exactly".into(),
                hint: Some("set binlog_row_metadata=FULL on the server, then resync the table".into()),
            };
            self.fail(index, error);
            return Ok(());
        }
        if let Some(missing) = reshaped_unseen(table, &names) {
            // Renamed (or dropped and added) after this event while the reader did not
            // read the DDL (stopped, or starting): mapping by name would lose the values.
            let error = warp_core::Error::Replaced {
                table: table.schema.id.to_string(),
                how: format!(
                    "reshaped after the replicator's position (the log's columns {} are not in the catalog; renamed while it was stopped?)",
                    missing.join(", ")
                ),
            };
            self.fail(index, error);
            return Ok(());
        }
        let labels = label_overrides(table, tme, &names);
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                Operation::Insert
            }
            RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Operation::Update,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                Operation::Delete
            }
        };
        let key_cols = table
            .schema
            .key_indexes()
            .map_err(|e| error(table, e.to_string()))?;
        let mut zeros = 0;
        for pair in rows.rows(tme) {
            let (before, after) = pair.map_err(|e| {
                warp_core::Error::source_transient(format!("undecodable rows event: {e}"))
            })?;
            // A session may log MINIMAL or NOBLOB images whatever the server's setting:
            // a partial image would put values into the wrong columns or land defaults
            // over real values, so the table stops instead.
            let full = |r: &Option<mysql_async::binlog::row::BinlogRow>| {
                r.as_ref()
                    .is_none_or(|r| r.len() as u64 == tme.columns_count())
            };
            if !full(&before) || !full(&after) {
                return Err(partial_image(table));
            }
            let before = before
                .map(|r| row(table, &labels, r, &names, &mut zeros))
                .transpose()?;
            let after = after
                .map(|r| row(table, &labels, r, &names, &mut zeros))
                .transpose()?;
            let key = match (&before, &after) {
                (Some(b), _) => b.key(&key_cols),
                (None, Some(a)) => a.key(&key_cols),
                (None, None) => continue,
            };
            let event = ChangeEvent {
                op,
                key,
                before,
                after,
                source_ts: self.txn_ts,
            };
            // What the server did to child rows for it follows, in log order; a session
            // with foreign_key_checks=0 runs no foreign-key action (the event says so).
            let cascaded = if rows.flags().contains(RowsEventFlags::NO_FOREIGN_KEY_CHECKS) {
                Vec::new()
            } else {
                self.cascades.of(index, &event)
            };
            if !parent_only {
                self.pending.push(TableChange {
                    table: index,
                    change: Change::Row(event),
                });
            }
            self.pending.extend(cascaded);
        }
        if zeros > 0 {
            (self.zero_dates)(&table.schema.id.name, zeros);
        }
        Ok(())
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

    /// A DDL statement: the changes it makes to the served tables it names, from the
    /// catalog; true when it touched one (the statement is then a commit of its own).
    async fn ddl(&mut self, default_db: &str, sql: &str) -> warp_core::Result<bool> {
        let served = |name: &str| {
            self.tables.iter().position(|t| {
                t.as_ref()
                    .is_some_and(|t| self.names.same(&t.schema.id.name, name))
            })
        };
        let effects: Vec<(usize, Effect)> =
            if ddl_scope::drops_database(sql, &self.database, self.names) {
                (0..self.tables.len())
                    .filter(|&i| self.tables[i].is_some())
                    .map(|i| (i, Effect::Dropped))
                    .collect()
            } else {
                match ddl_scope::effects(sql, default_db, &self.database, self.names) {
                    Some(effects) => effects
                        .iter()
                        .filter_map(|(name, effect)| Some((served(name)?, *effect)))
                        .collect(),
                    None => self.mentioned(default_db, sql),
                }
            };
        for &(index, effect) in &effects {
            self.apply_ddl(index, effect, sql).await?;
        }
        Ok(!effects.is_empty())
    }

    /// A statement the parser does not read: every served table it mentions is looked up
    /// in the catalog again (a guess never drops or truncates a table).
    fn mentioned(&self, default_db: &str, sql: &str) -> Vec<(usize, Effect)> {
        let lower = sql.to_ascii_lowercase();
        let db = self.database.to_ascii_lowercase();
        let right_db = self.names.same(default_db, &self.database)
            || lower.contains(&format!("{db}."))
            || lower.contains(&format!("`{db}`."));
        let verb = lower.split_whitespace().next().unwrap_or("");
        if !right_db || !matches!(verb, "truncate" | "drop" | "alter" | "rename" | "create") {
            return Vec::new();
        }
        tracing::debug!(statement = %sql, "DDL not parsed; looking up the tables it names");
        self.tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_ref()?)))
            .filter(|(_, t)| mentions(&lower, &t.schema.id.name))
            .map(|(i, _)| (i, Effect::Reshaped))
            .collect()
    }

    /// Applies one statement's effect on the served table at `index`.
    async fn apply_ddl(
        &mut self,
        index: usize,
        effect: Effect,
        sql: &str,
    ) -> warp_core::Result<()> {
        let Some(table) = self.tables[index].clone() else {
            return Ok(());
        };
        let id = table.schema.id.to_string();
        match effect {
            // (InnoDB refuses to truncate a table other tables reference.)
            Effect::Truncated if index >= self.served_count => {}
            Effect::Truncated => self.pending.push(TableChange {
                table: index,
                change: Change::Truncate,
            }),
            Effect::RowsUnlogged => {
                let statement: String = sql.chars().take(200).collect();
                self.fail(
                    index,
                    warp_core::Error::source_permanent(
                        format!("{id}: `{statement}` added or removed rows without row events in the binlog; the copy can no longer follow it"),
                        Some("resync the table (cartridge-warp resync)".to_owned()),
                    ),
                )
            }
            Effect::Dropped if index >= self.served_count => self.fail(
                index,
                warp_core::Error::source_permanent(
                    format!("{id} was dropped at the source"),
                    Some("remove it from the whitelist, or re-create it and resync".to_owned()),
                ),
            ),
            // Its rows are gone: the landing table is emptied and the table copied again
            // once it exists (a reload's `CREATE TABLE`); until then the copy retries
            // (error 1146 is transient).
            Effect::Dropped => self.fail(
                index,
                warp_core::Error::Replaced {
                    table: id,
                    how: "dropped".to_owned(),
                },
            ),
            Effect::Reshaped | Effect::Replaced => {
                let mut conn = self.pool.get_conn().await.context("connect")?;
                let fresh =
                    discover::tables(&mut conn, &self.database, Some(&table.schema.id.name))
                        .await?;
                let Some(fresh) = fresh.into_iter().next() else {
                    self.fail(
                        index,
                        warp_core::Error::source_permanent(
                            format!("{id} no longer exists at the source (renamed or dropped)"),
                            Some(
                                "re-create it or add the new name to the configuration, then resync"
                                    .to_owned(),
                            ),
                        ),
                    );
                    return Ok(());
                };
                self.learnt
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(fresh.schema.id.name.clone(), fresh.clone());
                let scope = if effect == Effect::Replaced {
                    crate::ddl::Scope::Whole
                } else {
                    crate::ddl::Scope::Named
                };
                let foreign_keys = fresh.foreign_keys.clone();
                let fresh_key = fresh.schema.primary_key.clone();
                let (mut merged, changes) = crate::ddl::diff(&table, fresh, sql, scope);
                merged.foreign_keys = foreign_keys;
                // Checked only for a statement about keys (or a swap): when the reader
                // is behind, the catalog may hold a later statement's key.
                let about_keys = scope == crate::ddl::Scope::Whole
                    || sql.to_ascii_lowercase().contains("primary");
                if about_keys && !same_columns(&merged.schema.primary_key, &fresh_key) {
                    let statement: String = sql.chars().take(200).collect();
                    self.fail(
                        index,
                        warp_core::Error::source_permanent(
                            format!(
                                "{id}: `{statement}` changed the primary key from ({}) to ({}): rows can no longer be keyed as at the source",
                                merged.schema.primary_key.join(", "),
                                fresh_key.join(", ")
                            ),
                            Some("the landing table keeps its old key: drop it (or rename it away) at the destination, then resync the table (cartridge-warp resync)".to_owned()),
                        ),
                    );
                    return Ok(());
                }
                self.tables[index] = Some(merged);
                if index < self.served_count {
                    self.pending
                        .extend(changes.into_iter().map(|c| TableChange {
                            table: index,
                            change: Change::Schema(c),
                        }));
                }
            }
        }
        // Foreign keys come and go with DDL, and a dropped table acts on nothing.
        self.cascades = Cascades::among(&self.tables, self.served_count, self.cascades_logged);
        Ok(())
    }
}

/// Whether a lowercased statement names `table` (quoted, or as a whole word).
fn mentions(lower: &str, table: &str) -> bool {
    let name = table.to_ascii_lowercase();
    lower.contains(&format!("`{name}`"))
        || lower
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|w| w == name)
}

/// A row image, mapped by column name onto the table's current shape; a column the image
/// lacks (added later) reads its declared default, as at the source.
fn row(
    table: &MysqlTable,
    labels: &[(usize, Kind)],
    row: mysql_async::binlog::row::BinlogRow,
    names: &[String],
    zeros: &mut u64,
) -> warp_core::Result<Row> {
    let values = row.unwrap();
    let mut out: Vec<Value> = table
        .schema
        .columns
        .iter()
        .map(|c| c.default.clone().unwrap_or(Value::Null))
        .collect();
    for (i, v) in values.into_iter().enumerate() {
        let target = names.get(i).and_then(|n| table.schema.column_index(n));
        let Some(t) = target.filter(|&t| t < out.len()) else {
            continue;
        };
        // A value that cannot be decoded dead-letters its row (with the reason); it never
        // stops the table.
        let unreadable = |e: &dyn std::fmt::Display| {
            Value::Unreadable(format!("column {}: {e}", table.columns[t].name))
        };
        let plain: mysql_async::Value = match v {
            BinlogValue::Jsonb(json) => match crate::binary_json::to_text(json) {
                Ok(text) => mysql_async::Value::Bytes(text.into_bytes()),
                Err(e) => {
                    out[t] = unreadable(&format!("binary JSON: {e}"));
                    continue;
                }
            },
            other => match other.try_into() {
                Ok(plain) => plain,
                Err(e) => {
                    out[t] = unreadable(&e);
                    continue;
                }
            },
        };
        let kind = labels
            .iter()
            .find(|(i, _)| *i == t)
            .map_or(&table.columns[t].kind, |(_, k)| k);
        out[t] = match decode_from(plain, kind, Origin::Binlog) {
            Ok(Decoded::Value(v)) => v,
            Ok(Decoded::ZeroDate) => {
                *zeros += 1;
                Value::Null
            }
            // Dead-lettered by the destination, with the reason.
            Err(e) => Value::Unreadable(format!("column {}: {e}", table.columns[t].name)),
        };
    }
    Ok(Row::new(out))
}

/// The event's columns the table's shape lacks, when the shape also has columns the
/// event lacks that are not dropped ones: the table was renamed or reshaped between the
/// event and the catalog read. A column only dropped since (the event has it, the shape
/// has nothing new) is not a reshape: its values are kept at the destination as they were.
/// Names compare exactly, as `row` maps values: a rename that changes only the case is a
/// rename too.
fn reshaped_unseen(table: &MysqlTable, names: &[String]) -> Option<Vec<String>> {
    // The usual event lists the shape's columns in its order: one pass, no search.
    let cols = &table.schema.columns;
    if names.len() == cols.len() && names.iter().zip(cols).all(|(n, c)| *n == c.name) {
        return None;
    }
    let missing: Vec<String> = names
        .iter()
        .filter(|n| table.schema.column_index(n).is_none())
        .cloned()
        .collect();
    let added = table
        .columns
        .iter()
        .filter(|c| c.kind != Kind::Dropped)
        .any(|c| !names.contains(&c.name));
    (!missing.is_empty() && added).then_some(missing)
}

/// Whether two column lists name the same columns in the same order (MySQL compares
/// column names without case).
fn same_columns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A row image without every column: logged under `binlog_row_image` MINIMAL or NOBLOB.
fn partial_image(table: &MysqlTable) -> warp_core::Error {
    warp_core::Error::Table {
        table: table.schema.id.to_string(),
        message: "a binlog row image lacks columns (binlog_row_image MINIMAL or NOBLOB, set for the server or for the writing session): its rows cannot be applied whole".into(),
        hint: Some("set binlog_row_image=FULL globally and in every writer's session (SET SESSION binlog_row_image overrides it), then resync the table".into()),
    }
}

fn error(table: &MysqlTable, message: String) -> warp_core::Error {
    warp_core::Error::Table {
        table: table.schema.id.to_string(),
        message,
        hint: None,
    }
}

/// A statement that undoes part of the transaction being read (upper-cased text).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Savepoint(String),
    RollbackTo(String),
    Rollback,
}

impl Undo {
    fn parse(upper: &str) -> Option<Self> {
        let words: Vec<&str> = upper.split_whitespace().collect();
        let name = |w: &str| w.trim_matches('`').to_owned();
        match words.as_slice() {
            ["ROLLBACK"] | ["ROLLBACK", "WORK"] => Some(Self::Rollback),
            ["SAVEPOINT", sp] => Some(Self::Savepoint(name(sp))),
            ["ROLLBACK", "TO", "SAVEPOINT", sp] | ["ROLLBACK", "TO", sp] => {
                Some(Self::RollbackTo(name(sp)))
            }
            ["ROLLBACK", "WORK", "TO", "SAVEPOINT", sp] | ["ROLLBACK", "WORK", "TO", sp] => {
                Some(Self::RollbackTo(name(sp)))
            }
            _ => None,
        }
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

/// Whether `from`'s file/offset is where this server's history has `from`'s GTIDs (on
/// MariaDB; MySQL and positions without a GTID are taken as they are).
async fn file_position_matches(
    conn: &mut mysql_async::Conn,
    from: &BinlogPosition,
) -> Result<bool> {
    let Some(want) = &from.gtid else {
        return Ok(true);
    };
    let here: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&from.file, from.pos))
        .await
        .unwrap_or(None);
    Ok(match here.flatten() {
        Some(here) => GtidState::parse(&here) == GtidState::parse(want),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::Undo;

    #[test]
    fn rollbacks_and_savepoints_are_read_from_their_statements() {
        assert_eq!(Undo::parse("ROLLBACK"), Some(Undo::Rollback));
        assert_eq!(Undo::parse("ROLLBACK WORK"), Some(Undo::Rollback));
        assert_eq!(
            Undo::parse("SAVEPOINT `SP1`"),
            Some(Undo::Savepoint("SP1".into()))
        );
        assert_eq!(
            Undo::parse("ROLLBACK TO SAVEPOINT SP1"),
            Some(Undo::RollbackTo("SP1".into()))
        );
        assert_eq!(
            Undo::parse("ROLLBACK WORK TO `SP1`"),
            Some(Undo::RollbackTo("SP1".into()))
        );
        assert_eq!(Undo::parse("COMMIT"), None);
        assert_eq!(Undo::parse("ROLLBACK_TABLE_X"), None);
    }
}
