//! Consistent snapshots: each chunk is read inside `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` (repeatable read, whatever the server's default), whose exact binlog
//! position is the chunk's position. MariaDB reports that position itself
//! (`binlog_snapshot_*`), so nothing is locked. MySQL does not: the chunk's own table is
//! read-locked on a second connection for the instant the snapshot opens and the
//! position is read, which holds back that table's writers only (never a global lock:
//! RDS and Aurora refuse `FLUSH TABLES WITH READ LOCK`, and it stalls every writer).
//!
//! Why not lock-free log watermarks (a position before and after the snapshot, with log
//! events between them winning): MySQL writes a transaction to the binlog before InnoDB
//! commits it, so one at or before the low watermark may still be invisible to the
//! snapshot, and its changes would be in neither the rows nor the replay. The table lock
//! waits for such a transaction to finish.

use futures::stream::{self, BoxStream, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use warp_core::{Key, KeyRange, Row, Value};

use crate::decode::{decode, decode_from, to_param, Decoded, Origin};
use crate::discover::MysqlTable;
use crate::error::{Context, MysqlError, Result};
use crate::position::BinlogPosition;
use crate::types::{Kind, MysqlColumn};

/// `` `name` `` with backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Opens a UTC session and a consistent snapshot on it (no binlog needed).
pub async fn open_snapshot(conn: &mut Conn) -> Result<()> {
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .context("set time zone")?;
    start_transaction(conn).await
}

/// A repeatable-read snapshot transaction: under another isolation level (a server
/// whose default is READ COMMITTED) `WITH CONSISTENT SNAPSHOT` is ignored and each page
/// of a chunk would see other data.
async fn start_transaction(conn: &mut Conn) -> Result<()> {
    conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .context("isolation level")?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .context("start snapshot")
}

/// Longest wait for the table lock that pins a MySQL snapshot's position (a writer in a
/// long transaction holds it off); the chunk is then retried.
const TABLE_LOCK_WAIT_SECS: u32 = 10;

/// The table a snapshot reads, and how to open the second connection its lock needs
/// (outside the pool: a snapshot holding one pooled connection and waiting for another
/// could exhaust the pool when many tables start at once).
pub struct SnapshotOf<'a> {
    pub opts: &'a mysql_async::Opts,
    pub database: &'a str,
    pub table: &'a str,
}

/// Test hook: MariaDB takes the MySQL path (the table lock), so the suites run it
/// against the one server they have. Set by `WARP_MYSQL_SNAPSHOT_LOCK=table` (the
/// binary) or [`crate::force_table_lock_snapshots`] (tests in process).
static FORCED_TABLE_LOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn force_table_lock(on: bool) {
    FORCED_TABLE_LOCK.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn forced_table_lock() -> bool {
    static BY_VARIABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    FORCED_TABLE_LOCK.load(std::sync::atomic::Ordering::Relaxed)
        || *BY_VARIABLE
            .get_or_init(|| std::env::var("WARP_MYSQL_SNAPSHOT_LOCK").is_ok_and(|v| v == "table"))
}

/// Opens a UTC session and a consistent snapshot on it; returns the snapshot's exact
/// binlog position. With `gtid`, MariaDB's GTID for it too: `BINLOG_GTID_POS` scans the
/// binlog file up to the offset (63 ms of server CPU per call at 630 MB), so it is asked
/// only for positions a stream may start from, not for every chunk.
pub async fn begin_snapshot(
    conn: &mut Conn,
    of: SnapshotOf<'_>,
    gtid: bool,
) -> Result<BinlogPosition> {
    if forced_table_lock() {
        return table_locked(conn, &of).await;
    }
    open_snapshot(conn).await?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .context("snapshot position")?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if let (Some(file), Some(pos)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position"))
    {
        if !file.is_empty() {
            let pos: u64 = pos
                .parse()
                .map_err(|_| unsupported(format!("bad binlog_snapshot_position {pos}")))?;
            let mut p = BinlogPosition::new(file, pos);
            if !gtid {
                return Ok(p);
            }
            p.gtid = conn
                .exec_first::<Option<String>, _, _>(
                    "SELECT BINLOG_GTID_POS(?, ?)",
                    (&p.file, p.pos),
                )
                .await
                .ok()
                .flatten()
                .flatten();
            return Ok(p);
        }
    }
    // MySQL: no binlog_snapshot_* variables.
    conn.query_drop("ROLLBACK").await.context("rollback")?;
    table_locked(conn, &of).await
}

/// Opens the snapshot on `conn` while a second connection holds `LOCK TABLES … READ` on
/// the table: every transaction that wrote the table has committed (the lock waits for
/// them) and none can write it until the position is read, so the snapshot holds
/// exactly the table's changes up to that position. (GTIDs are MariaDB's only.)
async fn table_locked(conn: &mut Conn, of: &SnapshotOf<'_>) -> Result<BinlogPosition> {
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .context("set time zone")?;
    let mut lock = Conn::new(of.opts.clone()).await.context("connect")?;
    lock.query_drop(format!(
        "SET SESSION lock_wait_timeout = {TABLE_LOCK_WAIT_SECS}"
    ))
    .await
    .context("lock wait timeout")?;
    let table = format!("{}.{}", quote(of.database), quote(of.table));
    lock.query_drop(format!("LOCK TABLES {table} READ"))
        .await
        .map_err(|e| match MysqlError::from_driver(format!("LOCK TABLES {table} READ"), e) {
            MysqlError::Server { code: 1044 | 1142 | 1227, .. } => MysqlError::Unsupported {
                message: format!("the source user may not lock {table}, which pins a MySQL snapshot chunk's binlog position"),
                hint: Some("GRANT LOCK TABLES (with SELECT) on the schema to the source user".into()),
            },
            other => other,
        })?;
    let result = async {
        start_transaction(conn).await?;
        current(conn).await
    }
    .await;
    // Closing the session releases the lock whatever UNLOCK TABLES answered.
    let _ = lock.query_drop("UNLOCK TABLES").await;
    let _ = lock.disconnect().await;
    result
}

/// A stream may not start while an XA transaction is prepared: its changes are in the
/// binlog before the start (so not read) and invisible to the copy (not committed), so
/// its commit could land in neither. The start waits (a transient error, retried) until
/// `XA RECOVER` lists none. A user without the privilege to list them (MySQL's
/// `XA_RECOVER_ADMIN`) is not held back; the reader then refuses such a commit loudly.
pub async fn no_prepared_xa(conn: &mut Conn) -> Result<()> {
    let prepared: Vec<mysql_async::Row> = match conn.query("XA RECOVER").await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "XA RECOVER refused; not waiting for prepared XA transactions");
            return Ok(());
        }
    };
    if prepared.is_empty() {
        return Ok(());
    }
    Err(MysqlError::Busy {
        context: "start position".into(),
        message: format!(
            "{} XA transaction(s) prepared at the source (XA RECOVER); a stream starts once they are committed or rolled back",
            prepared.len()
        ),
    })
}

/// Takes a stream's start position with `take` between two `XA RECOVER`s that list none
/// (each refusal is [`MysqlError::Busy`], retried by the engine). Checked only after the
/// position, as before, a transaction prepared long before and committed between the
/// position and the check passed unseen; its commit then reached a reader that never saw
/// its prepare, which stopped every table of the feed (seen: a restarted replica whose
/// start retried while another database's XA transaction stayed prepared took its
/// position just before that commit). Checked before as well, a transaction can straddle
/// the position only if prepared and committed within the two checks' round trips.
pub async fn between_xa_checks<T>(
    conn: &mut Conn,
    take: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    no_prepared_xa(conn).await?;
    let taken = take(conn).await?;
    no_prepared_xa(conn).await?;
    Ok(taken)
}

/// The statement that reports the end of the binlog: MySQL 8.2 renamed `SHOW MASTER
/// STATUS` to `SHOW BINARY LOG STATUS` and 8.4 removed the old name; MariaDB (whose
/// versions start at 10, as the driver reads them from the greeting) keeps it.
pub fn binlog_status_statement((major, minor, _): (u16, u16, u16)) -> &'static str {
    if major < 10 && (major, minor) >= (8, 2) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    }
}

/// The current end of the binlog.
pub async fn current(conn: &mut Conn) -> Result<BinlogPosition> {
    let statement = binlog_status_statement(conn.server_version());
    let row: Option<mysql_async::Row> = conn.query_first(statement).await.context(statement)?;
    let row = row.ok_or_else(|| {
        MysqlError::Unsupported {
            message: format!("the source has no binary log ({statement} is empty)"),
            hint: Some("enable it: log_bin=ON, binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL".into()),
        }
    })?;
    let file: String = row
        .get(0)
        .ok_or_else(|| unsupported(format!("{statement} has no file")))?;
    let pos: u64 = row
        .get(1)
        .ok_or_else(|| unsupported(format!("{statement} has no position")))?;
    Ok(BinlogPosition::new(file, pos))
}

fn unsupported(message: String) -> MysqlError {
    MysqlError::Unsupported {
        message,
        hint: None,
    }
}

/// How a query of rows selects `column`, for decoding with `Origin::Stored`: the stored
/// bytes of a text column whose set is decoded here, so the copy reads them exactly as the
/// binlog path does (the server's conversion turns a byte its set does not define into `?`).
/// Never aliased: an `ORDER BY` naming the column would then sort by the bytes rather than
/// by the collation the key bounds compare in.
pub fn read_expr(column: &MysqlColumn) -> String {
    match &column.kind {
        Kind::Text { charset, .. } if charset.decoded_here() => {
            format!("CAST({} AS BINARY)", quote(&column.name))
        }
        // Kept at the destination, gone from the table: a copy lands NULL there, as the
        // stream does for rows written since.
        Kind::Dropped | Kind::Unseen => "NULL".to_owned(),
        _ => quote(&column.name),
    }
}

/// Keyset pagination over the primary key: `WHERE (k) >= (?) AND (k) < (?) AND (k) > (?)`,
/// and a condition of the rows to copy when there is one.
struct Select {
    columns: String,
    /// Where a page resumes: after the last row's key as read (its stored bytes for text
    /// read as stored), each taken back into the column's character set and collation.
    /// A decoded key cannot serve: a byte its set does not define leaves it unreadable,
    /// and as the server converts it (`?`) it sorts elsewhere (the copy looped on it).
    after_tuple: String,
    /// Which of `after_tuple`'s parameters are stored bytes sent as hex.
    after_hex: Vec<bool>,
    table: String,
    key: String,
    key_len: usize,
    only: Option<Condition>,
}

/// An SQL condition and its parameters.
pub type Condition = (String, Vec<mysql_async::Value>);

impl Select {
    fn new(database: &str, table: &MysqlTable) -> Self {
        let key: Vec<String> = table.schema.primary_key.iter().map(|k| quote(k)).collect();
        let after: Vec<(String, bool)> = table
            .schema
            .primary_key
            .iter()
            .map(
                |k| match table.columns.iter().find(|c| c.name == *k).map(|c| &c.kind) {
                    Some(Kind::Text {
                        charset,
                        named: Some((set, collation)),
                        ..
                    }) if charset.decoded_here() => {
                        // Hex, because a string parameter travels in the connection's
                        // character set, which takes a byte not valid in it for `?`.
                        (
                            format!("CONVERT(UNHEX(?) USING {set}) COLLATE {collation}"),
                            true,
                        )
                    }
                    _ => ("?".to_owned(), false),
                },
            )
            .collect();
        Self {
            columns: table
                .columns
                .iter()
                .map(read_expr)
                .collect::<Vec<_>>()
                .join(", "),
            after_tuple: format!(
                "({})",
                after
                    .iter()
                    .map(|(e, _)| e.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            after_hex: after.iter().map(|(_, hex)| *hex).collect(),
            table: format!("{}.{}", quote(database), quote(&table.schema.id.name)),
            key: format!("({})", key.join(", ")),
            key_len: key.len(),
            only: None,
        }
    }

    fn tuple(&self) -> String {
        format!("({})", vec!["?"; self.key_len].join(", "))
    }

    fn query(
        &self,
        what: &str,
        range: &KeyRange,
        after: Option<&[mysql_async::Value]>,
        limit: usize,
        offset: usize,
    ) -> (String, Vec<mysql_async::Value>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        let mut bound = |op: &str, key: &Key, conds: &mut Vec<String>| {
            conds.push(format!("{} {op} {}", self.key, self.tuple()));
            params.extend(key.iter().map(to_param));
        };
        if let Some(s) = &range.start {
            bound(">=", s, &mut conds);
        }
        if let Some(e) = &range.end {
            bound("<", e, &mut conds);
        }
        if let Some(a) = after {
            conds.push(format!("{} > {}", self.key, self.after_tuple));
            params.extend(a.iter().zip(&self.after_hex).map(|(v, hex)| match v {
                mysql_async::Value::Bytes(b) if *hex => {
                    let text: String = b.iter().map(|byte| format!("{byte:02X}")).collect();
                    mysql_async::Value::Bytes(text.into_bytes())
                }
                other => other.clone(),
            }));
        }
        if let Some((cond, values)) = &self.only {
            conds.push(cond.clone());
            params.extend(values.iter().cloned());
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {what} FROM {}{filter} ORDER BY {} LIMIT {limit} OFFSET {offset}",
            self.table,
            &self.key[1..self.key.len() - 1]
        );
        (sql, params)
    }
}

/// Splits the table into key ranges of about `chunk_rows` rows, inside the snapshot open
/// on `conn`.
pub async fn plan_chunks(
    conn: &mut Conn,
    database: &str,
    table: &MysqlTable,
    chunk_rows: usize,
) -> Result<Vec<KeyRange>> {
    let select = Select::new(database, table);
    let key_cols: Vec<usize> = table
        .schema
        .key_indexes()
        .map_err(|e| unsupported(e.to_string()))?;
    let key_kinds: Vec<_> = key_cols
        .iter()
        .map(|&i| table.columns[i].kind.clone())
        .collect();
    let what = select.key[1..select.key.len() - 1].to_owned();
    if let [col] = key_cols.as_slice() {
        if matches!(table.columns[*col].kind, Kind::Int { .. }) {
            let (min_max, estimate) =
                integer_extent(conn, database, table, &select, &key_kinds).await?;
            if let Some(bounds) =
                min_max.and_then(|(min, max)| integer_bounds(min, max, estimate, chunk_rows as u64))
            {
                return Ok(KeyRange::split_at(
                    bounds.into_iter().map(int_key).collect(),
                ));
            }
        }
    }
    // Walk the key: each bound is `chunk_rows` keys after the previous one.
    let mut bounds: Vec<Key> = Vec::new();
    loop {
        let range = KeyRange {
            start: bounds.last().cloned(),
            end: None,
        };
        let (sql, params) = select.query(&what, &range, None, 1, chunk_rows);
        let row: Option<mysql_async::Row> =
            conn.exec_first(sql, params).await.context("plan chunks")?;
        let Some(row) = row else { break };
        let key = decode_values(row, &key_kinds).map_err(unsupported)?;
        bounds.push(key);
    }
    Ok(KeyRange::split_at(bounds))
}

/// The smallest and largest key of a single-column integer key, and the server's
/// estimate of the table's rows.
async fn integer_extent(
    conn: &mut Conn,
    database: &str,
    table: &MysqlTable,
    select: &Select,
    key_kinds: &[Kind],
) -> Result<(Option<(i128, i128)>, u64)> {
    let what = &select.key[1..select.key.len() - 1];
    let row: Option<mysql_async::Row> = conn
        .query_first(format!(
            "SELECT MIN({what}), MAX({what}) FROM {}",
            select.table
        ))
        .await
        .context("key extent")?;
    let int = |v: &Value| match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    };
    let extent = match row {
        Some(row) => {
            let kinds = [key_kinds[0].clone(), key_kinds[0].clone()];
            let v = decode_values(row, &kinds).map_err(unsupported)?;
            int(&v[0]).zip(int(&v[1]))
        }
        None => None,
    };
    let estimate: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, &table.schema.id.name),
        )
        .await
        .context("row estimate")?;
    Ok((extent, estimate.flatten().unwrap_or(0)))
}

/// Chunk bounds for an integer key without walking it: ranges `chunk_rows` keys wide hold
/// at most `chunk_rows` rows each, whatever the gaps. Used when the server's row estimate
/// says at least half the key span is filled (so at most about twice the walked number of
/// chunks); `None` (walk instead) for sparse keys, where most ranges would be empty.
/// Walking costs the source a full pass over its clustered index before the first chunk
/// can start (0.5 s per million rows measured on MariaDB).
pub fn integer_bounds(min: i128, max: i128, estimate: u64, chunk_rows: u64) -> Option<Vec<i128>> {
    let span = (max - min).checked_add(1).filter(|s| *s > 0)?;
    let width = i128::from(chunk_rows.max(1));
    if estimate == 0 || span > 2 * i128::from(estimate) {
        return None;
    }
    let chunks = (span + width - 1) / width;
    Some((1..chunks).map(|k| min + k * width).collect())
}

fn int_key(v: i128) -> Key {
    vec![match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::UInt(u64::try_from(v).unwrap_or(u64::MAX)),
    }]
}

/// Every key of the table (delete detection for the `timestamp` strategy).
pub async fn all_keys(conn: &mut Conn, database: &str, table: &MysqlTable) -> Result<Vec<Key>> {
    let select = Select::new(database, table);
    let key_kinds: Vec<_> = table
        .schema
        .key_indexes()
        .map_err(|e| unsupported(e.to_string()))?
        .iter()
        .map(|&i| table.columns[i].kind.clone())
        .collect();
    let what = &select.key[1..select.key.len() - 1];
    let rows: Vec<mysql_async::Row> = conn
        .query(format!("SELECT {what} FROM {}", select.table))
        .await
        .context("read keys")?;
    rows.into_iter()
        .map(|r| decode_values(r, &key_kinds).map_err(unsupported))
        .collect()
}

/// Keys per `IN` list of [`existing_keys`].
const KEYS_PER_LOOKUP: usize = 500;

/// Which of `keys` the table holds, each as read (text keys as stored, so a key the
/// collation merely deems equal — another case, trailing spaces — is not held).
pub async fn existing_keys(
    conn: &mut Conn,
    database: &str,
    table: &MysqlTable,
    keys: &[Key],
) -> Result<Vec<Key>> {
    let select = Select::new(database, table);
    let key_columns: Vec<&MysqlColumn> = table
        .schema
        .key_indexes()
        .map_err(|e| unsupported(e.to_string()))?
        .iter()
        .map(|&i| &table.columns[i])
        .collect();
    let what: Vec<String> = key_columns.iter().map(|c| read_expr(c)).collect();
    let mut held = std::collections::BTreeSet::new();
    for part in keys.chunks(KEYS_PER_LOOKUP) {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} IN ({})",
            what.join(", "),
            select.table,
            select.key,
            vec![select.tuple(); part.len()].join(", ")
        );
        let params: Vec<mysql_async::Value> = part.iter().flatten().map(to_param).collect();
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.context("look up keys")?;
        for row in rows {
            let key = row
                .unwrap()
                .into_iter()
                .zip(&key_columns)
                .map(|(v, c)| match decode_from(v, &c.kind, Origin::Stored) {
                    Ok(Decoded::Value(v)) => v,
                    Ok(Decoded::ZeroDate) => Value::Null,
                    Err(e) => Value::Unreadable(e.to_string()),
                })
                .collect();
            held.insert(warp_core::OrdKey(key));
        }
    }
    Ok(keys
        .iter()
        .filter(|k| held.contains(&warp_core::OrdKey((*k).clone())))
        .cloned()
        .collect())
}

fn decode_values(row: mysql_async::Row, kinds: &[Kind]) -> std::result::Result<Vec<Value>, String> {
    row.unwrap()
        .into_iter()
        .zip(kinds)
        .map(|(v, k)| match decode(v, k)? {
            Decoded::Value(v) => Ok(v),
            Decoded::ZeroDate => Ok(Value::Null),
        })
        .collect()
}

/// The key of a page's last row as read: where the next page resumes.
type Cursor = Vec<mysql_async::Value>;

/// One row of a chunk page; zero dates become NULL (counted in `zeros`), values that
/// cannot be decoded are marked so the destination dead-letters the row with the reason.
fn chunk_row(values: Vec<mysql_async::Value>, columns: &[MysqlColumn], zeros: &mut u64) -> Row {
    let values = values
        .into_iter()
        .zip(columns)
        .map(|(v, c)| match decode_from(v, &c.kind, Origin::Stored) {
            Ok(Decoded::Value(v)) => v,
            Ok(Decoded::ZeroDate) => {
                *zeros += 1;
                Value::Null
            }
            Err(e) => Value::Unreadable(format!("column {}: {e}", c.name)),
        })
        .collect();
    Row::new(values)
}

/// Pages of a chunk's rows (those matching `only`, when given), read on `conn` (inside
/// its snapshot) until the range ends; the connection is released when the stream ends
/// or is dropped.
pub fn chunk_rows(
    conn: Conn,
    database: String,
    table: MysqlTable,
    range: KeyRange,
    only: Option<Condition>,
    page: usize,
    zero_dates: std::sync::Arc<dyn Fn(u64) + Send + Sync>,
) -> BoxStream<'static, warp_core::Result<Vec<Row>>> {
    let shared = std::sync::Arc::new((
        Select {
            only,
            ..Select::new(&database, &table)
        },
        table.columns.clone(),
        table.schema.key_indexes().unwrap_or_default(),
        range,
    ));
    stream::unfold(Some((conn, None::<Cursor>)), move |state| {
        let shared = std::sync::Arc::clone(&shared);
        let zero_dates = std::sync::Arc::clone(&zero_dates);
        async move {
            let (select, columns, key_cols, range) = (&shared.0, &shared.1, &shared.2, &shared.3);
            let (mut conn, after) = state?;
            let (sql, params) = select.query(&select.columns, range, after.as_deref(), page, 0);
            // Rows are converted as they arrive: collecting the page first held it twice
            // (the driver's rows and ours), the largest share of a wide table's copy memory.
            let page_rows = async {
                let mut result = conn.exec_iter(sql, params).await?;
                let mut zeros = 0;
                let mut out = Vec::with_capacity(page);
                // Each row is converted once the next arrives, so the last one's key
                // is taken as read without copying every row's.
                let mut held: Option<Vec<mysql_async::Value>> = None;
                while let Some(row) = result.next().await? {
                    if let Some(values) = held.replace(row.unwrap()) {
                        out.push(chunk_row(values, columns, &mut zeros));
                    }
                }
                let last = held.map(|values| {
                    let key = key_cols.iter().map(|&i| values[i].clone()).collect();
                    out.push(chunk_row(values, columns, &mut zeros));
                    key
                });
                Ok::<_, mysql_async::Error>((out, zeros, last))
            };
            let (out, zeros, last) = match page_rows.await.context("read chunk") {
                Ok(r) => r,
                Err(e) => return Some((Err(e.into()), None)),
            };
            if out.is_empty() {
                let _ = conn.query_drop("COMMIT").await;
                return None;
            }
            if zeros > 0 {
                zero_dates(zeros);
            }
            if out.len() < page {
                let _ = conn.query_drop("COMMIT").await;
                return Some((Ok(out), None));
            }
            Some((Ok(out), Some((conn, last))))
        }
    })
    .boxed()
}

/// A connection from the pool for one snapshot read.
pub async fn conn(pool: &Pool) -> Result<Conn> {
    pool.get_conn().await.context("connect")
}

#[cfg(test)]
mod tests {
    use super::{binlog_status_statement, integer_bounds};

    #[test]
    fn the_binlog_status_statement_follows_server_and_version() {
        for (version, statement) in [
            ((5, 7, 44), "SHOW MASTER STATUS"),
            ((8, 0, 36), "SHOW MASTER STATUS"), // also Aurora MySQL 3
            ((8, 2, 0), "SHOW BINARY LOG STATUS"),
            ((8, 4, 3), "SHOW BINARY LOG STATUS"), // SHOW MASTER STATUS is gone
            ((9, 1, 0), "SHOW BINARY LOG STATUS"),
            ((10, 11, 19), "SHOW MASTER STATUS"), // MariaDB
            ((11, 4, 2), "SHOW MASTER STATUS"),
        ] {
            assert_eq!(binlog_status_statement(version), statement, "{version:?}");
        }
    }

    #[test]
    fn integer_keys_split_arithmetically_when_dense_enough() {
        // 1..=1,000,001 in 50,000-wide ranges: 21 chunks, as walking would give.
        let b = integer_bounds(1, 1_000_001, 900_000, 50_000).unwrap();
        assert_eq!(b.len(), 20);
        assert_eq!((b[0], b[19]), (50_001, 1_000_001));
        // One range when the span fits; extreme keys do not overflow.
        assert_eq!(integer_bounds(5, 9, 5, 100), Some(vec![]));
        let top = i128::from(u64::MAX);
        assert_eq!(integer_bounds(top - 9, top, 10, 5), Some(vec![top - 4]));
        // Sparse (or unknown) keys are walked instead.
        assert_eq!(integer_bounds(1, 1_000_000, 400_000, 50_000), None);
        assert_eq!(integer_bounds(1, 10, 0, 5), None);
        let (lo, hi) = (i128::from(i64::MIN), i128::from(i64::MAX));
        assert_eq!(integer_bounds(lo, hi, 1_000, 50_000), None);
    }
}
