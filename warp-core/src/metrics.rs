//! Metric names (docs/operations.md), described once. Emitted per batch, never per row, with
//! bounded labels (`schema`, `table`, and one of `operation`/`error_type`/`state`/`change_type`).

pub const EVENTS_TOTAL: &str = "cartridge_warp_events_total";
pub const ERRORS_TOTAL: &str = "cartridge_warp_errors_total";
pub const REPLICATION_LAG_SECONDS: &str = "cartridge_warp_replication_lag_seconds";
pub const BATCH_DURATION_SECONDS: &str = "cartridge_warp_batch_duration_seconds";
pub const BATCH_ROWS: &str = "cartridge_warp_batch_rows";
pub const SNAPSHOT_ROWS_TOTAL: &str = "cartridge_warp_snapshot_rows_total";
pub const SNAPSHOT_PROGRESS_RATIO: &str = "cartridge_warp_snapshot_progress_ratio";
pub const TABLE_STATE: &str = "cartridge_warp_table_state";
pub const QUEUE_DEPTH: &str = "cartridge_warp_queue_depth";
pub const LAST_CHECKPOINT_TIMESTAMP_SECONDS: &str =
    "cartridge_warp_last_checkpoint_timestamp_seconds";
pub const SCHEMA_CHANGES_TOTAL: &str = "cartridge_warp_schema_changes_total";
pub const DEAD_LETTER_TOTAL: &str = "cartridge_warp_dead_letter_total";
pub const LEASES_HELD: &str = "cartridge_warp_leases_held";
pub const SOURCE_CONNECTED: &str = "cartridge_warp_source_connected";
pub const BUILD_INFO: &str = "cartridge_warp_build_info";
/// MySQL zero dates (`0000-00-00`) landed as NULL.
pub const ZERO_DATES_TOTAL: &str = "cartridge_warp_zero_dates_total";
/// MongoDB: update events whose document was gone by lookup time (deleted before the
/// `updateLookup`); their delete follows.
pub const UPDATES_WITHOUT_DOCUMENT_TOTAL: &str = "cartridge_warp_updates_without_document_total";
/// BigQuery: rows a poll's lookback found below its position, not delivered before (their
/// DML committed after a poll had passed their timestamp).
pub const LATE_ROWS_TOTAL: &str = "cartridge_warp_late_rows_total";
/// BigQuery: the largest lateness (position minus the row's timestamp) of a late row
/// since start, in seconds: as it nears `source.lookback`, rows later still are missed.
pub const LATE_ROW_MAX_SECONDS: &str = "cartridge_warp_late_row_max_seconds";
/// BigQuery: bytes processed (billed) by the queries cartridge-warp ran.
pub const SOURCE_BYTES_PROCESSED_TOTAL: &str = "cartridge_warp_source_bytes_processed_total";
/// Verification (background in `run`, or the `verify` job's textfile): rows the last
/// complete pass found different (confirmed, after repair when repairing).
pub const VERIFY_MISMATCHED_ROWS: &str = "cartridge_warp_verify_mismatched_rows";
pub const VERIFY_MISMATCHED_RANGES: &str = "cartridge_warp_verify_mismatched_ranges";
pub const VERIFY_UNSETTLED_ROWS: &str = "cartridge_warp_verify_unsettled_rows";
pub const VERIFY_SOURCE_ROWS: &str = "cartridge_warp_verify_source_rows";
pub const VERIFY_DESTINATION_ROWS: &str = "cartridge_warp_verify_destination_rows";
pub const VERIFY_FAILED: &str = "cartridge_warp_verify_failed";
pub const VERIFY_REPAIRED_ROWS: &str = "cartridge_warp_verify_repaired_rows";
pub const VERIFY_LAST_RUN_TIMESTAMP_SECONDS: &str =
    "cartridge_warp_verify_last_run_timestamp_seconds";
/// Background verification: complete passes, and rows compared, since start.
pub const VERIFY_PASSES_TOTAL: &str = "cartridge_warp_verify_passes_total";
pub const VERIFY_ROWS_TOTAL: &str = "cartridge_warp_verify_rows_total";
/// Log retention (per schema, sources that read a change log): whether the server still
/// holds the oldest position a table needs, how long it is safe at least, and the bytes
/// of log from it to the end.
pub const LOG_HELD: &str = "cartridge_warp_source_log_held";
pub const LOG_HEADROOM_SECONDS: &str = "cartridge_warp_source_log_headroom_seconds";
pub const LOG_BACKLOG_BYTES: &str = "cartridge_warp_source_log_backlog_bytes";

/// Registers help texts and units with whatever recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS_TOTAL,
        "Row changes applied to the destination, by operation"
    );
    describe_counter!(ERRORS_TOTAL, "Errors seen by the pipeline, by error_type");
    describe_gauge!(
        REPLICATION_LAG_SECONDS,
        Unit::Seconds,
        "Now minus the source commit time of the last applied change or heartbeat"
    );
    describe_histogram!(
        BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to apply and commit one destination batch"
    );
    describe_histogram!(BATCH_ROWS, "Row changes per destination batch");
    describe_counter!(SNAPSHOT_ROWS_TOTAL, "Rows copied by snapshots");
    describe_gauge!(
        SNAPSHOT_PROGRESS_RATIO,
        "Finished snapshot chunks over all chunks (0..1)"
    );
    describe_gauge!(
        TABLE_STATE,
        "1 for the table's current lifecycle state, 0 for the others"
    );
    describe_gauge!(QUEUE_DEPTH, "Source fragments read but not yet applied");
    describe_gauge!(
        LAST_CHECKPOINT_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last committed checkpoint"
    );
    describe_counter!(
        SCHEMA_CHANGES_TOTAL,
        "Schema changes applied, by change_type"
    );
    describe_counter!(DEAD_LETTER_TOTAL, "Rows sent to the dead-letter table");
    describe_gauge!(LEASES_HELD, "Table leases held by this process");
    describe_gauge!(SOURCE_CONNECTED, "1 while the source is reachable");
    describe_gauge!(BUILD_INFO, "Always 1; the version label carries the build");
    describe_counter!(
        ZERO_DATES_TOTAL,
        "MySQL zero dates (0000-00-00) landed as NULL"
    );
    describe_counter!(
        LATE_ROWS_TOTAL,
        "BigQuery rows found late by the lookback (committed after a poll passed their timestamp)"
    );
    describe_gauge!(
        LATE_ROW_MAX_SECONDS,
        "BigQuery: the largest lateness of a late row since start, seconds (compare with source.lookback)"
    );
    describe_gauge!(
        VERIFY_MISMATCHED_ROWS,
        "Rows that differ between source and destination, confirmed by the last verification pass"
    );
    describe_gauge!(
        VERIFY_MISMATCHED_RANGES,
        "Key ranges holding differing rows in the last verification pass"
    );
    describe_gauge!(
        VERIFY_UNSETTLED_ROWS,
        "Rows still changing when the last verification pass read them (not mismatches)"
    );
    describe_gauge!(
        VERIFY_SOURCE_ROWS,
        "Source rows compared by the last verification pass"
    );
    describe_gauge!(
        VERIFY_DESTINATION_ROWS,
        "Live destination rows compared by the last verification pass"
    );
    describe_gauge!(
        VERIFY_FAILED,
        "1 when the last verification pass of the table could not finish"
    );
    describe_gauge!(
        VERIFY_REPAIRED_ROWS,
        "Rows the last verification pass rewrote from the source (mode repair)"
    );
    describe_gauge!(
        VERIFY_LAST_RUN_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the last verification pass of the table ended (Unix time)"
    );
    describe_gauge!(
        LOG_HELD,
        "1 while the source server still holds the oldest change-log position a table of the schema needs"
    );
    describe_gauge!(
        LOG_HEADROOM_SECONDS,
        Unit::Seconds,
        "How long the oldest needed log position is safe from purging, at least (0 once gone)"
    );
    describe_gauge!(
        LOG_BACKLOG_BYTES,
        Unit::Bytes,
        "Bytes of the source's change log from the oldest needed position to its end"
    );
    describe_counter!(
        VERIFY_PASSES_TOTAL,
        "Complete background verification passes over the table"
    );
    describe_counter!(
        VERIFY_ROWS_TOTAL,
        "Rows compared by background verification (source and destination reads)"
    );
    describe_counter!(
        UPDATES_WITHOUT_DOCUMENT_TOTAL,
        "MongoDB update events whose document was deleted before the lookup (their delete follows)"
    );
    describe_counter!(
        SOURCE_BYTES_PROCESSED_TOTAL,
        Unit::Bytes,
        "Bytes processed by source queries (BigQuery: what is billed)"
    );
}
