//! Leases of the in-memory sink, judged by this process's monotonic clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::MemorySink;
use crate::error::Result;
use crate::lease::{Lease, LeaseStore};
use crate::sink::{FencingToken, TableKey};

#[derive(Default)]
pub(crate) struct LeaseBook {
    /// Owner ("" once handed back) and expiry.
    leases: BTreeMap<TableKey, (String, Instant)>,
    members: BTreeMap<(String, String), Instant>,
}

fn next_token(tokens: &mut BTreeMap<TableKey, u64>, table: &TableKey) -> FencingToken {
    let t = tokens.entry(table.clone()).or_default();
    *t += 1;
    FencingToken(*t)
}

impl MemorySink {
    /// Hands `table` to `owner` whatever the lease says, as a replica does once the
    /// lease lapsed: the current holder is fenced off.
    pub fn take_over(&self, table: &TableKey, owner: &str) {
        let mut st = self.lock();
        let st = &mut *st;
        next_token(&mut st.tokens, table);
        let expiry = Instant::now() + Duration::from_secs(3600);
        st.leases
            .leases
            .insert(table.clone(), (owner.to_owned(), expiry));
    }

    /// Who holds `table`'s lease, if anyone.
    pub fn lease_owner(&self, table: &TableKey) -> Option<String> {
        let st = self.lock();
        st.leases
            .leases
            .get(table)
            .filter(|(owner, expiry)| !owner.is_empty() && *expiry > Instant::now())
            .map(|(owner, _)| owner.clone())
    }
}

#[async_trait]
impl LeaseStore for MemorySink {
    async fn join(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>> {
        let mut st = self.lock();
        let now = Instant::now();
        let members = &mut st.leases.members;
        members.insert((schema.to_owned(), owner.to_owned()), now + validity);
        Ok(members
            .iter()
            .filter(|((s, _), expiry)| s == schema && **expiry > now)
            .map(|((_, o), _)| o.clone())
            .collect())
    }

    async fn leave(&self, schema: &str, owner: &str) -> Result<()> {
        let mut st = self.lock();
        st.leases
            .members
            .remove(&(schema.to_owned(), owner.to_owned()));
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
        if let Some((holder, expiry)) = st.leases.leases.get(table) {
            if holder != owner && !holder.is_empty() && *expiry > now {
                return Ok(None);
            }
        }
        st.leases
            .leases
            .insert(table.clone(), (owner.to_owned(), now + validity));
        Ok(Some(next_token(&mut st.tokens, table)))
    }

    async fn renew(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>> {
        let mut st = self.lock();
        let expiry = Instant::now() + validity;
        let mut held = Vec::new();
        for (key, (holder, until)) in &mut st.leases.leases {
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
        if let Some((holder, expiry)) = st.leases.leases.get_mut(table) {
            if holder == owner {
                holder.clear();
                *expiry = Instant::now();
            }
        }
        Ok(())
    }
}
