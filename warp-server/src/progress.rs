//! Snapshot progress on a terminal (rows copied / estimated total, rate, ETA). Only when
//! stderr is a terminal: logs stay machine-readable otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use warp_core::{StatusBoard, TableState};

const EVERY: Duration = Duration::from_secs(3);

/// One progress line: `orders: 45,000 / ~100,000 rows (45%), 12,300 rows/s, ETA 4s`.
pub fn line(table: &str, rows: u64, chunks_done: usize, chunks_total: usize, rate: f64) -> String {
    let estimated =
        (chunks_done > 0).then(|| rows as f64 / chunks_done as f64 * chunks_total as f64);
    let ratio = if chunks_total == 0 {
        1.0
    } else {
        chunks_done as f64 / chunks_total as f64
    };
    let mut out = format!("{table}: {} rows copied", thousands(rows));
    if let Some(total) = estimated {
        out.push_str(&format!(
            " / ~{} ({:.0}%)",
            thousands(total as u64),
            ratio * 100.0
        ));
    }
    if rate > 0.0 {
        out.push_str(&format!(", {} rows/s", thousands(rate as u64)));
        if let Some(total) = estimated {
            let eta = ((total - rows as f64) / rate).max(0.0);
            out.push_str(&format!(", ETA {}s", eta.round() as u64));
        }
    }
    out
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints progress of snapshotting tables every few seconds until `shutdown`.
pub async fn report(boards: Vec<StatusBoard>, shutdown: CancellationToken) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut last: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        for t in boards.iter().flat_map(StatusBoard::snapshot) {
            if t.state != TableState::Snapshotting {
                continue;
            }
            let name = format!("{}.{}", t.schema, t.table);
            let now = Instant::now();
            let rate = last.get(&name).map_or(0.0, |(rows, at)| {
                (t.rows_copied.saturating_sub(*rows)) as f64 / now.duration_since(*at).as_secs_f64()
            });
            last.insert(name.clone(), (t.rows_copied, now));
            eprintln!(
                "{}",
                line(&name, t.rows_copied, t.chunks_done, t.chunks_total, rate)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            line("shop.orders", 45_000, 9, 20, 15_000.0),
            "shop.orders: 45,000 rows copied / ~100,000 (45%), 15,000 rows/s, ETA 4s"
        );
        assert_eq!(line("shop.t", 0, 0, 4, 0.0), "shop.t: 0 rows copied");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
