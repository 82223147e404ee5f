//! The in-memory control store: checkpoints, fencing tokens and leases (judged by this
//! process's monotonic clock). A [`super::MemorySink`] keeps one beside its data and
//! records checkpoints with its commits; one built with
//! [`super::MemorySink::with_checkpoints_apart`] leaves them to this store alone, as a
//! destination that cannot share a transaction with its control store does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::faults::{FailPoint, Faults};
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseStore};
use crate::sink::{
    Checkpoint, CheckpointStore, CheckpointUpdate, ChunkProgress, FencingToken, Phase, TableKey,
};

#[derive(Default)]
pub(super) struct ControlState {
    pub(super) checkpoints: BTreeMap<TableKey, Checkpoint>,
    pub(super) tokens: BTreeMap<TableKey, u64>,
    /// Owner ("" once handed back) and expiry.
    leases: BTreeMap<TableKey, (String, Instant)>,
    members: BTreeMap<(String, String), Instant>,
}

impl ControlState {
    pub(super) fn is_untouched(&self) -> bool {
        self.checkpoints.is_empty() && self.tokens.is_empty()
    }

    pub(super) fn check_token(&self, table: &TableKey, token: FencingToken) -> Result<()> {
        let current = self.tokens.get(table).copied().unwrap_or(0);
        if current == token.0 {
            Ok(())
        } else {
            Err(Error::Fenced {
                table: table.to_string(),
                ours: token.0,
                current,
            })
        }
    }

    /// Records `update` on top of the table's checkpoint, if `token` still holds.
    pub(super) fn record(
        &mut self,
        table: &TableKey,
        token: FencingToken,
        update: CheckpointUpdate,
    ) -> Result<()> {
        self.check_token(table, token)?;
        let checkpoint = next_checkpoint(self.checkpoints.get(table), update, token)?;
        self.checkpoints.insert(table.clone(), checkpoint);
        Ok(())
    }
}

/// Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct MemoryControl {
    state: Arc<Mutex<ControlState>>,
    faults: Faults,
}

fn next_token(tokens: &mut BTreeMap<TableKey, u64>, table: &TableKey) -> FencingToken {
    let t = tokens.entry(table.clone()).or_default();
    *t += 1;
    FencingToken(*t)
}

impl MemoryControl {
    pub(super) fn with_faults(faults: Faults) -> Self {
        Self {
            state: Arc::default(),
            faults,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn checkpoint(&self, table: &TableKey) -> Option<Checkpoint> {
        self.lock().checkpoints.get(table).cloned()
    }

    /// Hands `table` to `owner` whatever the lease says, as a replica does once the
    /// lease lapsed: the current holder is fenced off.
    pub fn take_over(&self, table: &TableKey, owner: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        next_token(&mut st.tokens, table);
        let expiry = Instant::now() + Duration::from_secs(3600);
        st.leases.insert(table.clone(), (owner.to_owned(), expiry));
    }

    /// Who holds `table`'s lease, if anyone.
    pub fn lease_owner(&self, table: &TableKey) -> Option<String> {
        self.lock()
            .leases
            .get(table)
            .filter(|(owner, expiry)| !owner.is_empty() && *expiry > Instant::now())
            .map(|(owner, _)| owner.clone())
    }
}

#[async_trait]
impl CheckpointStore for MemoryControl {
    async fn load(&self, table: &TableKey) -> Result<Option<Checkpoint>> {
        Ok(self.checkpoint(table))
    }

    async fn save(
        &self,
        table: &TableKey,
        token: FencingToken,
        update: CheckpointUpdate,
    ) -> Result<()> {
        self.faults
            .check(FailPoint::SaveCheckpoint, &table.table, true)?;
        self.lock().record(table, token, update)
    }

    async fn reset(&self, table: &TableKey, token: FencingToken) -> Result<()> {
        let mut st = self.lock();
        st.check_token(table, token)?;
        st.checkpoints.remove(table);
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for MemoryControl {
    async fn join(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>> {
        let mut st = self.lock();
        let now = Instant::now();
        let members = &mut st.members;
        members.insert((schema.to_owned(), owner.to_owned()), now + validity);
        Ok(members
            .iter()
            .filter(|((s, _), expiry)| s == schema && **expiry > now)
            .map(|((_, o), _)| o.clone())
            .collect())
    }

    async fn leave(&self, schema: &str, owner: &str) -> Result<()> {
        let mut st = self.lock();
        st.members.remove(&(schema.to_owned(), owner.to_owned()));
        Ok(())
    }

    async fn acquire(
        &self,
        table: &TableKey,
        owner: &str,
        validity: Duration,
    ) -> Result<Option<FencingToken>> {
        let mut st = self.lock();
        let st = &mut *st;
        let now = Instant::now();
        if let Some((holder, expiry)) = st.leases.get(table) {
            if holder != owner && !holder.is_empty() && *expiry > now {
                return Ok(None);
            }
        }
        st.leases
            .insert(table.clone(), (owner.to_owned(), now + validity));
        Ok(Some(next_token(&mut st.tokens, table)))
    }

    async fn renew(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>> {
        let mut st = self.lock();
        let expiry = Instant::now() + validity;
        let mut held = Vec::new();
        for (key, (holder, until)) in &mut st.leases {
            if key.schema == schema && holder == owner {
                *until = expiry;
                held.push(key.table.clone());
            }
        }
        Ok(held)
    }

    async fn leases(&self, schema: &str) -> Result<Vec<Lease>> {
        let st = self.lock();
        let now = Instant::now();
        Ok(st
            .leases
            .iter()
            .filter(|(k, _)| k.schema == schema)
            .map(|(k, (owner, expiry))| Lease {
                table: k.table.clone(),
                owner: owner.clone(),
                live: !owner.is_empty() && *expiry > now,
            })
            .collect())
    }

    async fn release(&self, table: &TableKey, owner: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some((holder, expiry)) = st.leases.get_mut(table) {
            if holder == owner {
                holder.clear();
                *expiry = Instant::now();
            }
        }
        Ok(())
    }
}

fn next_checkpoint(
    current: Option<&Checkpoint>,
    update: CheckpointUpdate,
    token: FencingToken,
) -> Result<Checkpoint> {
    // A snapshot plan records the shape it shares (none here: this store does not share
    // chunks); its stream records the one it starts with.
    let mut shape = current.and_then(|c| c.shape.clone());
    let phase = match update {
        CheckpointUpdate::BeginSnapshot {
            start,
            chunks,
            recopy,
            shared,
        } => {
            shape = shared;
            Phase::Snapshot {
                start,
                recopy,
                chunks: chunks
                    .into_iter()
                    .map(|range| ChunkProgress {
                        range,
                        done: None,
                        rows: 0,
                    })
                    .collect(),
            }
        }
        CheckpointUpdate::ChunkDone {
            index,
            position,
            rows,
        } => match current.map(|c| c.phase.clone()) {
            Some(Phase::Snapshot {
                start,
                mut chunks,
                recopy,
            }) => {
                let chunk = chunks.get_mut(index).ok_or_else(|| {
                    Error::sink_permanent(format!("no chunk {index} in the plan"), None)
                })?;
                chunk.done = Some(position);
                chunk.rows = rows;
                Phase::Snapshot {
                    start,
                    chunks,
                    recopy,
                }
            }
            _ => {
                return Err(Error::sink_permanent(
                    "chunk finished outside a snapshot",
                    None,
                ))
            }
        },
        CheckpointUpdate::ChunkCopied { .. } => {
            return Err(Error::sink_permanent(
                "this store does not share chunks between replicas",
                None,
            ))
        }
        CheckpointUpdate::Streaming {
            position,
            source_ts,
            handover,
            shape: new_shape,
            recopy,
        } => {
            shape = new_shape.or(shape);
            Phase::Streaming {
                position,
                source_ts,
                handover,
                recopy,
            }
        }
    };
    Ok(Checkpoint {
        phase,
        fencing: token,
        shape,
    })
}
