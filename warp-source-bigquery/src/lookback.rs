//! `source.lookback`: the span below the position the polls read again for late commits,
//! and the rows found late there.

use std::collections::HashMap;

use warp_core::Value;

use crate::error::{BigQueryError, Result};

/// `source.lookback`: the polls also read again, a page every fourth poll, the rows
/// whose column lies within this span below the watermark, so a row whose DML committed
/// after a poll had passed its timestamp (a long-running job stamps rows when it starts)
/// still arrives. The rows of the span already delivered, by key and version, are
/// remembered and skipped; after a restart the span is delivered once more (upserts of
/// the same rows).
pub struct Lookback {
    pub span: chrono::Duration,
    /// Key (as JSON) → the version (column value) delivered, for versions in the span.
    pub seen: HashMap<String, Value>,
}

impl Lookback {
    /// The lowest column value the span reaches, below `w`.
    pub fn since(&self, w: &Value) -> Result<Value> {
        Ok(match w {
            Value::TimestampTz(t) => Value::TimestampTz(*t - self.span),
            Value::Timestamp(t) => Value::Timestamp(*t - self.span),
            Value::Date(d) => Value::Date(*d - self.span),
            other => {
                return Err(BigQueryError::Unsupported {
                    message: format!(
                        "source.lookback needs a TIMESTAMP, DATETIME or DATE change_detection_column, not {other:?}"
                    ),
                    hint: Some("remove source.lookback for this table's column type".into()),
                })
            }
        })
    }

    /// Whether the row at `version` is new to the span; records it.
    pub fn first_time(&mut self, key: &warp_core::Key, version: &Value) -> bool {
        let id = serde_json::to_string(key).unwrap_or_default();
        let same = self
            .seen
            .get(&id)
            .is_some_and(|v| v.cmp_key(version).is_eq());
        self.seen.insert(id, version.clone());
        !same
    }

    pub fn forget_below(&mut self, since: &Value) {
        self.seen.retain(|_, v| v.cmp_key(since).is_ge());
    }
}

/// The span read again when `source.lookback` is not set: BigQuery stamps a DML job's rows
/// when it starts and shows them when it commits, and a DML statement or dbt model running
/// for minutes is ordinary. Re-reading costs no extra bytes billed (a poll scans the
/// column anyway; a partitioned table's last partition holds the span), only the span's
/// rows returned again and one remembered key per row.
pub const DEFAULT_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(900);

/// The span a table's polls read again: `configured` when set (0 turns it off), else
/// [`DEFAULT_LOOKBACK`] for a temporal column; an INT64 or STRING column has no span
/// below it to read ("seconds below" means nothing there).
pub fn lookback_for(
    configured: Option<std::time::Duration>,
    column: &warp_core::ColumnType,
) -> Option<std::time::Duration> {
    use warp_core::ColumnType as T;
    let temporal = matches!(
        column,
        T::Date | T::Timestamp { .. } | T::TimestampTz { .. }
    );
    match configured {
        Some(d) => Some(d).filter(|d| !d.is_zero()),
        None => temporal.then_some(DEFAULT_LOOKBACK),
    }
}

/// Rows a poll found below its position that it had not delivered: late commits. How late
/// the latest of them was tells whether the span is wide enough (rows later than the span
/// are never seen, so the largest lateness found approaching it is the signal to widen).
#[derive(Default)]
pub struct LateRows {
    pub count: u64,
    pub most_seconds: f64,
}

impl LateRows {
    pub fn found(&mut self, version: &Value, position: Option<&Value>) {
        self.count += 1;
        let seconds = match (version, position) {
            (Value::TimestampTz(v), Some(Value::TimestampTz(p))) => (*p - *v).num_milliseconds(),
            (Value::Timestamp(v), Some(Value::Timestamp(p))) => (*p - *v).num_milliseconds(),
            (Value::Date(v), Some(Value::Date(p))) => (*p - *v).num_days() * 86_400_000,
            _ => 0,
        } as f64
            / 1000.0;
        self.most_seconds = self.most_seconds.max(seconds);
    }

    /// Counts the poll's late rows; `most` is the largest lateness since start, which the
    /// gauge shows (a gauge that only grows until a restart).
    pub fn record(&self, schema: &str, table: &str, most: &mut f64) {
        if self.count == 0 {
            return;
        }
        *most = most.max(self.most_seconds);
        let labels = [("schema", schema.to_owned()), ("table", table.to_owned())];
        metrics::counter!(warp_core::metrics::LATE_ROWS_TOTAL, &labels).increment(self.count);
        metrics::gauge!(warp_core::metrics::LATE_ROW_MAX_SECONDS, &labels).set(*most);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warp_core::ColumnType as T;

    #[test]
    fn temporal_columns_look_back_by_default_and_zero_turns_it_off() {
        let ts = T::TimestampTz { precision: None };
        assert_eq!(lookback_for(None, &ts), Some(DEFAULT_LOOKBACK));
        assert_eq!(lookback_for(None, &T::Date), Some(DEFAULT_LOOKBACK));
        assert_eq!(lookback_for(None, &T::Int64), None);
        let set = Some(Duration::from_secs(60));
        assert_eq!(lookback_for(set, &ts), set);
        // Set on an INT64 column it is kept, and the first poll stops the table saying why.
        assert_eq!(lookback_for(set, &T::Int64), set);
        assert_eq!(lookback_for(Some(Duration::ZERO), &ts), None);
    }

    #[test]
    fn lateness_is_the_position_minus_the_rows_timestamp() {
        let at = |s: i64| Value::TimestampTz(chrono::DateTime::from_timestamp(s, 0).unwrap());
        let mut late = LateRows::default();
        late.found(&at(85), Some(&at(100)));
        late.found(&at(95), Some(&at(100)));
        assert_eq!((late.count, late.most_seconds), (2, 15.0));
    }
}
