//! Binlog streaming for one table: row events decoded by column name (table-map
//! metadata, `binlog_row_metadata=FULL`), grouped into source transactions, DDL turned
//! into schema changes, heartbeats while idle.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use mysql_async::binlog::events::{EventData, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Pool};
use warp_core::{Change, ChangeEvent, Commit, Operation, Row, StreamFragment, Value};

use crate::decode::{decode_from, Decoded, Origin};
use crate::discover::{self, MysqlTable};
use crate::error::{Context, MysqlError, Result};
use crate::position::BinlogPosition;
use crate::unhandled::{self, Refused, Undecoded};

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

struct Reader {
    stream: BinlogStream,
    gtid: GtidState,
    pool: Pool,
    database: String,
    table: MysqlTable,
    file: String,
    pending: Vec<Change>,
    txn_ts: Option<DateTime<Utc>>,
    zero_dates: Arc<dyn Fn(u64) + Send + Sync>,
}

/// Opens a binlog dump from `from` and yields this table's committed transactions.
pub async fn stream(
    pool: Pool,
    opts: mysql_async::Opts,
    server_id: u32,
    database: String,
    table: MysqlTable,
    from: BinlogPosition,
    zero_dates: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<BoxStream<'static, warp_core::Result<StreamFragment>>> {
    let mut conn = mysql_async::Conn::new(opts)
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
    // Ask MariaDB for real GTID events (MySQL ignores this variable).
    conn.query_drop("SET @mariadb_slave_capability = 4")
        .await
        .context("set capability")?;
    let request = if by_gtid {
        // The file/offset does not belong to this server's history (failover): resume
        // after the recorded GTIDs instead.
        tracing::warn!(gtid = from.gtid.as_deref().unwrap_or(""), file = %from.file, "binlog file/offset not valid on this server; resuming by GTID");
        conn.exec_drop("SET @slave_connect_state = ?", (from.gtid.clone(),))
            .await
            .context("set GTID state")?;
        BinlogStreamRequest::new(server_id)
            .with_filename(b"".as_slice())
            .with_pos(4u64)
    } else {
        BinlogStreamRequest::new(server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos)
    };
    let stream = conn
        .get_binlog_stream(request)
        .await
        .context("start binlog dump")?;
    let reader = Reader {
        stream,
        gtid,
        pool,
        database,
        table,
        file: from.file.clone(),
        pending: Vec::new(),
        txn_ts: None,
        zero_dates,
    };
    Ok(stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next().await {
            Ok(fragment) => Some((Ok(fragment), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed())
}

impl Reader {
    fn position(&self, log_pos: u32) -> BinlogPosition {
        let mut p = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        p.gtid = self.gtid.render();
        p
    }

    fn commit(
        &mut self,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<StreamFragment> {
        let commit = Commit {
            position: self.position(log_pos).encode()?,
            source_ts: ts.or(self.txn_ts),
        };
        self.txn_ts = None;
        Ok(StreamFragment::transaction(
            std::mem::take(&mut self.pending),
            commit,
        ))
    }

    /// Reads events until there is something to hand to the engine.
    async fn next(&mut self) -> warp_core::Result<StreamFragment> {
        loop {
            let event = match self.stream.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    let err = MysqlError::from_driver("binlog", e);
                    if err.is_position_lost() {
                        return Err(warp_core::Error::PositionLost {
                            table: self.table.schema.id.to_string(),
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
            let log_pos = header.log_pos();
            if header.event_type_raw() == MARIADB_GTID_EVENT {
                self.gtid.observe(event.data(), header.server_id());
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
                EventData::RotateEvent(r) => {
                    self.file = clean_file_name(&r.name());
                }
                EventData::HeartbeatEvent if self.pending.is_empty() && log_pos > 0 => {
                    return self.commit(log_pos, Some(Utc::now()));
                }
                EventData::QueryEvent(q) => {
                    let sql = q.query().into_owned();
                    let trimmed = sql.trim().to_ascii_uppercase();
                    if trimmed == "BEGIN" {
                        self.txn_ts = ts;
                        continue;
                    }
                    if trimmed == "COMMIT" {
                        return self.commit(log_pos, ts);
                    }
                    if let Some(changes) = self.ddl(&q.schema(), &sql).await? {
                        self.pending.extend(changes);
                        return self.commit(log_pos, ts);
                    }
                }
                EventData::XidEvent(_) => return self.commit(log_pos, ts),
                // Its inner events would otherwise pass unread.
                EventData::TransactionPayloadEvent(_) => {
                    return Err(self.refuse(Refused::TransactionPayload))
                }
                EventData::RowsEvent(rows) => {
                    let Some(tme) = self.stream.get_tme(rows.table_id()) else {
                        continue;
                    };
                    if tme.database_name() != self.database.as_str()
                        || tme.table_name() != self.table.schema.id.name.as_str()
                    {
                        continue;
                    }
                    if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
                        return Err(self.refuse(Refused::PartialUpdate));
                    }
                    let tme = tme.clone();
                    self.rows(&rows, &tme)?;
                    if self.pending.len() >= FRAGMENT_CHANGES {
                        return Ok(StreamFragment {
                            changes: std::mem::take(&mut self.pending),
                            commit: None,
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Decodes one rows event into change events.
    fn rows(&mut self, rows: &RowsEventData<'_>, tme: &TableMapEvent<'_>) -> warp_core::Result<()> {
        let names = column_names(tme);
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
        let key_cols = self.table.schema.key_indexes().map_err(|m| self.error(m))?;
        for pair in rows.rows(tme) {
            let (before, after) = pair.map_err(|e| {
                warp_core::Error::source_transient(format!("undecodable rows event: {e}"))
            })?;
            let before = before.map(|r| self.row(r, &names)).transpose()?;
            let after = after.map(|r| self.row(r, &names)).transpose()?;
            let key = match (&before, &after) {
                (Some(b), _) => b.key(&key_cols),
                (None, Some(a)) => a.key(&key_cols),
                (None, None) => continue,
            };
            self.pending.push(Change::Row(ChangeEvent {
                op,
                key,
                before,
                after,
                source_ts: self.txn_ts,
            }));
        }
        Ok(())
    }

    /// A row image, mapped by column name onto the table's current shape; a column the
    /// image lacks (added later) reads its declared default, as at the source.
    fn row(
        &self,
        row: mysql_async::binlog::row::BinlogRow,
        names: &[String],
    ) -> warp_core::Result<Row> {
        let values = row.unwrap();
        let mut out: Vec<Value> = self
            .table
            .schema
            .columns
            .iter()
            .map(|c| c.default.clone().unwrap_or(Value::Null))
            .collect();
        let mut zeros = 0;
        for (i, v) in values.into_iter().enumerate() {
            let target = match names.get(i) {
                Some(n) => self.table.schema.column_index(n),
                None if names.is_empty() => Some(i),
                None => None,
            };
            let Some(t) = target.filter(|&t| t < out.len()) else {
                continue;
            };
            let plain: mysql_async::Value = v
                .try_into()
                .map_err(|e| self.error(format!("column {}: {e}", self.table.columns[t].name)))?;
            out[t] = match decode_from(plain, &self.table.columns[t].kind, Origin::Binlog) {
                Ok(Decoded::Value(v)) => v,
                Ok(Decoded::ZeroDate) => {
                    zeros += 1;
                    Value::Null
                }
                // Dead-lettered by the destination, with the reason.
                Err(e) => Value::Unreadable(format!("column {}: {e}", self.table.columns[t].name)),
            };
        }
        if zeros > 0 {
            (self.zero_dates)(zeros);
        }
        Ok(Row::new(out))
    }

    fn refuse(&self, what: Refused) -> warp_core::Error {
        unhandled::refusal(&self.table.schema.id.to_string(), what)
    }

    fn error(&self, message: String) -> warp_core::Error {
        warp_core::Error::Table {
            table: self.table.schema.id.to_string(),
            message,
            hint: None,
        }
    }

    /// A DDL statement touching our table: the changes it makes, from the catalog.
    async fn ddl(&mut self, default_db: &str, sql: &str) -> warp_core::Result<Option<Vec<Change>>> {
        let lower = sql.to_ascii_lowercase();
        let name = self.table.schema.id.name.to_ascii_lowercase();
        let db = self.database.to_ascii_lowercase();
        let ours = lower.contains(&format!("`{name}`"))
            || lower
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|w| w == name);
        let right_db = default_db.eq_ignore_ascii_case(&self.database)
            || lower.contains(&format!("{db}."))
            || lower.contains(&format!("`{db}`."));
        if !ours || !right_db {
            return Ok(None);
        }
        let verb = lower.split_whitespace().next().unwrap_or("");
        match verb {
            "truncate" => Ok(Some(vec![Change::Truncate])),
            "drop" if lower.contains("table") => Err(warp_core::Error::source_permanent(
                format!("{} was dropped at the source", self.table.schema.id),
                Some("remove it from the whitelist, or re-create it and resync".to_owned()),
            )),
            "alter" | "rename" | "create" => {
                let mut conn = self.pool.get_conn().await.context("connect")?;
                let fresh =
                    discover::tables(&mut conn, &self.database, Some(&self.table.schema.id.name))
                        .await?;
                let Some(fresh) = fresh.into_iter().next() else {
                    return Err(warp_core::Error::source_permanent(
                        format!(
                            "{} no longer exists at the source (renamed or dropped)",
                            self.table.schema.id
                        ),
                        Some(
                            "re-create it or add the new name to the configuration, then resync"
                                .to_owned(),
                        ),
                    ));
                };
                let (merged, changes) = crate::ddl::diff(&self.table, fresh, sql);
                self.table = merged;
                Ok(Some(changes.into_iter().map(Change::Schema).collect()))
            }
            _ => Ok(None),
        }
    }
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

/// Column names from the table map's optional metadata.
fn column_names(tme: &TableMapEvent<'_>) -> Vec<String> {
    for field in tme.iter_optional_meta().flatten() {
        if let OptionalMetadataField::ColumnName(names) = field {
            return names
                .iter_names()
                .filter_map(|n| n.ok())
                .map(|n| n.name().into_owned())
                .collect();
        }
    }
    Vec::new()
}

/// The first rotate event carries 4 checksum bytes after the file name: keep the base
/// name and its 6-digit sequence number.
fn clean_file_name(raw: &str) -> String {
    match raw.rsplit_once('.') {
        Some((base, rest)) => {
            let seq: String = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .take(6)
                .collect();
            format!("{base}.{seq}")
        }
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::clean_file_name;

    #[test]
    fn strips_checksum_bytes() {
        assert_eq!(clean_file_name("mysql-bin.000001"), "mysql-bin.000001");
        assert_eq!(
            clean_file_name("mysql-bin.000001\u{7}\u{1}\u{2}"),
            "mysql-bin.000001"
        );
        assert_eq!(
            clean_file_name("mysql-bin.0000129\u{1}\u{2}"),
            "mysql-bin.000012",
            "digits in the checksum"
        );
    }
}
