//! Table ownership between the replicas of one schema (docs/deploy.md, Scaling out). Each
//! table has a lease in the control store; its fencing token is checked wherever a
//! checkpoint is written, so a replica that lost a lease can never move one, however late
//! it wakes up. Expiry is judged by the destination's clock, never by the replicas' own
//! clocks.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Identity of a replicated table in the metadata: (schema, table).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableKey {
    pub schema: String,
    pub table: String,
}

impl std::fmt::Display for TableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// The fencing token of the current owner; a commit with an older token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

/// A table's lease as the replicas see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub table: String,
    /// Empty when handed back.
    pub owner: String,
    /// Renewed recently enough that nobody else may take it.
    pub live: bool,
}

/// Leases and replica membership, kept where the checkpoints are.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Records `owner` as a live replica of `schema` for `validity`, and returns the live
    /// replicas of `schema` (including `owner`), sorted.
    async fn join(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>>;

    /// Forgets `owner` as a replica of `schema` (clean shutdown).
    async fn leave(&self, schema: &str, owner: &str) -> Result<()>;

    /// Takes `table` for `owner` if its lease is free, lapsed or already `owner`'s, with a
    /// fencing token newer than any before (waiting for the previous holder's transactions
    /// in flight). `None` when another live replica holds it.
    async fn acquire(
        &self,
        table: &TableKey,
        owner: &str,
        validity: Duration,
    ) -> Result<Option<FencingToken>>;

    /// Extends every lease `owner` holds in `schema`; returns the tables it still holds.
    async fn renew(&self, schema: &str, owner: &str, validity: Duration) -> Result<Vec<String>>;

    /// Every lease of `schema`.
    async fn leases(&self, schema: &str) -> Result<Vec<Lease>>;

    /// Hands `table` back (no-op unless `owner` holds it); its fencing token is kept, so
    /// the next owner's is newer.
    async fn release(&self, table: &TableKey, owner: &str) -> Result<()>;
}

/// How many of `tables` the replica ranked `rank` (0-based, in sorted order) among
/// `replicas` live ones should own: an even split, the first ones taking the remainder.
pub fn fair_share(tables: usize, replicas: usize, rank: usize) -> usize {
    if replicas == 0 {
        return tables;
    }
    tables / replicas + usize::from(rank < tables % replicas)
}

/// How long a lease lasts without renewal, and how often replicas renew and look for
/// lapsed leases: renewing every third of `lease_ttl` and letting a lease lapse after two
/// thirds, a dead replica's tables are taken over within `lease_ttl` while a live one can
/// miss one renewal without losing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub validity: Duration,
    pub interval: Duration,
}

impl LeaseTiming {
    pub fn from_ttl(ttl: Duration) -> Self {
        Self {
            validity: ttl * 2 / 3,
            interval: ttl / 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_even_and_add_up() {
        for tables in 0..12 {
            for replicas in 1..5 {
                let shares: Vec<_> = (0..replicas)
                    .map(|r| fair_share(tables, replicas, r))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), tables);
                let (min, max) = (shares.iter().min(), shares.iter().max());
                assert!(max.unwrap() - min.unwrap() <= 1, "{shares:?}");
            }
        }
        assert_eq!(fair_share(4, 0, 0), 4);
    }

    #[test]
    fn a_dead_replica_is_replaced_within_the_ttl() {
        let t = LeaseTiming::from_ttl(Duration::from_secs(30));
        // Last renewal at most `interval` before death is not needed: the lease lapses
        // `validity` after it, and someone looks within one `interval` of that.
        assert!(t.validity + t.interval <= Duration::from_secs(30));
        assert!(t.validity >= 2 * t.interval);
    }
}
