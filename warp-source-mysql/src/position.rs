//! Binlog positions: file and offset, with the MariaDB GTID or the MySQL GTID set when
//! known. Ordered by the file's sequence number, then the offset.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use warp_core::{Position, Result};

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
        Position::encode(self)
    }

    pub fn decode(p: &Position) -> Result<Self> {
        p.decode()
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
