//! The harness runs end to end on small data (its figures are not asserted: speed is
//! measured in docs/benchmarks.md, never in tests).

use std::process::Command;

/// Runs `warp-bench args…` and checks it succeeds and prints every `line`.
fn reports(args: &[&str], lines: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_warp-bench"))
        .args(args)
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in lines {
        assert!(stdout.contains(line), "missing {line}: {stdout}");
    }
}

#[test]
fn sink_benchmark_runs_and_reports_every_line() {
    reports(
        &["sink", "--rows", "3000", "--runs", "1"],
        &[
            "raw COPY",
            "1 chunk at a time",
            "2 chunks in parallel",
            "peak RSS",
        ],
    );
}

#[test]
fn mysql_benchmark_runs_end_to_end_and_reports_every_line() {
    reports(
        &[
            "mysql",
            "--rows",
            "3000",
            "--changes",
            "1500",
            "--load",
            "1000",
            "--load-secs",
            "1",
            "--runs",
            "1",
        ],
        &[
            "raw COPY",
            "raw full read",
            "cartridge-warp snapshot",
            "streaming catch-up",
            "peak RSS of cartridge-warp",
            "lag at 1000 changes/s",
        ],
    );
}

#[test]
fn mongo_benchmark_runs_end_to_end_and_reports_every_line() {
    reports(
        &["mongo", "--docs", "2000", "--changes", "500", "--runs", "1"],
        &[
            "raw driver find",
            "cartridge-warp snapshot",
            "raw driver change-stream read",
            "cartridge-warp streaming, live",
            "peak RSS of cartridge-warp",
        ],
    );
}
