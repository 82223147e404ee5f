//! One table as the status page shows it: the metadata schema's record (any replica's
//! tables), overlaid with this replica's live status for the tables it runs itself.
//! Positions are left out: a polling watermark or a chunk bound holds row values.

use chrono::{DateTime, Utc};
use serde::Serialize;
use warp_core::{CheckpointPhase, TableKey, TableReport, TableState, TableStatus};

use super::history::History;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableView {
    pub schema: String,
    pub table: String,
    /// `None` until a replicator recorded one.
    pub state: Option<TableState>,
    /// This replica runs the table (the values are live, not the last recorded ones).
    pub here: bool,
    pub owner: Option<String>,
    pub phase: Option<CheckpointPhase>,
    pub rows_copied: Option<i64>,
    pub chunks_done: Option<i64>,
    pub chunks_total: Option<i64>,
    /// Rows the copy will hold when done, from the rows per finished chunk.
    pub rows_estimated: Option<i64>,
    /// Finished chunks of planned ones, 0 to 1, while copying.
    pub progress: Option<f64>,
    pub rows_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub lag_seconds: Option<f64>,
    /// The highest lag per 30 s over the last 15 minutes, oldest first.
    pub lag_history: Vec<Option<f64>>,
    pub last_source_ts: Option<DateTime<Utc>>,
    pub status_updated_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub hint: Option<String>,
    pub dead_letters: i64,
    pub schema_version: Option<i32>,
    /// Bytes the source's queries for the table processed (BigQuery).
    pub source_bytes: Option<i64>,
    /// Background verification: the last pass and the last mismatch found.
    pub verification: Option<warp_core::VerificationStatus>,
}

impl TableView {
    pub fn key(&self) -> TableKey {
        TableKey {
            schema: self.schema.clone(),
            table: self.table.clone(),
        }
    }

    fn from_report(r: TableReport) -> Self {
        Self {
            schema: r.schema,
            table: r.table,
            state: r.state,
            here: false,
            owner: r.owner,
            phase: r.phase,
            rows_copied: r.rows_copied,
            chunks_done: r.chunks_done,
            chunks_total: r.chunks_total,
            rows_estimated: None,
            progress: None,
            rows_per_second: None,
            eta_seconds: None,
            lag_seconds: r.lag_seconds,
            lag_history: Vec::new(),
            last_source_ts: r.last_source_ts,
            status_updated_at: r.status_updated_at,
            last_error: r.last_error,
            hint: r.hint,
            dead_letters: r.dead_letters,
            schema_version: r.schema_version,
            source_bytes: r.source_bytes,
            verification: r.verification,
        }
    }

    /// Takes what this replica knows now over what it last recorded.
    fn overlay(&mut self, live: &TableStatus, owner: &str, now: DateTime<Utc>) {
        self.here = true;
        self.owner = Some(owner.to_owned());
        self.state = Some(live.state);
        self.rows_copied = Some(live.rows_copied as i64);
        if let Some(b) = live.source_bytes {
            self.source_bytes = Some(i64::try_from(b).unwrap_or(i64::MAX));
        }
        if live.chunks_total > 0 {
            self.chunks_done = Some(live.chunks_done as i64);
            self.chunks_total = Some(live.chunks_total as i64);
        }
        if live.last_source_ts.is_some() {
            self.last_source_ts = live.last_source_ts;
            self.lag_seconds = live.lag_seconds(now);
        }
        self.last_error = live
            .last_error
            .as_deref()
            .map(|e| warp_core::mask_secrets(e).into_owned());
        self.hint = live.hint.clone();
        if live.verification.is_some() {
            self.verification = live.verification.clone();
        }
        self.status_updated_at = Some(now);
    }

    /// Progress, estimate, rate and ETA of a copy in progress, and the lag history.
    fn measure(&mut self, history: &History, now: DateTime<Utc>) {
        let key = self.key();
        self.lag_history = history.lag(&key, now);
        let (Some(done), Some(total)) = (self.chunks_done, self.chunks_total) else {
            return;
        };
        let copying = self.state == Some(TableState::Snapshotting);
        if !copying || total == 0 {
            return;
        }
        self.progress = Some((done as f64 / total as f64).min(1.0));
        let rows = self.rows_copied.unwrap_or(0);
        if done > 0 {
            self.rows_estimated = Some((rows as f64 / done as f64 * total as f64) as i64);
        }
        self.rows_per_second = history.rate(&key, now);
        if let (Some(estimated), Some(rate)) = (self.rows_estimated, self.rows_per_second) {
            if rate > 0.0 {
                self.eta_seconds = Some(((estimated - rows) as f64 / rate).max(0.0));
            }
        }
    }
}

/// The order of the page: what needs a person first.
pub fn urgency(state: Option<TableState>) -> u8 {
    match state {
        Some(TableState::Failed) => 0,
        Some(TableState::Retrying) => 1,
        Some(TableState::Snapshotting) => 2,
        Some(TableState::Pending) => 3,
        None => 4,
        Some(TableState::Streaming) => 5,
        Some(TableState::Stopped) => 6,
    }
}

/// Every table of `schemas`: the recorded ones, overlaid with (and completed by) this
/// replica's live ones, most urgent first, then by name.
pub fn merge(
    recorded: Vec<TableReport>,
    live: &[TableStatus],
    schemas: &[String],
    owner: &str,
    now: DateTime<Utc>,
) -> Vec<TableView> {
    let mut views: Vec<TableView> = recorded
        .into_iter()
        .filter(|r| schemas.contains(&r.schema))
        .map(TableView::from_report)
        .collect();
    for l in live {
        match views
            .iter_mut()
            .find(|v| v.schema == l.schema && v.table == l.table)
        {
            Some(v) => v.overlay(l, owner, now),
            None => {
                let mut v = TableView::from_report(TableReport {
                    schema: l.schema.clone(),
                    table: l.table.clone(),
                    state: None,
                    phase: None,
                    rows_copied: None,
                    position: None,
                    last_source_ts: None,
                    lag_seconds: None,
                    owner: None,
                    status_updated_at: None,
                    last_error: None,
                    hint: None,
                    dead_letters: 0,
                    chunks_done: None,
                    chunks_total: None,
                    schema_version: None,
                    source_bytes: None,
                    verification: None,
                });
                v.overlay(l, owner, now);
                views.push(v);
            }
        }
    }
    views.sort_by(|a, b| {
        (urgency(a.state), &a.schema, &a.table).cmp(&(urgency(b.state), &b.schema, &b.table))
    });
    views
}

/// Fills in what is measured over time, after the history took this reading.
pub fn measure(views: &mut [TableView], history: &History, now: DateTime<Utc>) {
    for v in views {
        v.measure(history, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(table: &str, state: TableState) -> TableReport {
        TableReport {
            schema: "shop".into(),
            table: table.into(),
            state: Some(state),
            phase: None,
            rows_copied: Some(10),
            position: None,
            last_source_ts: None,
            lag_seconds: None,
            owner: Some("pod-b".into()),
            status_updated_at: None,
            last_error: Some("refused".into()),
            hint: None,
            dead_letters: 2,
            chunks_done: Some(1),
            chunks_total: Some(4),
            schema_version: Some(3),
            source_bytes: None,
            verification: None,
        }
    }

    #[test]
    fn live_tables_overlay_recorded_ones_and_failed_tables_come_first() {
        let now = Utc::now();
        let key = TableKey {
            schema: "shop".into(),
            table: "orders".into(),
        };
        let board = warp_core::StatusBoard::default();
        board.update(&key, |s| {
            s.state = TableState::Snapshotting;
            s.rows_copied = 300;
            s.chunks_done = 3;
            s.chunks_total = 4;
        });
        let other = TableKey {
            schema: "shop".into(),
            table: "new".into(),
        };
        board.set_state(&other, TableState::Pending);
        let mut views = merge(
            vec![
                recorded("orders", TableState::Pending),
                recorded("broken", TableState::Failed),
                TableReport {
                    schema: "elsewhere".into(),
                    ..recorded("x", TableState::Failed)
                },
            ],
            &board.snapshot(),
            &["shop".to_owned()],
            "pod-a",
            now,
        );
        let mut history = History::default();
        history.record(&key, now - chrono::Duration::seconds(10), None, Some(100));
        history.record(&key, now, None, Some(300));
        measure(&mut views, &history, now);
        let names: Vec<&str> = views.iter().map(|v| v.table.as_str()).collect();
        assert_eq!(names, ["broken", "orders", "new"]);
        let broken = &views[0];
        assert!(!broken.here);
        assert_eq!(broken.owner.as_deref(), Some("pod-b"));
        assert_eq!(broken.last_error.as_deref(), Some("refused"));
        let orders = &views[1];
        assert!(orders.here);
        assert_eq!(orders.owner.as_deref(), Some("pod-a"));
        assert_eq!(orders.state, Some(TableState::Snapshotting));
        assert_eq!(orders.progress, Some(0.75));
        assert_eq!(orders.rows_estimated, Some(400));
        assert_eq!(orders.rows_per_second, Some(20.0));
        assert_eq!(orders.eta_seconds, Some(5.0));
        assert_eq!(orders.schema_version, Some(3), "kept from the record");
        assert_eq!(views[2].state, Some(TableState::Pending));
        assert_eq!(views[2].lag_history.len(), super::super::history::POINTS);
    }
}
