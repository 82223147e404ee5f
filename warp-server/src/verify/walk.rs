//! One table's comparison, range by range: memory holds one range of each side whatever
//! the table's size.
//!
//! Two passes. The source's ranges (its own key order, so collations never misplace a
//! key) are read one at a time, and the destination's rows under the same keys beside
//! them: that finds rows missing or different at the destination. Then the
//! destination's live keys are read page by page and the source is asked which of them it
//! holds: that finds rows the destination keeps that the source no longer has.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use warp_core::{Error, Fix, Key, OrdKey, Repaired};

use super::compare::{differences, narrow, Entry, Side};
use super::read::{fixes, Reader};
use super::{TableReport, VerifyOptions};

/// Destination keys per page of the second pass.
const KEY_PAGE: usize = 1000;
/// Mismatched ranges listed per table; the rest are counted only.
const RANGES_LISTED: usize = 200;

/// How a walk is paced between ranges: `verify` runs unpaced; background verification
/// keeps to a budget of rows per second and waits while its table is busy.
pub trait Pace: Send + Sync {
    /// Rows per second at most (`None`: as fast as the reads go).
    fn rows_per_second(&self) -> Option<f64>;
    /// Returns once the table may be read (background verification waits while its
    /// table copies or lags); `false`: give the walk up (shutdown, table gone).
    fn ready(&self) -> impl std::future::Future<Output = bool> + Send;
}

/// `verify`'s pace: none.
pub struct Unpaced;

impl Pace for Unpaced {
    fn rows_per_second(&self) -> Option<f64> {
        None
    }

    async fn ready(&self) -> bool {
        true
    }
}

/// Rows read so far against the budget.
struct Clock {
    started: Instant,
    rows: u64,
}

impl Clock {
    /// Sleeps until `rows` more fit the budget.
    async fn spend(&mut self, rows: u64, pace: &impl Pace) {
        self.rows += rows;
        if let Some(rate) = pace.rows_per_second().filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(self.rows as f64 / rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Compares the table `reader` reads; fills `report`. Returns `false` when the pace gave
/// the walk up before it finished.
pub async fn table(
    reader: &Reader<'_>,
    opts: &VerifyOptions,
    pace: &impl Pace,
    report: &mut TableReport,
) -> Result<bool, Error> {
    let mut clock = Clock {
        started: Instant::now(),
        rows: 0,
    };
    if !pace.ready().await {
        return Ok(false);
    }
    for range in reader.plan(opts.range_rows).await? {
        if !pace.ready().await {
            return Ok(false);
        }
        let rows = one_range(reader, &range, opts, report).await?;
        clock.spend(rows, pace).await;
    }
    let mut after: Option<Key> = None;
    loop {
        if !pace.ready().await {
            return Ok(false);
        }
        let page = reader.destination_keys(after.as_ref(), KEY_PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let read = page.len() as u64;
        report.destination_rows += read;
        if !gone_at_source(reader, page, opts, report).await? {
            report.extra_rows_checked = false;
            break;
        }
        clock.spend(read, pace).await;
    }
    Ok(true)
}

/// One source range against the destination's rows under its keys. Returns the rows read.
async fn one_range(
    reader: &Reader<'_>,
    range: &warp_core::KeyRange,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<u64, Error> {
    let (mut src, mut dst) = reader.range(range, &BTreeSet::new(), opts.catch_up).await?;
    let mut suspects: BTreeSet<OrdKey> = differences(&src, &dst).into_keys().collect();
    let mut confirmed = BTreeSet::new();
    for _ in 1..opts.rounds.max(2) {
        if suspects.is_empty() {
            break;
        }
        tokio::time::sleep(opts.recheck_delay).await;
        // Source rows are kept for every key still in question: a repair needs them.
        let watched: BTreeSet<OrdKey> = suspects.union(&confirmed).cloned().collect();
        let (s2, d2) = reader.range(range, &watched, opts.catch_up).await?;
        let now: BTreeSet<OrdKey> = differences(&s2, &d2)
            .into_keys()
            .filter(|k| watched.contains(k))
            .collect();
        // Still different, and neither side moved since the last read: a real mismatch.
        let held = |k: &OrdKey| src.same(&s2, k) && dst.same(&d2, k);
        confirmed = now.iter().filter(|k| held(k)).cloned().collect();
        suspects = now.difference(&confirmed).cloned().collect();
        (src, dst) = (s2, d2);
    }
    // A row gone at the source meanwhile is the second pass's to judge (counted once).
    confirmed.retain(|k| src.rows.contains_key(k));
    suspects.retain(|k| src.rows.contains_key(k));
    report.unsettled_rows += suspects.len() as u64;
    if opts.repair && !confirmed.is_empty() {
        let fixes = fixes(&src, &dst, &confirmed);
        report.count_repair(reader.repair(&fixes).await?);
        // Read again: whatever still differs among the repaired rows stays reported.
        (src, dst) = reader.range(range, &BTreeSet::new(), opts.catch_up).await?;
        confirmed = differences(&src, &dst)
            .into_keys()
            .filter(|k| confirmed.contains(k) && src.rows.contains_key(k))
            .collect();
    }
    report.source_rows += src.live_rows();
    report.ranges_checked += 1;
    // Only confirmed differences count: the others are made equal before narrowing.
    dst.settle(&src, &confirmed);
    let (_, found) = narrow(&src, &dst, opts.range_keys);
    report.add_mismatches(found);
    Ok(src.rows.len() as u64)
}

/// Finds which keys of a page of live destination rows the source no longer holds, and
/// confirms them as the ranges do: still gone at the source and unchanged at the
/// destination across re-reads. `false`: the source cannot look keys up.
async fn gone_at_source(
    reader: &Reader<'_>,
    page: Vec<(Key, i64)>,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<bool, Error> {
    let keys: Vec<Key> = page.iter().map(|(k, _)| k.clone()).collect();
    let Some(held) = reader.held_at_source(&keys).await? else {
        return Ok(false);
    };
    let mut suspects: BTreeMap<OrdKey, i64> = page
        .into_iter()
        .map(|(k, v)| (OrdKey(k), v))
        .filter(|(k, _)| !held.contains(k))
        .collect();
    let mut confirmed = BTreeMap::new();
    for _ in 1..opts.rounds.max(2) {
        if suspects.is_empty() {
            break;
        }
        tokio::time::sleep(opts.recheck_delay).await;
        let watched: BTreeMap<OrdKey, i64> =
            suspects.clone().into_iter().chain(confirmed).collect();
        let now = still_gone(reader, &watched, opts.catch_up).await?;
        // Unchanged at the destination since the last read: a real extra row.
        (confirmed, suspects) = now
            .into_iter()
            .partition(|(k, v)| watched.get(k) == Some(v));
    }
    report.unsettled_rows += suspects.len() as u64;
    if opts.repair && !confirmed.is_empty() {
        let fixes: Vec<Fix> = confirmed
            .iter()
            .map(|(k, v)| Fix {
                key: k.0.clone(),
                source: None,
                seen_version: Some(*v),
            })
            .collect();
        report.count_repair(reader.repair(&fixes).await?);
        confirmed = still_gone(reader, &confirmed, opts.catch_up).await?;
    }
    let extra = Side {
        rows: confirmed
            .into_iter()
            .map(|(k, v)| {
                let entry = Entry {
                    hash: Some(0),
                    version: Some(v),
                    row: None,
                };
                (k, entry)
            })
            .collect(),
    };
    let (_, found) = narrow(&Side::default(), &extra, opts.range_keys);
    report.add_mismatches(found);
    Ok(true)
}

/// Of `keys`, those the source does not hold and the destination keeps live, with their
/// destination versions now.
async fn still_gone(
    reader: &Reader<'_>,
    keys: &BTreeMap<OrdKey, i64>,
    catch_up: Duration,
) -> Result<BTreeMap<OrdKey, i64>, Error> {
    let list: Vec<Key> = keys.keys().map(|k| k.0.clone()).collect();
    let held = reader.held_at_source(&list).await?.unwrap_or_default();
    reader.settle_point(catch_up).await?;
    let dest = reader.destination_rows(&list).await?;
    Ok(dest
        .rows
        .into_iter()
        .filter(|(k, e)| e.hash.is_some() && !held.contains(k))
        .filter_map(|(k, e)| e.version.map(|v| (k, v)))
        .collect())
}

impl TableReport {
    fn add_mismatches(&mut self, found: Vec<super::Mismatch>) {
        for m in found {
            self.mismatched_rows += m.missing + m.extra + m.different;
            self.mismatched_ranges += 1;
            if self.mismatches.len() < RANGES_LISTED {
                self.mismatches.push(m);
            }
        }
    }

    fn count_repair(&mut self, done: Repaired) {
        let total = self.repaired.get_or_insert_with(Default::default);
        total.written += done.written;
        total.deleted += done.deleted;
        total.skipped += done.skipped;
    }
}
