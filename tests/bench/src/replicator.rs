//! A `cartridge-warp run` child process under measurement: its peak memory (the
//! kernel's VmHWM, sampled while it lives) and waits on the destination.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};

pub struct Replicator {
    child: Child,
    peak_kib: u64,
}

impl Replicator {
    pub fn start(
        binary: &Path,
        config: &Path,
        log: &Path,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_as(binary, config, log, "cartridge-warp-bench")
    }

    /// One replica of the schema, named `pod` (replicas of one schema need their own
    /// names).
    pub fn start_as(
        binary: &Path,
        config: &Path,
        log: &Path,
        pod: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(binary)
            .env("POD_NAME", pod)
            .args(["run", "--config", &config.to_string_lossy()])
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()?;
        Ok(Self { child, peak_kib: 0 })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Samples VmHWM (the kernel's own peak) while the process lives.
    pub fn sample(&mut self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()));
        if let Some(kib) = status.ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        }) {
            self.peak_kib = self.peak_kib.max(kib);
        }
    }

    pub fn stop(mut self) -> Result<u64, Box<dyn std::error::Error>> {
        self.sample();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("cartridge-warp exited with {status}").into());
        }
        Ok(self.peak_kib)
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (sampling memory) until `sql` returns a row, or fails after `limit`.
pub async fn until(
    pg: &PgPool,
    warp: &mut Replicator,
    sql: &str,
    limit: Duration,
    log: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + limit;
    loop {
        warp.sample();
        if sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_optional(pg)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("timed out waiting for `{sql}`\n{tail}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes a run's directory (config, log), or keeps it when `WARP_BENCH_KEEP` is set,
/// so the replicator's log of a slow run can be read afterwards.
pub fn clean_up(dir: &Path) {
    if std::env::var_os("WARP_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}
