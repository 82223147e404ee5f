//! Failpoints: make the next N calls at a point fail, optionally for one table only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Retry};

/// Places where a double can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    Discover,
    PlanSnapshot,
    ReadChunk,
    /// Inside a chunk's row stream, after the first page.
    ChunkRows,
    OpenStream,
    /// The stream yields an error instead of its next fragment.
    StreamNext,
    Prepare,
    EnsureTable,
    Begin,
    WriteSnapshot,
    Apply,
    /// Before the checkpoint commit (nothing of the transaction lands).
    Commit,
    /// A checkpoint saved apart from its data ([`crate::Committed::Separately`]): the
    /// data landed, the checkpoint does not.
    SaveCheckpoint,
}

#[derive(Debug, Clone)]
struct Armed {
    table: Option<String>,
    remaining: u32,
    retry: Retry,
}

/// Shared failpoint registry.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<HashMap<FailPoint, Vec<Armed>>>>);

impl Faults {
    /// The next `times` calls at `point` (for `table`, or any table) fail with a
    /// transient or permanent error.
    pub fn arm(&self, point: FailPoint, table: Option<&str>, times: u32, retry: Retry) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(point).or_default().push(Armed {
            table: table.map(str::to_owned),
            remaining: times,
            retry,
        });
    }

    /// Called by the doubles: fails if an armed fault matches.
    pub fn check(&self, point: FailPoint, table: &str, sink: bool) -> Result<(), Error> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = map.get_mut(&point) else {
            return Ok(());
        };
        let Some(armed) = list
            .iter_mut()
            .find(|a| a.remaining > 0 && a.table.as_deref().is_none_or(|t| t == table))
        else {
            return Ok(());
        };
        armed.remaining -= 1;
        let msg = format!("injected failure at {point:?} on {table}");
        Err(match (sink, armed.retry) {
            (false, Retry::Transient) => Error::source_transient(msg),
            (false, Retry::Permanent) => Error::source_permanent(msg, None),
            (true, Retry::Transient) => Error::sink_transient(msg),
            (true, Retry::Permanent) => Error::sink_permanent(msg, None),
        })
    }

    /// How many armed failures at `point` have not fired yet.
    pub fn pending(&self, point: FailPoint) -> u32 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&point)
            .map_or(0, |l| l.iter().map(|a| a.remaining).sum())
    }
}
