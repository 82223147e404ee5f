//! An in-memory destination. A transaction buffers its writes and applies them, with its
//! checkpoint in the sink's [`MemoryControl`], under both locks at commit: all or nothing,
//! like the PostgreSQL sink. Built [`MemorySink::with_checkpoints_apart`], it commits the
//! data alone and hands the checkpoint back for the control store, as a destination that
//! cannot share a transaction with its control store does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::faults::{FailPoint, Faults};
use super::memory_control::MemoryControl;
use super::memory_source::MemorySource;
use super::wait_for;
use crate::config::DeletionStrategy;
use crate::engine::OrdKey;
use crate::error::{Error, Result};
use crate::event::{Change, Operation};
use crate::schema::{LandingVersion, TableSchema};
use crate::sink::{
    Checkpoint, CheckpointUpdate, Committed, FencingToken, Phase, Sink, SinkTransaction, TableKey,
    Target,
};
use crate::value::{Key, Row, Value};

/// A landed row with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub row: Row,
    pub version: u64,
    pub deleted: bool,
    pub op: Operation,
}

struct LandedTable {
    schema: TableSchema,
    landing: LandingVersion,
    key_columns: Vec<usize>,
    rows: BTreeMap<OrdKey, StoredRow>,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<TableKey, LandedTable>,
    prepared: bool,
    commits: u64,
}

/// Cheap to clone; clones share state (it outlives pipelines, like a database).
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<State>>,
    control: MemoryControl,
    /// Commits leave the checkpoint to `control` ([`Committed::Separately`]).
    apart: bool,
    faults: Faults,
    /// Tables whose writes wait, like a landing table locked by another session.
    locked: Arc<tokio::sync::watch::Sender<std::collections::BTreeSet<String>>>,
    /// Writes waiting on a locked table now.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl MemorySink {
    pub fn new() -> Self {
        let faults = Faults::default();
        Self {
            control: MemoryControl::with_faults(faults.clone()),
            faults,
            ..Self::default()
        }
    }

    /// A sink whose commits land the data only and hand the checkpoint back, to be saved
    /// in [`MemorySink::control`] afterwards: the engine's path for a destination whose
    /// control store lives elsewhere. Its writes are not fenced (only the checkpoint is).
    pub fn with_checkpoints_apart() -> Self {
        Self {
            apart: true,
            ..Self::new()
        }
    }

    /// Whether commits leave their checkpoints to the control store.
    pub fn checkpoints_apart(&self) -> bool {
        self.apart
    }

    /// The control store (checkpoints, leases) the pipeline is given beside this sink.
    pub fn control(&self) -> MemoryControl {
        self.control.clone()
    }

    /// Hands `table` to `owner` whatever the lease says ([`MemoryControl::take_over`]).
    pub fn take_over(&self, table: &TableKey, owner: &str) {
        self.control.take_over(table, owner);
    }

    /// Who holds `table`'s lease, if anyone.
    pub fn lease_owner(&self, table: &TableKey) -> Option<String> {
        self.control.lease_owner(table)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Makes every write to `table` wait until [`MemorySink::unlock`], as a lock held on
    /// its landing table would.
    pub fn lock_table(&self, table: &str) {
        self.locked.send_modify(|l| {
            l.insert(table.to_owned());
        });
    }

    pub fn unlock_table(&self, table: &str) {
        self.locked.send_modify(|l| {
            l.remove(table);
        });
    }

    async fn wait_unlocked(&self, table: &str) {
        let mut rx = self.locked.subscribe();
        if !rx.borrow().contains(table) {
            return;
        }
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting.fetch_add(1, SeqCst);
        let _ = rx.wait_for(|l| !l.contains(table)).await;
        self.waiting.fetch_sub(1, SeqCst);
    }

    /// Writes waiting on a locked table ([`MemorySink::lock_table`]) now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn key(schema: &str, table: &str) -> TableKey {
        TableKey {
            schema: schema.to_owned(),
            table: table.to_owned(),
        }
    }

    /// Live (not soft-deleted) rows, in key order.
    pub fn live_rows(&self, schema: &str, table: &str) -> Vec<Row> {
        self.stored(schema, table)
            .into_iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(_, r)| r.row)
            .collect()
    }

    /// Every landed row with its key and bookkeeping.
    pub fn stored(&self, schema: &str, table: &str) -> Vec<(Key, StoredRow)> {
        self.lock()
            .tables
            .get(&Self::key(schema, table))
            .map(|t| {
                t.rows
                    .iter()
                    .map(|(k, r)| (k.0.clone(), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn checkpoint(&self, schema: &str, table: &str) -> Option<Checkpoint> {
        self.control.checkpoint(&Self::key(schema, table))
    }

    pub fn schema_of(&self, schema: &str, table: &str) -> Option<TableSchema> {
        self.lock()
            .tables
            .get(&Self::key(schema, table))
            .map(|t| t.schema.clone())
    }

    /// Whether anything was ever written (tables, checkpoints, metadata).
    pub fn is_untouched(&self) -> bool {
        let st = self.lock();
        st.tables.is_empty() && !st.prepared && self.control.lock().is_untouched()
    }

    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Waits until the table's live rows equal the source's and its checkpoint has
    /// reached the source's head (so nothing is still in flight).
    pub async fn wait_until_equal(&self, source: &MemorySource, schema: &str, table: &str) {
        let what = format!("{schema}.{table} to equal the source");
        wait_for(&what, Duration::from_secs(20), || {
            let caught_up = matches!(
                self.checkpoint(schema, table).map(|c| c.phase),
                Some(Phase::Streaming { position, .. }) if position == source.head()
            );
            caught_up && self.live_rows(schema, table) == source.rows(table)
        })
        .await;
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn check(&self) -> Result<crate::ConnectionSecurity> {
        Ok(crate::ConnectionSecurity::plain())
    }

    async fn prepare(&self) -> Result<()> {
        self.faults.check(FailPoint::Prepare, "*", true)?;
        self.lock().prepared = true;
        Ok(())
    }

    async fn ensure_table(&self, target: &Target, schema: &TableSchema) -> Result<LandingVersion> {
        self.faults
            .check(FailPoint::EnsureTable, &target.table, true)?;
        let key_columns = schema
            .key_indexes()
            .map_err(|m| Error::sink_permanent(m, None))?;
        let mut st = self.lock();
        let landed = st
            .tables
            .entry(target.key())
            .or_insert_with(|| LandedTable {
                schema: schema.clone(),
                landing: target.landing,
                key_columns: key_columns.clone(),
                rows: BTreeMap::new(),
            });
        // Bring an existing table to the new shape: added columns only (as DDL would).
        while landed.schema.columns.len() < schema.columns.len() {
            let col = schema.columns[landed.schema.columns.len()].clone();
            let fill = col.default.clone().unwrap_or(Value::Null);
            for r in landed.rows.values_mut() {
                r.row.values.push(fill.clone());
            }
            landed.schema.columns.push(col);
        }
        Ok(landed.landing)
    }

    async fn live_key_page(
        &self,
        target: &Target,
        schema: &TableSchema,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let mut keys = self.live_keys(target, schema).await?;
        // (Held in key order.)
        if let Some(after) = after {
            keys.retain(|k| crate::value::cmp_keys(k, after) == std::cmp::Ordering::Greater);
        }
        keys.truncate(limit);
        Ok(keys)
    }

    async fn live_keys(&self, target: &Target, _schema: &TableSchema) -> Result<Vec<Key>> {
        Ok(self
            .lock()
            .tables
            .get(&target.key())
            .map(|t| {
                t.rows
                    .iter()
                    .filter(|(_, r)| !r.deleted)
                    .map(|(k, _)| k.0.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn plan_table(&self, target: &Target, schema: &TableSchema) -> Result<Vec<String>> {
        let st = self.lock();
        Ok(match st.tables.get(&target.key()) {
            None => vec![format!(
                "create {}.{} ({} columns)",
                target.destination_schema,
                target.table,
                schema.columns.len()
            )],
            Some(t) => schema.columns[t.schema.columns.len().min(schema.columns.len())..]
                .iter()
                .map(|c| format!("add column {}.{}", target.table, c.name))
                .collect(),
        })
    }

    async fn begin(
        &self,
        target: &Target,
        token: FencingToken,
    ) -> Result<Box<dyn SinkTransaction>> {
        self.faults.check(FailPoint::Begin, &target.table, true)?;
        Ok(Box::new(MemoryTransaction {
            sink: self.clone(),
            target: target.clone(),
            token,
            writes: Vec::new(),
        }))
    }
}

enum Write {
    Snapshot(Vec<Row>),
    Changes(Vec<Change>),
}

struct MemoryTransaction {
    sink: MemorySink,
    target: Target,
    token: FencingToken,
    writes: Vec<Write>,
}

#[async_trait]
impl SinkTransaction for MemoryTransaction {
    async fn write_snapshot_rows(&mut self, rows: Vec<Row>) -> Result<()> {
        self.sink
            .faults
            .check(FailPoint::WriteSnapshot, &self.target.table, true)?;
        self.writes.push(Write::Snapshot(rows));
        Ok(())
    }

    async fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        self.sink.wait_unlocked(&self.target.table).await;
        self.sink
            .faults
            .check(FailPoint::Apply, &self.target.table, true)?;
        self.writes.push(Write::Changes(changes));
        Ok(())
    }

    async fn commit(self: Box<Self>, update: CheckpointUpdate) -> Result<Committed> {
        self.sink.wait_unlocked(&self.target.table).await;
        self.sink
            .faults
            .check(FailPoint::Commit, &self.target.table, true)?;
        let key = self.target.key();
        // Together: the control store's lock is taken first and held across the data's,
        // so data and checkpoint land together or not at all.
        let mut control = (!self.sink.apart).then(|| self.sink.control.lock());
        if let Some(c) = &control {
            c.check_token(&key, self.token)?;
        }
        let mut st = self.sink.lock();
        // Work on copies so a failure half-way leaves nothing behind.
        let mut table = st
            .tables
            .get(&key)
            .map(|t| LandedTable {
                schema: t.schema.clone(),
                landing: t.landing,
                key_columns: t.key_columns.clone(),
                rows: t.rows.clone(),
            })
            .ok_or_else(|| Error::sink_permanent(format!("{key}: table not ensured"), None))?;
        for write in self.writes {
            match write {
                Write::Snapshot(rows) => snapshot_rows(&mut table, rows)?,
                Write::Changes(changes) => {
                    apply_changes(&mut table, changes, self.target.deletion_strategy)?
                }
            }
        }
        let committed = match &mut control {
            Some(c) => {
                c.record(&key, self.token, update)?;
                Committed::WithData
            }
            None => Committed::Separately(Box::new(update)),
        };
        st.tables.insert(key, table);
        st.commits += 1;
        Ok(committed)
    }
}

fn width_check(table: &LandedTable, row: &Row) -> Result<()> {
    if row.values.len() == table.schema.columns.len() {
        Ok(())
    } else {
        Err(Error::sink_permanent(
            format!(
                "row has {} values, table {} has {} columns",
                row.values.len(),
                table.schema.id,
                table.schema.columns.len()
            ),
            None,
        ))
    }
}

fn snapshot_rows(table: &mut LandedTable, rows: Vec<Row>) -> Result<()> {
    for row in rows {
        width_check(table, &row)?;
        let key = OrdKey(row.key(&table.key_columns));
        // A re-copied row is overwritten without a version bump.
        let version = table.rows.get(&key).map_or(1, |r| r.version);
        table.rows.insert(
            key,
            StoredRow {
                row,
                version,
                deleted: false,
                op: Operation::Read,
            },
        );
    }
    Ok(())
}

fn apply_changes(
    table: &mut LandedTable,
    changes: Vec<Change>,
    deletion: DeletionStrategy,
) -> Result<()> {
    for change in changes {
        match change {
            Change::Row(e) => {
                let key = OrdKey(e.key.clone());
                let existing = table.rows.get(&key).cloned();
                let version = existing.as_ref().map_or(0, |r| r.version) + 1;
                match (e.op, e.after) {
                    (Operation::Delete, _) => match deletion {
                        DeletionStrategy::Hard => {
                            table.rows.remove(&key);
                        }
                        DeletionStrategy::Soft => {
                            let image = existing.map(|r| r.row).or(e.before);
                            if let Some(row) = image {
                                table.rows.insert(
                                    key,
                                    StoredRow {
                                        row,
                                        version,
                                        deleted: true,
                                        op: Operation::Delete,
                                    },
                                );
                            }
                        }
                    },
                    (op, Some(after)) => {
                        width_check(table, &after)?;
                        table.rows.insert(
                            key,
                            StoredRow {
                                row: after,
                                version,
                                deleted: false,
                                op,
                            },
                        );
                    }
                    (op, None) => {
                        return Err(Error::sink_permanent(
                            format!("{op:?} without a row image"),
                            None,
                        ));
                    }
                }
            }
            Change::Schema(sc) => {
                table
                    .schema
                    .apply(&sc)
                    .map_err(|m| Error::sink_permanent(m, None))?;
                if let crate::schema::SchemaChange::AddColumn(col) = sc {
                    let fill = col.default.unwrap_or(Value::Null);
                    for r in table.rows.values_mut() {
                        r.row.values.push(fill.clone());
                    }
                }
            }
            Change::Truncate => table.rows.clear(),
            // No engine test needs them; the PostgreSQL sink's are tested end to end.
            Change::Cascade(c) => {
                return Err(Error::sink_permanent(
                    format!(
                        "{}: the memory sink does not reproduce foreign-key actions",
                        c.constraint
                    ),
                    None,
                ))
            }
        }
    }
    Ok(())
}
