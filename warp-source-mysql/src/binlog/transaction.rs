//! Transaction assembly: the changes of the source transaction being read, handed out at
//! its commit (or in fragments when it is large), with what savepoints, rollbacks and XA
//! statements do to them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use warp_core::{FeedItem, TableChange};

use super::{Reader, Served};
use crate::position::BinlogPosition;
use crate::xa::XaStatement;

/// The source transaction being read.
pub(super) struct Transaction {
    /// Changes read and not handed out yet.
    pub(super) pending: Vec<TableChange>,
    /// Its time at the source (its first event's).
    pub(super) ts: Option<DateTime<Utc>>,
    /// Where it began (the end of the one before it).
    pub(super) boundary: BinlogPosition,
    /// Its savepoints, with how many of its changes were read before each.
    savepoints: Vec<(String, usize)>,
    /// Changes already handed out (fragments of a large transaction): a rollback cannot
    /// take them back.
    handed_out: usize,
    /// The tables those changes belong to.
    handed_tables: BTreeSet<usize>,
}

impl Transaction {
    pub(super) fn new(boundary: BinlogPosition) -> Self {
        Self {
            pending: Vec::new(),
            ts: None,
            boundary,
            savepoints: Vec::new(),
            handed_out: 0,
            handed_tables: BTreeSet::new(),
        }
    }

    /// `BEGIN`.
    pub(super) fn begin(&mut self, ts: Option<DateTime<Utc>>) {
        self.ts = ts;
        self.savepoints.clear();
    }

    /// The transaction ended at `at`: its changes not handed out yet, and its time.
    pub(super) fn end(&mut self, at: BinlogPosition) -> (Vec<TableChange>, Option<DateTime<Utc>>) {
        self.boundary = at;
        self.handed_out = 0;
        self.handed_tables.clear();
        (std::mem::take(&mut self.pending), self.ts.take())
    }

    /// An XA transaction prepared at `at`: its changes are set aside until its outcome,
    /// with the position it began at; the next transaction begins here.
    pub(super) fn set_aside(&mut self, at: BinlogPosition) -> (Vec<TableChange>, BinlogPosition) {
        self.ts = None;
        let began = std::mem::replace(&mut self.boundary, at);
        (std::mem::take(&mut self.pending), began)
    }

    /// The changes read so far when there are `limit` of them: a large transaction is
    /// handed out in fragments so it never has to fit in memory.
    pub(super) fn fragment(&mut self, limit: usize) -> Option<Vec<TableChange>> {
        if self.pending.len() < limit {
            return None;
        }
        self.handed_out += self.pending.len();
        self.handed_tables
            .extend(self.pending.iter().map(|c| c.table));
        Some(std::mem::take(&mut self.pending))
    }

    /// Applies a savepoint or rollback: the transactional tables' changes after the
    /// point are dropped, the others' stay (as at the source). Returns the transactional
    /// tables whose undone changes were handed out already.
    fn undo(&mut self, undo: &Undo, tables: &Served) -> Vec<usize> {
        let transactional = |i: usize| {
            tables
                .get(i)
                .and_then(Option::as_ref)
                .map(|t| t.transactional)
        };
        let read = self.handed_out + self.pending.len();
        let from = match undo {
            Undo::Savepoint(name) => {
                self.savepoints.push((name.clone(), read));
                return Vec::new();
            }
            Undo::Rollback => 0,
            Undo::RollbackTo(name) => match self.savepoints.iter().rposition(|(n, _)| n == name) {
                Some(at) => {
                    self.savepoints.truncate(at + 1);
                    self.savepoints[at].1
                }
                // Set before this reader's first event: the whole transaction so far.
                None => 0,
            },
        };
        let lost = if from < self.handed_out {
            (self.handed_tables.iter().copied())
                .filter(|&i| transactional(i) == Some(true))
                .collect()
        } else {
            Vec::new()
        };
        let from = from.saturating_sub(self.handed_out).min(self.pending.len());
        let kept: Vec<TableChange> = (self.pending.drain(from..))
            .filter(|c| transactional(c.table) == Some(false))
            .collect();
        self.pending.extend(kept);
        if *undo == Undo::Rollback {
            self.savepoints.clear();
        }
        lost
    }
}

/// A statement that undoes part of the transaction being read (upper-cased text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Undo {
    Savepoint(String),
    RollbackTo(String),
    Rollback,
}

impl Undo {
    pub(super) fn parse(upper: &str) -> Option<Self> {
        let words: Vec<&str> = upper.split_whitespace().collect();
        let name = |w: &str| w.trim_matches('`').to_owned();
        match words.as_slice() {
            ["ROLLBACK"] | ["ROLLBACK", "WORK"] => Some(Self::Rollback),
            ["SAVEPOINT", sp] => Some(Self::Savepoint(name(sp))),
            ["ROLLBACK", "TO", "SAVEPOINT", sp] | ["ROLLBACK", "TO", sp] => {
                Some(Self::RollbackTo(name(sp)))
            }
            ["ROLLBACK", "WORK", "TO", "SAVEPOINT", sp] | ["ROLLBACK", "WORK", "TO", sp] => {
                Some(Self::RollbackTo(name(sp)))
            }
            _ => None,
        }
    }
}

impl Reader {
    /// A rollback the server logged: a transaction that also changed non-transactional
    /// tables (their changes stay) is written whole and ended by `ROLLBACK`, a partial
    /// rollback by `ROLLBACK TO SAVEPOINT`.
    pub(super) fn undo(
        &mut self,
        undo: Undo,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Option<FeedItem>> {
        for index in self.txn.undo(&undo, &self.served.tables) {
            // Those tables are copied again rather than left with changes the source
            // rolled back.
            let table = self.served.name(index);
            self.fail(
                index,
                warp_core::Error::Replaced {
                    table,
                    how: "rolled back in part after a large transaction's changes were handed out"
                        .to_owned(),
                },
            );
        }
        if undo == Undo::Rollback {
            return self.commit(log_pos, ts);
        }
        Ok(None)
    }

    /// An XA statement: `Some` when it completes something to hand to the engine.
    pub(super) fn xa_statement(
        &mut self,
        xa: XaStatement,
        log_pos: u32,
        ts: Option<DateTime<Utc>>,
    ) -> warp_core::Result<Option<FeedItem>> {
        match xa {
            XaStatement::Start(xid) => {
                self.xa.start(xid);
                self.txn.ts = ts;
                Ok(None)
            }
            XaStatement::End => Ok(None),
            XaStatement::CommitOnePhase => {
                self.xa.commit_one_phase();
                self.commit(log_pos, ts)
            }
            XaStatement::Commit(xid) => match self.xa.commit(&xid) {
                Some(changes) => {
                    self.txn.pending = changes;
                    self.commit(log_pos, ts)
                }
                None if self.replaying(log_pos) => self.commit(log_pos, ts),
                None => {
                    // Prepared before this reader's first position: its changes are not
                    // in the rows copied (uncommitted then) and not read here.
                    let error = || {
                        warp_core::Error::source_permanent(
                            format!("XA transaction {xid} was prepared before this table's start position and committed after it; its changes cannot be read"),
                            Some("resync the table (cartridge-warp resync) once no XA transaction is prepared at the source (XA RECOVER)".to_owned()),
                        )
                    };
                    for index in self.served.live() {
                        self.fail(index, error());
                    }
                    self.commit(log_pos, ts)
                }
            },
            XaStatement::Rollback(xid) => {
                self.xa.rollback(&xid);
                self.txn.pending.clear();
                self.commit(log_pos, ts)
            }
        }
    }

    /// An XA PREPARE event: the transaction's changes wait for its outcome.
    pub(super) fn xa_prepared(&mut self, log_pos: u32) -> warp_core::Result<()> {
        let at = BinlogPosition::new(self.file.clone(), u64::from(log_pos));
        let (changes, began) = self.txn.set_aside(at);
        if self.xa.prepare(changes, began) {
            return Ok(());
        }
        Err(warp_core::Error::source_permanent(
            format!(
                "{}: an XA PREPARE without its XA START in the binlog",
                self.file
            ),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Undo;

    #[test]
    fn rollbacks_and_savepoints_are_read_from_their_statements() {
        assert_eq!(Undo::parse("ROLLBACK"), Some(Undo::Rollback));
        assert_eq!(Undo::parse("ROLLBACK WORK"), Some(Undo::Rollback));
        assert_eq!(
            Undo::parse("SAVEPOINT `SP1`"),
            Some(Undo::Savepoint("SP1".into()))
        );
        assert_eq!(
            Undo::parse("ROLLBACK TO SAVEPOINT SP1"),
            Some(Undo::RollbackTo("SP1".into()))
        );
        assert_eq!(
            Undo::parse("ROLLBACK WORK TO `SP1`"),
            Some(Undo::RollbackTo("SP1".into()))
        );
        assert_eq!(Undo::parse("COMMIT"), None);
        assert_eq!(Undo::parse("ROLLBACK_TABLE_X"), None);
    }
}
