//! The alerting rules parse and fire on our metric names (`promtool`, Debian package
//! `prometheus`; scripts/test.sh installs it).

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn rules_parse() {
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("11 rules found"), "{out}");
}

#[test]
fn alerts_fire_on_our_metric_names() {
    let (ok, out) = promtool(&["test", "rules", "rules.test.yaml"]);
    assert!(ok, "{out}");
}
