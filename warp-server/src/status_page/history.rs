//! What the status page draws over time: each table's lag for the last 15 minutes (the
//! sparkline) and its copy rate (rows per second, for the ETA), sampled by this process
//! each time it reads the metadata schema. A replica that just started has a short history.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use warp_core::TableKey;

/// How far back the sparkline reaches.
pub const WINDOW: Duration = Duration::minutes(15);
/// Points on the sparkline: one per 30 s.
pub const POINTS: usize = 30;
/// The copy rate is measured over this much of the recent past.
const RATE_SPAN: Duration = Duration::seconds(30);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: DateTime<Utc>,
    lag: Option<f64>,
    rows_copied: Option<i64>,
}

#[derive(Debug, Default)]
pub struct History {
    tables: HashMap<TableKey, VecDeque<Sample>>,
}

impl History {
    /// Records one reading of a table; forgets readings older than the window.
    pub fn record(
        &mut self,
        key: &TableKey,
        at: DateTime<Utc>,
        lag: Option<f64>,
        rows: Option<i64>,
    ) {
        let samples = self.tables.entry(key.clone()).or_default();
        samples.push_back(Sample {
            at,
            lag,
            rows_copied: rows,
        });
        while samples.front().is_some_and(|s| at - s.at > WINDOW) {
            samples.pop_front();
        }
    }

    /// Forgets tables not in `live` (dropped from the metadata schema).
    pub fn retain(&mut self, live: &dyn Fn(&TableKey) -> bool) {
        self.tables.retain(|k, _| live(k));
    }

    /// The highest lag seen in each 30-second slot of the window ending at `now`, oldest
    /// first; `None` where nothing was seen.
    pub fn lag(&self, key: &TableKey, now: DateTime<Utc>) -> Vec<Option<f64>> {
        let mut points = vec![None; POINTS];
        let slot = WINDOW / POINTS as i32;
        for s in self.tables.get(key).into_iter().flatten() {
            let (Some(lag), age) = (s.lag, now - s.at) else {
                continue;
            };
            if age < Duration::zero() || age >= WINDOW {
                continue;
            }
            let i = POINTS - 1 - (age.num_milliseconds() / slot.num_milliseconds()) as usize;
            points[i] = Some(points[i].map_or(lag, |p: f64| p.max(lag)));
        }
        points
    }

    /// Rows copied per second over the last 30 s; `None` without two readings at least
    /// 2 s apart in that span, or when the count went down (a resync started over).
    pub fn rate(&self, key: &TableKey, now: DateTime<Utc>) -> Option<f64> {
        let samples = self.tables.get(key)?;
        let recent: Vec<(DateTime<Utc>, i64)> = samples
            .iter()
            .filter(|s| now - s.at <= RATE_SPAN)
            .filter_map(|s| Some((s.at, s.rows_copied?)))
            .collect();
        let (first, last) = (recent.first()?, recent.last()?);
        let seconds = (last.0 - first.0).num_milliseconds() as f64 / 1000.0;
        (seconds >= 2.0 && last.1 >= first.1).then(|| (last.1 - first.1) as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TableKey {
        TableKey {
            schema: "shop".into(),
            table: "orders".into(),
        }
    }

    #[test]
    fn lag_points_hold_the_highest_lag_of_their_slot_oldest_first() {
        let mut h = History::default();
        let now = Utc::now();
        h.record(&key(), now - Duration::minutes(20), Some(99.0), None);
        h.record(
            &key(),
            now - Duration::seconds(14 * 60 + 50),
            Some(7.0),
            None,
        );
        h.record(&key(), now - Duration::seconds(20), Some(3.0), None);
        h.record(&key(), now - Duration::seconds(10), Some(5.0), None);
        h.record(&key(), now, Some(1.0), None);
        let points = h.lag(&key(), now);
        assert_eq!(points.len(), POINTS);
        assert_eq!(points[0], Some(7.0), "the oldest slot");
        assert_eq!(
            points[POINTS - 1],
            Some(5.0),
            "the highest of the last 30 s"
        );
        assert!(points[1..POINTS - 1].iter().all(Option::is_none));
        assert!(!points.contains(&Some(99.0)), "older than the window");
    }

    #[test]
    fn rate_needs_two_readings_and_a_growing_count() {
        let mut h = History::default();
        let now = Utc::now();
        h.record(&key(), now - Duration::seconds(10), None, Some(1000));
        assert_eq!(h.rate(&key(), now), None);
        h.record(&key(), now, None, Some(6000));
        assert_eq!(h.rate(&key(), now), Some(500.0));
        h.record(&key(), now + Duration::seconds(2), None, Some(10));
        assert_eq!(h.rate(&key(), now + Duration::seconds(2)), None);
    }
}
