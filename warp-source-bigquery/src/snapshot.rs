//! Full load by paged queries over key ranges, planned so the load is billed about once.

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use warp_core::{ChunkPage, KeyRange, Value};

use crate::error::Result;
use crate::query::{Query, Runner};
use crate::table::BqTable;

/// Rows per page when `stream_batch_size` is unset.
pub const PAGE_ROWS: usize = 10_000;

/// The most logical bytes one range of a table not clustered on its key reads. Such a
/// range is billed for the whole table's columns, so ranges are as few as a query's
/// result allows: BigQuery refuses a result above 10 GB compressed (`responseTooLarge`),
/// and 4 GiB of logical bytes stays below that for any compression.
pub const UNCLUSTERED_RANGE_BYTES: u64 = 4 << 30;

/// How a table's full load is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadShape {
    /// One query: the load is billed once.
    Whole,
    /// `ranges` queries over key ranges of a table clustered on its key, each billed for
    /// the blocks of its range: about one scan in all.
    Clustered { ranges: u64 },
    /// `ranges` queries over key ranges, each billed for the whole table's columns (a
    /// table too large for one query's result and not clustered on its key).
    Scans { ranges: u64 },
}

impl LoadShape {
    /// The shape for a table of `rows` rows and `bytes` logical bytes (0: not stated).
    pub fn of(t: &BqTable, rows: u64, bytes: u64, chunk_rows: usize) -> Self {
        let key = t.key_columns();
        let [k] = key.as_slice() else {
            return Self::Whole;
        };
        let on_key = t.clustered_by.as_deref() == Some(t.schema.columns[*k].name.as_str());
        let shape = if on_key {
            Self::Clustered {
                ranges: rows.div_ceil(chunk_rows.max(1) as u64),
            }
        } else {
            Self::Scans {
                ranges: bytes.div_ceil(UNCLUSTERED_RANGE_BYTES),
            }
        };
        if shape.ranges() > 1 {
            shape
        } else {
            Self::Whole
        }
    }

    pub fn ranges(self) -> u64 {
        match self {
            Self::Whole => 1,
            Self::Clustered { ranges } | Self::Scans { ranges } => ranges,
        }
    }

    /// What the load costs, for `run --dry-run`, from the bytes one scan processes.
    pub fn cost(self, scan_bytes: u64) -> String {
        match self {
            Self::Whole => format!("full load: one query, ~{scan_bytes} bytes (BigQuery dry run)"),
            Self::Clustered { .. } => format!(
                "full load: one query per range of the clustering key, ~{scan_bytes} bytes in all (BigQuery dry run)"
            ),
            Self::Scans { ranges } => format!(
                "full load: {ranges} queries, each billed ~{scan_bytes} bytes (~{} in all; the table is too large for one query's result and not clustered on its key: cluster it on the key to bill one scan)",
                scan_bytes.saturating_mul(ranges)
            ),
        }
    }
}

/// Key ranges for `shape`, bounded by approximate quantiles of the key (one pass over the
/// key column, no sort of the table: an exact `ROW_NUMBER()` over the key failed with
/// `resourcesExceeded` on large tables). Equal quantiles (a skewed key) merge.
pub async fn plan(runner: &Runner, t: &BqTable, shape: LoadShape) -> Result<Vec<KeyRange>> {
    let n = shape.ranges();
    if n <= 1 {
        return Ok(vec![KeyRange::ALL]);
    }
    let k = t.key_list();
    // The quantile count as a literal: the function takes a constant.
    let sql = format!(
        "SELECT b AS {k} FROM UNNEST((SELECT APPROX_QUANTILES({k}, {n}) {})) AS b WITH OFFSET o \
         WHERE o > 0 AND o < {n} ORDER BY o",
        t.scan_where::<&str>(&[])
    );
    let q = Query::new(&t.schema.id.name, sql);
    let mut bounds: Vec<Vec<Value>> = runner.all(q).await?.iter().map(|c| t.key(c)).collect();
    bounds.dedup();
    Ok(KeyRange::split_at(bounds))
}

/// The rows of one chunk, in pages.
pub fn read(
    runner: &Runner,
    t: &BqTable,
    range: &KeyRange,
    only: Option<(String, Option<Value>)>,
    page_rows: usize,
) -> Result<BoxStream<'static, warp_core::Result<ChunkPage>>> {
    let k = t.key_list();
    let mut filter = Vec::new();
    if range.start.is_some() {
        filter.push(format!("{k} >= @lo"));
    }
    if range.end.is_some() {
        filter.push(format!("{k} < @hi"));
    }
    let top = only.and_then(|(condition, top)| {
        filter.push(condition);
        top
    });
    // No ORDER BY: a range is resumed whole, so its rows need no order, and sorting a
    // large table is what exhausts a query's resources.
    let mut q = Query::new(
        &t.schema.id.name,
        format!("SELECT {} {}", t.select_list(), t.scan_where(&filter)),
    );
    // Ranges exist only for one-column keys (see `plan`).
    if let Some(lo) = range.start.as_ref().and_then(|s| s.first()) {
        q = q.param("lo", lo)?;
    }
    if let Some(hi) = range.end.as_ref().and_then(|e| e.first()) {
        q = q.param("hi", hi)?;
    }
    if let Some(top) = &top {
        q = q.param("top", top)?;
    }
    let table = t.clone();
    Ok(runner
        .pages(q, i32::try_from(page_rows).unwrap_or(i32::MAX))
        .map_ok(move |page| ChunkPage::Rows(page.iter().map(|cells| table.row(cells)).collect()))
        .map_err(warp_core::Error::from)
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Described;
    use warp_core::TableId;

    fn table(extra: serde_json::Value, key: &[&str]) -> BqTable {
        let mut meta = serde_json::json!({
            "tableReference": { "projectId": "p", "datasetId": "d", "tableId": "t" },
            "schema": { "fields": [
                { "name": "id", "type": "INTEGER" }, { "name": "k2", "type": "STRING" }
            ] }
        });
        meta.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let described = Described {
            table: serde_json::from_value(meta).unwrap(),
            as_json: Vec::new(),
        };
        let key = key.iter().map(|k| (*k).to_owned()).collect();
        BqTable::new("p", TableId::new("d", "t"), described, key)
    }

    #[test]
    fn a_load_is_one_query_unless_ranges_bill_less_or_one_result_cannot_hold_it() {
        let plain = table(serde_json::json!({}), &["id"]);
        assert_eq!(
            LoadShape::of(&plain, 10_000_000, 1 << 30, 50_000),
            LoadShape::Whole
        );
        // Too large for one result: the fewest ranges that fit, each a scan.
        let tb = 1_u64 << 40;
        let scans = LoadShape::of(&plain, 0, tb, 50_000);
        assert_eq!(scans, LoadShape::Scans { ranges: 256 });
        assert!(
            scans.cost(tb).contains("cluster it on the key"),
            "{}",
            scans.cost(tb)
        );
        // Clustered on the key: ranges of chunk size, billed about once in all.
        let clustered = table(
            serde_json::json!({ "clustering": { "fields": ["id"] } }),
            &["id"],
        );
        assert_eq!(
            LoadShape::of(&clustered, 120_000, tb, 50_000),
            LoadShape::Clustered { ranges: 3 }
        );
        assert_eq!(
            LoadShape::of(&clustered, 50_000, tb, 50_000),
            LoadShape::Whole
        );
        // Clustered on another column, or a composite key: not by the key.
        let other = table(
            serde_json::json!({ "clustering": { "fields": ["k2"] } }),
            &["id"],
        );
        assert_eq!(LoadShape::of(&other, 120_000, 0, 50_000), LoadShape::Whole);
        let composite = table(serde_json::json!({}), &["id", "k2"]);
        assert_eq!(LoadShape::of(&composite, 0, tb, 50_000), LoadShape::Whole);
    }
}
