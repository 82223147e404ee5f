//! Comparing one table's two sides: per-row hashes of the canonical encoding, range
//! checksums over the union of keys, bisection down to small ranges.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use serde::Serialize;
use warp_core::{OrdKey, Row};

/// One side of a table as read: a hash per live row, the destination's versions too.
#[derive(Default)]
pub struct Side {
    pub rows: BTreeMap<OrdKey, Entry>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// `None`: the destination keeps the row soft-deleted.
    pub hash: Option<u64>,
    /// Destination only: `_cartridge_version`.
    pub version: Option<i64>,
    /// Kept only for keys under suspicion (repairs need the source's row).
    pub row: Option<Row>,
}

impl Entry {
    fn live(&self) -> Option<u64> {
        self.hash
    }
}

impl Side {
    /// Rows live on this side.
    pub fn live_rows(&self) -> u64 {
        self.rows.values().filter(|e| e.hash.is_some()).count() as u64
    }

    /// Whether `key` reads the same here and in `later` (value and version).
    pub fn same(&self, later: &Side, key: &OrdKey) -> bool {
        let look = |s: &Side| s.rows.get(key).map(|e| (e.hash, e.version));
        look(self) == look(later)
    }

    /// Makes every key outside `keep` read like `source` here, so only those count.
    pub fn settle(&mut self, source: &Side, keep: &BTreeSet<OrdKey>) {
        for k in differences(source, self).into_keys() {
            if keep.contains(&k) {
                continue;
            }
            match source.rows.get(&k) {
                Some(e) => {
                    self.rows.insert(k, e.clone());
                }
                None => {
                    self.rows.remove(&k);
                }
            }
        }
    }
}

pub fn hash_text(text: &str) -> u64 {
    // SipHash with fixed keys: stable within the run, which is all a comparison needs.
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// At the source, not (live) at the destination.
    Missing,
    /// Live at the destination, gone at the source.
    Extra,
    /// On both sides with different values.
    Different,
}

/// The keys whose two sides disagree.
pub fn differences(source: &Side, dest: &Side) -> BTreeMap<OrdKey, Difference> {
    let mut out = BTreeMap::new();
    for (k, s) in &source.rows {
        match dest.rows.get(k).and_then(Entry::live) {
            None => {
                out.insert(k.clone(), Difference::Missing);
            }
            Some(d) if Some(d) != s.live() => {
                out.insert(k.clone(), Difference::Different);
            }
            Some(_) => {}
        }
    }
    for (k, d) in &dest.rows {
        if d.live().is_some() && !source.rows.contains_key(k) {
            out.insert(k.clone(), Difference::Extra);
        }
    }
    out
}

/// A range of the key union where the sides differ, narrowed by bisection.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub first_key: serde_json::Value,
    pub last_key: serde_json::Value,
    pub source_rows: u64,
    pub destination_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Up to [`KEYS_SHOWN`] of the keys that differ.
    pub keys: Vec<serde_json::Value>,
}

pub const KEYS_SHOWN: usize = 20;
/// Bisection stops at ranges this small.
const LEAF: usize = 16;

/// Count and order-independent checksum of `keys` on one side. A row's hash covers its
/// key columns too, so summing the row hashes is enough.
fn summary(side: &Side, keys: &[&OrdKey]) -> (u64, u64) {
    keys.iter()
        .filter_map(|k| side.rows.get(*k).and_then(Entry::live))
        .fold((0, 0), |(n, sum), h| (n + 1, sum.wrapping_add(h)))
}

/// Splits the sorted key union into ranges of `range_keys`, and narrows each range whose
/// counts or checksums differ by halving it until the differing pieces are small.
/// Returns the number of ranges checked at the top level and the narrowed mismatches,
/// adjacent pieces merged.
pub fn narrow(source: &Side, dest: &Side, range_keys: usize) -> (u64, Vec<Mismatch>) {
    let union: BTreeSet<&OrdKey> = source.rows.keys().chain(dest.rows.keys()).collect();
    let keys: Vec<&OrdKey> = union.into_iter().collect();
    let mut leaves: Vec<(usize, usize)> = Vec::new();
    let chunks = keys.chunks(range_keys.max(1));
    let top = chunks.len() as u64;
    let mut offset = 0;
    for chunk in chunks {
        bisect(
            source,
            dest,
            &keys,
            offset,
            offset + chunk.len(),
            &mut leaves,
        );
        offset += chunk.len();
    }
    // Adjacent differing pieces form one reported range.
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in leaves {
        match merged.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => merged.push((a, b)),
        }
    }
    let diffs = differences(source, dest);
    let mismatches = merged
        .into_iter()
        .map(|(a, b)| describe(source, dest, &keys[a..b], &diffs))
        .collect();
    (top, mismatches)
}

fn bisect(
    source: &Side,
    dest: &Side,
    keys: &[&OrdKey],
    a: usize,
    b: usize,
    out: &mut Vec<(usize, usize)>,
) {
    if a >= b || summary(source, &keys[a..b]) == summary(dest, &keys[a..b]) {
        return;
    }
    if b - a <= LEAF {
        out.push((a, b));
        return;
    }
    let mid = a + (b - a) / 2;
    bisect(source, dest, keys, a, mid, out);
    bisect(source, dest, keys, mid, b, out);
}

fn key_json(k: &OrdKey) -> serde_json::Value {
    match k.0.as_slice() {
        [one] => serde_json::to_value(one).unwrap_or_default(),
        many => serde_json::to_value(many).unwrap_or_default(),
    }
}

fn describe(
    source: &Side,
    dest: &Side,
    keys: &[&OrdKey],
    diffs: &BTreeMap<OrdKey, Difference>,
) -> Mismatch {
    let (source_rows, _) = summary(source, keys);
    let (destination_rows, _) = summary(dest, keys);
    let mut m = Mismatch {
        first_key: keys.first().map(|k| key_json(k)).unwrap_or_default(),
        last_key: keys.last().map(|k| key_json(k)).unwrap_or_default(),
        source_rows,
        destination_rows,
        missing: 0,
        extra: 0,
        different: 0,
        keys: Vec::new(),
    };
    for k in keys {
        let Some(d) = diffs.get(*k) else { continue };
        match d {
            Difference::Missing => m.missing += 1,
            Difference::Extra => m.extra += 1,
            Difference::Different => m.different += 1,
        }
        if m.keys.len() < KEYS_SHOWN {
            m.keys.push(key_json(k));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp_core::Value;

    fn side(rows: &[(i64, u64)]) -> Side {
        Side {
            rows: rows
                .iter()
                .map(|&(k, h)| {
                    (
                        OrdKey(vec![Value::Int(k)]),
                        Entry {
                            hash: Some(h),
                            version: Some(1),
                            row: None,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn bisection_narrows_to_the_differing_rows() {
        let rows: Vec<(i64, u64)> = (0..1000).map(|k| (k, k as u64 * 7)).collect();
        let source = side(&rows);
        let mut changed = rows.clone();
        changed[123].1 = 1; // different
        changed.retain(|(k, _)| !(600..610).contains(k)); // missing range
        changed.push((5000, 9)); // extra
        let dest = side(&changed);
        let (top, found) = narrow(&source, &dest, 100);
        assert_eq!(top, 11);
        let total: u64 = found
            .iter()
            .map(|m| m.missing + m.extra + m.different)
            .sum();
        assert_eq!(total, 12);
        assert!(
            found
                .iter()
                .all(|m| m.source_rows.max(m.destination_rows) <= 32),
            "{found:?}"
        );
        assert_eq!(
            found
                .iter()
                .map(|m| (m.missing, m.extra, m.different))
                .collect::<Vec<_>>(),
            [(0, 0, 1), (10, 0, 0), (0, 1, 0)]
        );
    }

    #[test]
    fn equal_sides_have_no_mismatch() {
        let rows: Vec<(i64, u64)> = (0..50).map(|k| (k, 1)).collect();
        assert!(narrow(&side(&rows), &side(&rows), 10).1.is_empty());
    }
}
