//! The settings of one table that concern reading it at the source. The engine resolves
//! them from the configuration and passes them into each [`crate::Source`] call, so a
//! source never looks a table up in a configuration of its own.

use std::time::Duration;

use crate::schema::{LandingVersion, TableId};
use crate::watermark::Pace;

/// Bytes of source rows a snapshot page holds when rows are wide.
pub const SNAPSHOT_PAGE_BYTES: u64 = 4 << 20;
/// The fewest rows a page sized by row width holds.
pub const MIN_SNAPSHOT_PAGE_ROWS: usize = 50;

/// How a source reads one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSettings {
    /// Rows per source fetch (`performance.stream_batch_size`); `None`: the source's own.
    pub fetch_rows: Option<usize>,
    /// The column the `timestamp` strategy polls (`change_detection_column`).
    pub change_column: Option<String>,
    /// Time between polls (`polling_interval`).
    pub polling_interval: Duration,
    /// Documents: nesting levels flattened into columns (`flatten_depth`).
    pub flatten_depth: u32,
    /// Documents: the whole document also lands in one column (`document_column`).
    pub document_column: bool,
    /// Whether deletes are found by comparing key sets (`delete_detection_interval`).
    pub delete_detection: bool,
    /// The landing version the table's landing table was created with: the source lands
    /// (and reads back) keys and values as that version did. Set by the engine once the
    /// table is ensured; [`LandingVersion::UNRECORDED`] until then.
    pub landing: LandingVersion,
}

impl ReadSettings {
    /// Settings with every default.
    #[cfg(test)]
    fn defaults() -> Self {
        Self {
            fetch_rows: None,
            change_column: None,
            polling_interval: Duration::from_secs(crate::config::DEFAULT_POLLING_INTERVAL_SECS),
            flatten_depth: 0,
            document_column: false,
            delete_detection: false,
            landing: LandingVersion::UNRECORDED,
        }
    }

    /// Rows per fetch: `stream_batch_size`, else the source's own `default_rows`.
    pub fn rows(&self, default_rows: usize) -> usize {
        self.fetch_rows.unwrap_or(default_rows)
    }

    /// Rows per snapshot page: `stream_batch_size`, else the source's `default_rows`
    /// made smaller for wide rows so a page holds about [`SNAPSHOT_PAGE_BYTES`]
    /// (`avg_row_bytes`: the source's estimate). A page is what one chunk holds in memory
    /// at a time, a few times over (being read, read ahead, being written): 5,000 rows of
    /// 20 KB would be 100 MB each, for every chunk copying at once.
    pub fn page_rows(&self, default_rows: usize, avg_row_bytes: Option<u64>) -> usize {
        let by_width = avg_row_bytes.filter(|&b| b > 0).map_or(default_rows, |b| {
            usize::try_from(SNAPSHOT_PAGE_BYTES / b).unwrap_or(usize::MAX)
        });
        self.rows(by_width.clamp(MIN_SNAPSHOT_PAGE_ROWS.min(default_rows), default_rows))
    }

    /// How the table is polled, with the source's own page size as the fallback.
    pub fn pace(&self, default_rows: usize) -> Pace {
        Pace {
            interval: self.polling_interval,
            rows: self.rows(default_rows),
        }
    }

    /// The polled column; an error naming the key to set when there is none.
    pub fn change_column(&self, table: &TableId) -> crate::Result<&str> {
        self.change_column.as_deref().ok_or_else(|| {
            crate::Error::source_permanent(
                format!("{table}: polling needs a change_detection_column"),
                Some(format!(
                    "set schemas[].tables.{}.change_detection_column to a column every write updates (e.g. updated_at)",
                    table.name
                )),
            )
        })
    }
}

/// Each table's read settings, by name: what discovery needs for tables it has not
/// seen yet (documents are shaped by their table's flatten settings).
pub trait TableReads: Send + Sync {
    fn read_settings(&self, table: &str) -> ReadSettings;
}

/// One table a shared feed serves: its shape and how it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedTable {
    pub schema: crate::schema::TableSchema,
    pub read: ReadSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_change_column_names_the_key() {
        let read = ReadSettings::defaults();
        let err = read
            .change_column(&TableId::new("shop", "orders"))
            .unwrap_err();
        assert!(err.to_string().contains("shop.orders"), "{err}");
        let hint = err.hint().unwrap_or_default();
        assert!(
            hint.contains("tables.orders.change_detection_column"),
            "{hint}"
        );
    }

    #[test]
    fn stream_batch_size_wins_over_the_source_page() {
        let mut read = ReadSettings::defaults();
        assert_eq!(read.pace(500).rows, 500);
        read.fetch_rows = Some(7);
        assert_eq!(read.pace(500).rows, 7);
        assert_eq!(read.rows(500), 7);
    }

    #[test]
    fn snapshot_pages_shrink_for_wide_rows() {
        let mut read = ReadSettings::defaults();
        // (estimated bytes per row) → rows per page, for a source page of 5,000 rows.
        for (width, rows) in [
            (None, 5_000),
            (Some(0), 5_000),
            (Some(300), 5_000),  // narrow: the source's page
            (Some(20_000), 209), // 4 MiB / 20 KB
            (Some(1 << 20), 50), // the floor
        ] {
            assert_eq!(read.page_rows(5_000, width), rows, "{width:?}");
        }
        assert_eq!(
            read.page_rows(10, Some(1 << 20)),
            10,
            "never above the source's page"
        );
        read.fetch_rows = Some(7_000);
        assert_eq!(
            read.page_rows(5_000, Some(20_000)),
            7_000,
            "stream_batch_size wins"
        );
    }
}
