//! Binlog positions: file and offset, with the MariaDB GTID or the MySQL GTID set when
//! known. Ordered by the file's sequence number, then the offset; between positions that
//! both carry GTIDs, [`BinlogPosition::order`] orders by the transactions they include, so
//! positions on a new primary after a failover (other file names, often lower numbers)
//! still compare by history.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use warp_core::{Position, Result};

use crate::gtid_set::GtidSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
    /// MariaDB GTID position (`domain-server-seq`), when the server reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// MySQL GTID set (`gtid_mode=ON`): every transaction at or before the position, as
    /// the server prints `gtid_executed`. A reader resumes from it by GTID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<String>,
    /// Where a reader resuming from here starts its dump, when earlier than the position
    /// itself: the start (file, offset) of an XA transaction prepared before it and not
    /// yet committed or rolled back. Not part of the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<(String, u64)>,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
            gtid: None,
            gtid_set: None,
            resume_at: None,
        }
    }

    /// Where a dump that must deliver everything after this position starts.
    pub fn dump_start(&self) -> (String, u64) {
        self.resume_at
            .clone()
            .unwrap_or_else(|| (self.file.clone(), self.pos))
    }

    pub fn encode(&self) -> Result<Position> {
        Position::encode(self).map(|p| p.with_typed(self.clone()))
    }

    pub fn decode(p: &Position) -> Result<Self> {
        p.decode()
    }

    /// The order of two positions in the source's history: by the transactions their
    /// GTIDs include when both carry them (a position whose transactions another's
    /// include comes first; the same transactions on two servers are the same point),
    /// else by file and offset. Positions with the same transactions in one file are
    /// told apart by offset (heartbeats).
    pub fn order(&self, other: &Self) -> Ordering {
        match self.by_history(other) {
            Some(Ordering::Equal) if self.file != other.file => Ordering::Equal,
            Some(Ordering::Equal) | None => self.cmp(other),
            Some(order) => order,
        }
    }

    /// `None`: no GTIDs to compare, or histories that diverged.
    fn by_history(&self, other: &Self) -> Option<Ordering> {
        let included = |a: bool, b: bool| match (a, b) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        };
        if let (Some(a), Some(b)) = (&self.gtid_set, &other.gtid_set) {
            let (a, b) = (GtidSet::parse(a).ok()?, GtidSet::parse(b).ok()?);
            return included(a.is_subset(&b), b.is_subset(&a));
        }
        if let (Some(a), Some(b)) = (&self.gtid, &other.gtid) {
            let (a, b) = (mariadb_seqs(a), mariadb_seqs(b));
            return included(seqs_within(&a, &b), seqs_within(&b, &a));
        }
        None
    }

    /// `mysql-bin.000042` → 42.
    fn sequence(&self) -> u64 {
        self.file
            .rsplit('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// MariaDB's GTID position (`domain-server-seq` per domain) → the last sequence number
/// per domain (sequence numbers grow per domain whichever server wrote them).
fn mariadb_seqs(text: &str) -> std::collections::BTreeMap<u32, u64> {
    text.split(',')
        .filter_map(|g| {
            let mut parts = g.trim().split('-');
            let domain = parts.next()?.parse().ok()?;
            let seq = parts.nth(1)?.parse().ok()?;
            Some((domain, seq))
        })
        .collect()
}

/// Whether every domain of `a` is in `b` at the same or a later sequence number.
fn seqs_within(
    a: &std::collections::BTreeMap<u32, u64>,
    b: &std::collections::BTreeMap<u32, u64>,
) -> bool {
    a.iter()
        .all(|(d, seq)| b.get(d).is_some_and(|theirs| seq <= theirs))
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence()
            .cmp(&other.sequence())
            .then_with(|| self.file.cmp(&other.file))
            .then_with(|| self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_set(file: &str, pos: u64, set: &str) -> BinlogPosition {
        BinlogPosition {
            gtid_set: Some(set.to_owned()),
            ..BinlogPosition::new(file, pos)
        }
    }

    #[test]
    fn gtid_positions_are_ordered_by_history_across_a_failover() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        // The old primary wrote file 99; the new one numbers its files from 2.
        let old = with_set("mysql-bin.000099", 900, &format!("{uuid}:1-100"));
        let new = with_set("binlog.000002", 300, &format!("{uuid}:1-150"));
        assert_eq!(old.order(&new), Ordering::Less);
        assert_eq!(new.order(&old), Ordering::Greater);
        assert!(old > new, "file order alone has it backwards");
        // The same transactions on both servers are the same point.
        let same = with_set("binlog.000002", 120, &format!("{uuid}:1-100"));
        assert_eq!(old.order(&same), Ordering::Equal);
        // Heartbeats in one file after the same transactions: by offset.
        let later = with_set("mysql-bin.000099", 950, &format!("{uuid}:1-100"));
        assert_eq!(old.order(&later), Ordering::Less);
        // MariaDB: sequence numbers per domain.
        let maria = |file: &str, pos: u64, gtid: &str| BinlogPosition {
            gtid: Some(gtid.to_owned()),
            ..BinlogPosition::new(file, pos)
        };
        let before = maria("mariadb-bin.000040", 10, "0-1-500,1-1-7");
        let after = maria("mariadb-bin.000003", 10, "0-2-510,1-1-7");
        assert_eq!(before.order(&after), Ordering::Less);
        assert_eq!(after.order(&before), Ordering::Greater);
        // No GTIDs: file and offset.
        let plain = BinlogPosition::new("mysql-bin.000001", 4);
        assert_eq!(plain.order(&old), Ordering::Less);
    }

    #[test]
    fn orders_by_file_sequence_then_offset() {
        let a = BinlogPosition::new("mysql-bin.000009", 900);
        let b = BinlogPosition::new("mysql-bin.000010", 4);
        assert!(a < b);
        assert!(BinlogPosition::new("mysql-bin.000010", 5) > b);
        let p = b.encode().unwrap();
        assert_eq!(BinlogPosition::decode(&p).unwrap(), b);
    }
}
