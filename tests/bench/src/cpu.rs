//! Where the machine's CPU went during a measured phase: the replicator's process, every
//! PostgreSQL and MariaDB server process, this harness, and the machine as a whole. Here
//! the databases share two cores with the replicator, so these figures say what bounds a
//! rate (see docs/benchmarks.md).

use std::collections::HashMap;

/// Linux reports process and machine times in USER_HZ, fixed at 100 for user space.
const TICKS_PER_SEC: f64 = 100.0;

/// Cumulative CPU ticks at one moment.
pub struct Sample {
    /// (busy, total) ticks of the whole machine, over all cores.
    machine: (u64, u64),
    /// Ticks of every process, by pid, with its name.
    processes: HashMap<u32, (String, u64)>,
}

/// CPU seconds spent between two samples.
#[derive(Clone, Copy, Default)]
pub struct CpuUse {
    pub warp: f64,
    pub postgres: f64,
    pub mariadb: f64,
    pub harness: f64,
    pub busy: f64,
    pub capacity: f64,
}

fn process_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces; the fields after it are plain.
    let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name.to_owned(), ticks))
}

pub fn sample() -> Sample {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let cpu: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            let total: u64 = cpu.iter().take(8).sum();
            let idle = cpu.get(3)? + cpu.get(4)?;
            Some((total - idle, total))
        })
        .unwrap_or_default();
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name.parse().ok()?;
            Some((pid, process_ticks(&name)?))
        })
        .collect();
    Sample { machine, processes }
}

/// What each party spent from `before` to `after`; `warp` is the replicator's pid. A
/// server process that ended in between is not counted (the replicator's connections
/// live through every measured phase).
pub fn between(before: &Sample, after: &Sample, warp: u32) -> CpuUse {
    let me = std::process::id();
    let mut out = CpuUse {
        busy: after.machine.0.saturating_sub(before.machine.0) as f64 / TICKS_PER_SEC,
        capacity: after.machine.1.saturating_sub(before.machine.1) as f64 / TICKS_PER_SEC,
        ..CpuUse::default()
    };
    for (pid, (name, ticks)) in &after.processes {
        let earlier = before.processes.get(pid).map_or(0, |(_, t)| *t);
        let spent = ticks.saturating_sub(earlier) as f64 / TICKS_PER_SEC;
        match name.as_str() {
            _ if *pid == warp => out.warp += spent,
            _ if *pid == me => out.harness += spent,
            "postgres" => out.postgres += spent,
            "mariadbd" => out.mariadb += spent,
            _ => {}
        }
    }
    out
}

impl CpuUse {
    /// The run whose replicator CPU is the median.
    pub fn median(mut runs: Vec<CpuUse>) -> CpuUse {
        runs.sort_by(|a, b| a.warp.total_cmp(&b.warp));
        runs.get(runs.len() / 2).copied().unwrap_or_default()
    }

    pub fn line(&self, phase: &str) -> String {
        format!(
            "CPU during the {phase} (core-seconds, median run): cartridge-warp {:.2}, PostgreSQL {:.2}, \
             MariaDB {:.2}, harness {:.2}; machine busy {:.2} of {:.2} ({:.0}%)",
            self.warp,
            self.postgres,
            self.mariadb,
            self.harness,
            self.busy,
            self.capacity,
            100.0 * self.busy / self.capacity.max(f64::MIN_POSITIVE)
        )
    }
}
