//! Crash points for tests of the durable steps. `WARP_FAILPOINTS="after_commit=3"` makes
//! the process abort, as abruptly as SIGKILL (no drain, no destructors), the third time it
//! passes `after_commit`; several points are separated by commas. Unset, as it always is
//! in production, a point costs one `is_empty` check.
//!
//! Not the `fail` crate: it compiles points out unless a cargo feature is on, which would
//! need a second build of the binary just for these tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The durable steps, in the order a batch passes them. Points are named by these
/// values, so a misspelt point does not compile; `WARP_FAILPOINTS` names them by
/// [`Point::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// A page or change read from the source, not yet written.
    AfterRead,
    /// About to write rows or changes into the destination transaction.
    BeforeWrite,
    /// Written, checkpoint not yet recorded.
    AfterWrite,
    /// Checkpoint recorded in the transaction, COMMIT not yet sent.
    BeforeCommit,
    /// Committed, not yet acknowledged to the engine.
    AfterCommit,
    /// A COPY started and its data sent, not finished.
    InsideCopy,
    /// A table creation or schema change run, its registry entry not yet written.
    InsideDdl,
}

impl Point {
    pub const ALL: [Point; 7] = [
        Self::AfterRead,
        Self::BeforeWrite,
        Self::AfterWrite,
        Self::BeforeCommit,
        Self::AfterCommit,
        Self::InsideCopy,
        Self::InsideDdl,
    ];

    /// The name `WARP_FAILPOINTS` and the abort message use.
    pub fn name(self) -> &'static str {
        match self {
            Self::AfterRead => "after_read",
            Self::BeforeWrite => "before_write",
            Self::AfterWrite => "after_write",
            Self::BeforeCommit => "before_commit",
            Self::AfterCommit => "after_commit",
            Self::InsideCopy => "inside_copy",
            Self::InsideDdl => "inside_ddl",
        }
    }
}

pub const VARIABLE: &str = "WARP_FAILPOINTS";

static ARMED: OnceLock<HashMap<Point, (u64, AtomicU64)>> = OnceLock::new();

fn parse(spec: &str) -> HashMap<Point, (u64, AtomicU64)> {
    let mut armed = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('=').and_then(|(name, n)| {
            let point = Point::ALL.into_iter().find(|p| p.name() == name.trim())?;
            Some((point, n.trim().parse::<u64>().ok().filter(|n| *n > 0)?))
        });
        match parsed {
            Some((point, at)) => {
                armed.insert(point, (at, AtomicU64::new(0)));
            }
            None => eprintln!(
                "{VARIABLE}: ignoring `{item}` (expected <point>=<n>, points: {:?})",
                Point::ALL.map(Point::name)
            ),
        }
    }
    armed
}

/// Passes the crash point `point`; aborts the process if it is armed for this pass.
pub fn hit(point: Point) {
    let armed = ARMED.get_or_init(|| parse(&std::env::var(VARIABLE).unwrap_or_default()));
    // `after_read` runs once per change: unarmed, skip even the hashing of a lookup.
    if armed.is_empty() {
        return;
    }
    if let Some((at, passes)) = armed.get(&point) {
        if passes.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            eprintln!("failpoint {} reached (pass {at}): aborting", point.name());
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_known_points_and_positive_counts() {
        let armed = parse("after_commit=3, inside_copy=1,bogus=2,after_read=0,before_write");
        let mut names: Vec<_> = armed.keys().map(|p| p.name()).collect();
        names.sort_unstable();
        assert_eq!(names, ["after_commit", "inside_copy"]);
        assert_eq!(armed[&Point::AfterCommit].0, 3);
    }
}
