//! XA transactions in the binlog. `XA PREPARE` writes a transaction's row events (ended
//! by an XA_PREPARE event, not an XID); `XA COMMIT <xid>` or `XA ROLLBACK <xid>` follows
//! later as a statement of its own, with other transactions between. A prepared
//! transaction is held until its outcome: committed, its changes apply at the position
//! of the `XA COMMIT`; rolled back, they are dropped.
//!
//! Restarts: while a transaction is prepared, every position the reader hands out names
//! where that transaction began (`xa_resume`), and a reader resuming from such a position
//! starts its dump there, so it reads the prepared changes again (the transactions in
//! between are at or before the tables' checkpoints and are dropped by the engine).

use warp_core::TableChange;

use crate::position::BinlogPosition;

/// An XA statement, with its xid as written (`X'…',X'…',n`, spacing and case dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XaStatement {
    Start(String),
    End,
    /// `XA COMMIT … ONE PHASE`: the transaction just read commits without a prepare.
    CommitOnePhase,
    Commit(String),
    Rollback(String),
}

impl XaStatement {
    pub fn parse(sql: &str) -> Option<Self> {
        let words: Vec<&str> = sql.split_whitespace().collect();
        let [xa, verb, rest @ ..] = words.as_slice() else {
            return None;
        };
        if !xa.eq_ignore_ascii_case("XA") {
            return None;
        }
        let upper: Vec<String> = rest.iter().map(|w| w.to_ascii_uppercase()).collect();
        let one_phase = upper.ends_with(&["ONE".to_owned(), "PHASE".to_owned()]);
        let xid_words = if one_phase {
            &upper[..upper.len() - 2]
        } else {
            &upper[..]
        };
        let xid = xid_words.concat();
        match verb.to_ascii_uppercase().as_str() {
            "START" | "BEGIN" => Some(Self::Start(without_join(xid))),
            "END" => Some(Self::End),
            "COMMIT" if one_phase => Some(Self::CommitOnePhase),
            "COMMIT" => Some(Self::Commit(xid)),
            "ROLLBACK" => Some(Self::Rollback(xid)),
            _ => None,
        }
    }
}

/// MariaDB writes no `XA START` statement: the transaction's GTID event carries the
/// xid, flagged `FL_PREPARED_XA`. Its body: seq_no (8), domain (4), flags2 (1), the
/// commit id (8) when `FL_GROUP_COMMIT_ID`, then formatID (4), gtrid and bqual lengths
/// (1 each) and their bytes. Returns the xid as `XA COMMIT` writes it.
pub fn mariadb_xa_start(gtid_event: &[u8]) -> Option<String> {
    const FL_GROUP_COMMIT_ID: u8 = 2;
    const FL_PREPARED_XA: u8 = 64;
    let flags = *gtid_event.get(12)?;
    if flags & FL_PREPARED_XA == 0 {
        return None;
    }
    let at = if flags & FL_GROUP_COMMIT_ID != 0 {
        21
    } else {
        13
    };
    let format = u32::from_le_bytes(gtid_event.get(at..at + 4)?.try_into().ok()?);
    let gtrid = usize::from(*gtid_event.get(at + 4)?);
    let bqual = usize::from(*gtid_event.get(at + 5)?);
    let data = gtid_event.get(at + 6..at + 6 + gtrid + bqual)?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    Some(format!(
        "X'{}',X'{}',{format}",
        hex(&data[..gtrid]),
        hex(&data[gtrid..])
    ))
}

/// `XA START xid JOIN|RESUME` names the same transaction.
fn without_join(xid: String) -> String {
    xid.strip_suffix("JOIN")
        .or_else(|| xid.strip_suffix("RESUME"))
        .map_or(xid.clone(), str::to_owned)
}

/// A prepared transaction awaiting its outcome.
struct Prepared {
    xid: String,
    changes: Vec<TableChange>,
    /// Where its first event begins: a resumed reader starts here to read it again.
    start: BinlogPosition,
}

/// The XA transactions of one reader: the one being read, and those prepared.
#[derive(Default)]
pub struct XaLedger {
    /// The xid of the transaction between `XA START` and its prepare.
    reading: Option<String>,
    prepared: Vec<Prepared>,
}

impl XaLedger {
    pub fn start(&mut self, xid: String) {
        self.reading = Some(xid);
    }

    /// Whether an XA transaction is being read (its changes wait for the prepare).
    pub fn reading(&self) -> bool {
        self.reading.is_some()
    }

    /// The transaction read since `XA START` is prepared with `changes`; it began at
    /// `start`. A prepare without a started transaction (the reader began inside it)
    /// returns false.
    pub fn prepare(&mut self, changes: Vec<TableChange>, start: BinlogPosition) -> bool {
        let Some(xid) = self.reading.take() else {
            return false;
        };
        self.prepared.push(Prepared {
            xid,
            changes,
            start,
        });
        true
    }

    /// The one-phase commit of the transaction being read.
    pub fn commit_one_phase(&mut self) {
        self.reading = None;
    }

    /// The changes of prepared `xid`, now committed; `None` when it was prepared before
    /// this reader's start.
    pub fn commit(&mut self, xid: &str) -> Option<Vec<TableChange>> {
        let i = self.prepared.iter().position(|p| p.xid == xid)?;
        Some(self.prepared.remove(i).changes)
    }

    /// Drops prepared `xid` (or the one being read); true when it was known.
    pub fn rollback(&mut self, xid: &str) -> bool {
        if self.reading.as_deref() == Some(xid) {
            self.reading = None;
            return true;
        }
        let before = self.prepared.len();
        self.prepared.retain(|p| p.xid != xid);
        before != self.prepared.len()
    }

    /// Where a resumed reader must start to read every prepared transaction again.
    pub fn resume_from(&self) -> Option<BinlogPosition> {
        self.prepared.iter().map(|p| p.start.clone()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_read_with_their_xid() {
        use XaStatement::*;
        assert_eq!(
            XaStatement::parse("XA START X'61',X'',1"),
            Some(Start("X'61',X'',1".into()))
        );
        assert_eq!(
            XaStatement::parse("xa  begin X'61', X'', 1 join"),
            Some(Start("X'61',X'',1".into()))
        );
        assert_eq!(XaStatement::parse("XA END X'61',X'',1"), Some(End));
        assert_eq!(
            XaStatement::parse("XA COMMIT X'61',X'',1"),
            Some(Commit("X'61',X'',1".into()))
        );
        assert_eq!(
            XaStatement::parse("XA COMMIT X'61',X'',1 ONE PHASE"),
            Some(CommitOnePhase)
        );
        assert_eq!(
            XaStatement::parse("XA ROLLBACK X'61',X'',1"),
            Some(Rollback("X'61',X'',1".into()))
        );
        assert_eq!(XaStatement::parse("COMMIT"), None);
        assert_eq!(XaStatement::parse("ALTER TABLE xa ADD COLUMN c INT"), None);
    }

    #[test]
    fn mariadb_gtid_events_name_the_xa_transaction_they_start() {
        // GTID 0-1-32340 of `XA START 'cw_xa_gone'` (flags2: transactional | prepared XA).
        let mut event = 32340u64.to_le_bytes().to_vec();
        event.extend(0u32.to_le_bytes());
        event.push(4 | 64);
        event.extend(1u32.to_le_bytes());
        event.extend([10, 0]);
        event.extend(b"cw_xa_gone");
        let xid = mariadb_xa_start(&event).unwrap();
        assert_eq!(
            XaStatement::parse("XA COMMIT X'63775f78615f676f6e65',X'',1"),
            Some(XaStatement::Commit(xid))
        );
        // A plain transaction's GTID event, and one with a group-commit id.
        event[12] = 4;
        assert_eq!(mariadb_xa_start(&event), None);
        let mut grouped = event[..13].to_vec();
        grouped[12] = 2 | 64;
        grouped.extend(7u64.to_le_bytes());
        grouped.extend(event[13..].iter());
        assert_eq!(
            mariadb_xa_start(&grouped).as_deref(),
            Some("X'63775F78615F676F6E65',X'',1")
        );
    }

    #[test]
    fn the_earliest_prepared_transaction_is_where_a_reader_resumes() {
        let mut l = XaLedger::default();
        assert_eq!(l.resume_from(), None);
        l.start("a".into());
        assert!(l.prepare(Vec::new(), BinlogPosition::new("b.000002", 400)));
        l.start("b".into());
        assert!(l.prepare(Vec::new(), BinlogPosition::new("b.000002", 900)));
        assert_eq!(l.resume_from(), Some(BinlogPosition::new("b.000002", 400)));
        assert!(l.commit("a").is_some());
        assert_eq!(l.resume_from(), Some(BinlogPosition::new("b.000002", 900)));
        assert!(l.rollback("b"));
        assert_eq!(l.resume_from(), None);
        assert!(l.commit("zz").is_none());
        assert!(!l.prepare(Vec::new(), BinlogPosition::new("b.000002", 999)));
    }
}
