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

/// The durable steps, in the order a batch passes them.
pub const POINTS: &[&str] = &[
    // a page or change read from the source, not yet written
    "after_read",
    // about to write rows or changes into the destination transaction
    "before_write",
    // written, checkpoint not yet recorded
    "after_write",
    // checkpoint recorded in the transaction, COMMIT not yet sent
    "before_commit",
    // committed, not yet acknowledged to the engine
    "after_commit",
    // a COPY started and its data sent, not finished
    "inside_copy",
    // a table creation or schema change run, its registry entry not yet written
    "inside_ddl",
];

pub const VARIABLE: &str = "WARP_FAILPOINTS";

static ARMED: OnceLock<HashMap<&'static str, (u64, AtomicU64)>> = OnceLock::new();

fn parse(spec: &str) -> HashMap<&'static str, (u64, AtomicU64)> {
    let mut armed = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('=').and_then(|(name, n)| {
            let point = POINTS.iter().find(|p| **p == name.trim())?;
            Some((*point, n.trim().parse::<u64>().ok().filter(|n| *n > 0)?))
        });
        match parsed {
            Some((point, at)) => {
                armed.insert(point, (at, AtomicU64::new(0)));
            }
            None => eprintln!(
                "{VARIABLE}: ignoring `{item}` (expected <point>=<n>, points: {POINTS:?})"
            ),
        }
    }
    armed
}

/// Passes the crash point `point`; aborts the process if it is armed for this pass.
pub fn hit(point: &'static str) {
    let armed = ARMED.get_or_init(|| parse(&std::env::var(VARIABLE).unwrap_or_default()));
    // `after_read` runs once per change: unarmed, skip even the hashing of a lookup.
    if armed.is_empty() {
        return;
    }
    if let Some((at, passes)) = armed.get(point) {
        if passes.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            eprintln!("failpoint {point} reached (pass {at}): aborting");
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
        let mut names: Vec<_> = armed.keys().copied().collect();
        names.sort_unstable();
        assert_eq!(names, ["after_commit", "inside_copy"]);
        assert_eq!(armed["after_commit"].0, 3);
    }
}
