//! MySQL GTID sets (`gtid_mode=ON`): which transactions a position has seen, as the
//! server prints them (`uuid:1-5:7,uuid2:tag:1-3`, MySQL 8.4+ tags included). A
//! checkpoint keeps the set of its position, so a reader resumes with
//! `COM_BINLOG_DUMP_GTID` on whichever server holds those transactions — after a
//! failover the new primary's binlog files have other names and offsets.

use std::collections::BTreeMap;
use std::fmt;

use mysql_async::binlog::events::PreviousGtidsEvent;
use mysql_async::prelude::Queryable;
use mysql_async::{GnoInterval, Sid};
use mysql_common::packets::Tag;
use uuid::Uuid;

use crate::error::MysqlError;
use crate::position::BinlogPosition;

/// How a feed starting at a position follows MySQL GTIDs.
#[derive(Debug)]
pub enum GtidStart {
    /// No GTIDs to follow (MariaDB, or `gtid_mode` not `ON`): file and offset only.
    Off,
    /// Resume with `COM_BINLOG_DUMP_GTID` after the position's set: the server sends
    /// every transaction the set lacks, whatever its binlog files are called.
    Resume(GtidSet),
    /// The position has no set yet (a first start, a checkpoint of an older version):
    /// dump its file from the beginning and learn the set from the file's
    /// PREVIOUS_GTIDS event and the transactions before the position, which are read
    /// again and not handed out. (`SHOW BINARY LOG STATUS` reads its GTID set and its
    /// position one after the other: a transaction committing in between would be
    /// missing from the set, and a GTID resume would send it again, older than rows
    /// already applied.)
    Learn,
    /// Track from the next file's PREVIOUS_GTIDS: the dump starts earlier than the
    /// position for a prepared XA transaction, which decides where it starts.
    Later,
}

impl GtidStart {
    /// The plan for a feed from `from` on the server behind `conn`.
    pub async fn plan(
        conn: &mut mysql_async::Conn,
        from: &BinlogPosition,
    ) -> Result<Self, MysqlError> {
        // MariaDB has no such variable (1193, unknown system variable): its GTIDs are
        // followed separately. Any other failure is an error, not "no GTIDs".
        let mode: Option<String> = match conn.query_first("SELECT @@GLOBAL.gtid_mode").await {
            Ok(mode) => mode,
            Err(mysql_async::Error::Server(e)) if e.code == 1193 => None,
            Err(e) => return Err(MysqlError::from_driver("read gtid_mode", e)),
        };
        if !mode.is_some_and(|m| m.eq_ignore_ascii_case("ON")) {
            return Ok(Self::Off);
        }
        let set = match from.gtid_set.as_deref() {
            Some(text) => GtidSet::parse(text).map_err(|e| MysqlError::Unsupported {
                message: format!("the checkpoint's {e}"),
                hint: Some("resync the table (cartridge-warp resync)".into()),
            })?,
            None => GtidSet::default(),
        };
        Ok(if from.resume_at.is_some() {
            Self::Later
        } else if set.is_empty() {
            Self::Learn
        } else {
            Self::Resume(set)
        })
    }

    /// Whether the reader follows GTIDs from the start of its dump.
    pub fn follows(&self) -> bool {
        !matches!(self, Self::Off)
    }
}

/// Transaction numbers per source (server uuid and tag, `""` when untagged), as sorted,
/// disjoint, non-adjacent closed intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<(Uuid, String), Vec<(u64, u64)>>);

#[derive(Debug, thiserror::Error)]
#[error("bad GTID set {text:?}: {reason}")]
pub struct BadGtidSet {
    text: String,
    reason: String,
}

impl GtidSet {
    /// Parses the text MySQL prints for `gtid_executed` (sets separated by commas and
    /// newlines, intervals by colons, a tag switching the intervals that follow it).
    pub fn parse(text: &str) -> Result<Self, BadGtidSet> {
        let bad = |reason: String| BadGtidSet {
            text: text.to_owned(),
            reason,
        };
        let mut set = Self::default();
        for uuid_set in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut parts = uuid_set.split(':');
            let uuid = parts.next().unwrap_or_default();
            let uuid = Uuid::parse_str(uuid).map_err(|e| bad(format!("{uuid}: {e}")))?;
            let mut tag = String::new();
            let mut intervals = 0;
            for part in parts.map(str::trim) {
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    let (start, end) = part.split_once('-').unwrap_or((part, part));
                    let number = |n: &str| match n.parse::<u64>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(bad(format!("{part} is not an interval of GTIDs"))),
                    };
                    let (start, end) = (number(start)?, number(end)?);
                    if start > end {
                        return Err(bad(format!("{part} is an empty interval")));
                    }
                    set.insert(uuid, &tag, start, end);
                    intervals += 1;
                } else {
                    // Tags are case-insensitive; the server prints them in lower case.
                    let lower = part.to_ascii_lowercase();
                    Tag::new(lower.as_str()).map_err(|e| bad(format!("tag {part:?}: {e}")))?;
                    tag = lower;
                }
            }
            if intervals == 0 {
                return Err(bad(format!("{uuid_set} names no transactions")));
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every transaction of `self` is in `other`.
    pub fn is_subset(&self, other: &GtidSet) -> bool {
        self.0.iter().all(|(source, intervals)| {
            let Some(theirs) = other.0.get(source) else {
                return false;
            };
            intervals
                .iter()
                .all(|&(s, e)| theirs.iter().any(|&(os, oe)| os <= s && e <= oe))
        })
    }

    /// Records one transaction (`uuid[:tag]:gno`).
    pub fn add(&mut self, uuid: [u8; 16], tag: Option<&str>, gno: u64) {
        self.insert(Uuid::from_bytes(uuid), tag.unwrap_or_default(), gno, gno);
    }

    /// Adds every transaction of `other`.
    pub fn union(&mut self, other: &GtidSet) {
        for ((uuid, tag), intervals) in &other.0 {
            for &(start, end) in intervals {
                self.insert(*uuid, tag, start, end);
            }
        }
    }

    fn insert(&mut self, uuid: Uuid, tag: &str, start: u64, end: u64) {
        let intervals = self.0.entry((uuid, tag.to_owned())).or_default();
        // Transactions arrive in order: almost always they extend the last interval.
        if let Some(last) = intervals.last_mut() {
            if last.0 <= start && start <= last.1.saturating_add(1) {
                last.1 = last.1.max(end);
                return;
            }
        }
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(m) if s <= m.1.saturating_add(1) => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }

    /// The set a PREVIOUS_GTIDS event carries: every transaction before its file.
    pub fn previous(event: &PreviousGtidsEvent<'_>) -> Self {
        let mut set = Self::default();
        for sid in event.sids() {
            let uuid = Uuid::from_bytes(sid.uuid());
            let tag = sid.tag().map(|t| t.as_str()).unwrap_or_default();
            for interval in sid.intervals() {
                if interval.end() > interval.start() {
                    set.insert(uuid, tag, interval.start(), interval.end() - 1);
                }
            }
        }
        set
    }

    /// The set as `COM_BINLOG_DUMP_GTID` carries it (intervals end-exclusive).
    pub fn sids(&self) -> Vec<Sid<'static>> {
        self.0
            .iter()
            .map(|((uuid, tag), intervals)| {
                let sid = Sid::new(*uuid.as_bytes()).with_intervals(
                    intervals
                        .iter()
                        .map(|&(s, e)| GnoInterval::new(s, e + 1))
                        .collect(),
                );
                match Tag::new(tag.clone()) {
                    Ok(tag) => sid.with_tag(tag),
                    Err(_) => sid,
                }
            })
            .collect()
    }
}

/// As MySQL prints it: one entry per uuid, its untagged intervals first, then each tag
/// with its intervals.
impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last: Option<Uuid> = None;
        for ((uuid, tag), intervals) in &self.0 {
            if last != Some(*uuid) {
                if last.is_some() {
                    f.write_str(",")?;
                }
                write!(f, "{}", uuid.hyphenated())?;
                last = Some(*uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(s, e) in intervals {
                if s == e {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{e}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "4f8c6a2e-0b1d-11ef-8a5c-0242ac120002";

    fn uuid(s: &str) -> [u8; 16] {
        *Uuid::parse_str(s).unwrap().as_bytes()
    }

    #[test]
    fn reads_and_prints_sets_as_the_server_prints_them() {
        // `SELECT @@gtid_executed` on MySQL 8.4 with two sources and a tag.
        let printed = format!("{A}:1-57:60,\n{B}:1-3:7:domain_1:1-2:hot:5");
        let set = GtidSet::parse(&printed).unwrap();
        assert_eq!(
            set.to_string(),
            format!("{A}:1-57:60,{B}:1-3:7:domain_1:1-2:hot:5")
        );
        assert_eq!(GtidSet::parse(&set.to_string()).unwrap(), set);
        // Upper-case uuids and tags read the same.
        let shouted = GtidSet::parse(&format!("{}:1-57:60", A.to_uppercase())).unwrap();
        assert_eq!(shouted.to_string(), format!("{A}:1-57:60"));
        assert!(GtidSet::parse("").unwrap().is_empty());
        for bad in [
            "nonsense:1-2".to_owned(),
            A.to_owned(),
            format!("{A}:0-3"),
            format!("{A}:5-3"),
            format!("{A}:1-x"),
            format!("{A}:Bad-Tag:1"),
        ] {
            assert!(GtidSet::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transactions_extend_and_join_the_intervals() {
        let mut set = GtidSet::parse(&format!("{A}:1-5:9")).unwrap();
        set.add(uuid(A), None, 6);
        assert_eq!(set.to_string(), format!("{A}:1-6:9"));
        set.add(uuid(A), None, 8);
        assert_eq!(set.to_string(), format!("{A}:1-6:8-9"));
        set.add(uuid(A), None, 7);
        assert_eq!(set.to_string(), format!("{A}:1-9"));
        set.add(uuid(A), None, 3);
        assert_eq!(set.to_string(), format!("{A}:1-9"));
        set.add(uuid(B), Some("hot"), 1);
        set.add(uuid(B), None, 4);
        assert_eq!(set.to_string(), format!("{A}:1-9,{B}:4:hot:1"));
        let mut other = GtidSet::parse(&format!("{A}:10-20,{B}:1-3")).unwrap();
        other.union(&set);
        assert_eq!(other.to_string(), format!("{A}:1-20,{B}:1-4:hot:1"));
    }

    #[test]
    fn the_dump_request_carries_the_set_end_exclusive() {
        let set = GtidSet::parse(&format!("{A}:1-57:60,{B}:hot:5")).unwrap();
        let sids = set.sids();
        assert_eq!(sids.len(), 2);
        // mysql_common prints a sid as the server does: the same text back.
        assert_eq!(sids[0].to_string(), format!("{A}:1-57:60"));
        assert_eq!(sids[1].to_string(), format!("{B}:hot:5"));
        assert_eq!(
            (sids[0].intervals()[0].start(), sids[0].intervals()[0].end()),
            (1, 58)
        );
    }
}
