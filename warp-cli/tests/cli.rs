//! The `cartridge-warp` binary as users run it: exit codes, one-line errors, no secrets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SOURCE_URL: &str = "mongodb://admin:hunter2-secret@mongodb.example.com:27017/ecommerce_db?ssl=true&authSource=admin&replicaSet=rs0";
const DEST_URL: &str =
    "postgresql://warp_user:hunter2-secret@postgres.example.com:5432/warehouse?sslmode=require";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn warp(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cartridge-warp"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn seed_env() -> [(&'static str, &'static str); 2] {
    [
        ("CARTRIDGE_WARP_SOURCE__CONNECTION_STRING", SOURCE_URL),
        ("CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING", DEST_URL),
    ]
}

#[test]
fn seed_configmap_validates() {
    let seed = repo().join("examples/seed-ecommerce.yaml");
    let out = warp(
        &["validate", "--config", seed.to_str().unwrap()],
        &seed_env(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("schema ecommerce"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "password printed: {stdout}");
    assert!(stdout.contains("admin:***@"), "{stdout}");
}

#[test]
fn invalid_config_fails_with_one_masked_line() {
    let dir = std::env::temp_dir().join(format!("warp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "source:\n  type: mysql\n  connection_string: mysql://root:hunter2-secret@db/x\ndestination:\n  type: postgresql\n  connection_string: postgresql://u:hunter2-secret@pg/d\nschemas:\n- name: s\n  tables:\n    orders:\n      batch_size: 0\n",
    )
    .unwrap();
    let out = warp(&["validate", "--config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("schemas[0].tables.orders.batch_size: expected a positive integer"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));

    let out = warp(
        &[
            "validate",
            "--config",
            dir.join("missing.yaml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the file"));
}

#[test]
fn init_writes_a_config_that_validates() {
    let dir = std::env::temp_dir().join(format!("warp-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warp.yaml");
    let _ = std::fs::remove_file(&path);
    let out = warp(&["init", "--output", path.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = warp(&["init", "--output", path.to_str().unwrap()], &[]);
    assert_eq!(again.status.code(), Some(1), "refuses to overwrite");
    assert!(text(&again.stderr).contains("--force"));
    let out = warp(&["validate", "--config", path.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn env_help_lists_overrides_and_seed_variables() {
    let out = warp(&["env-help"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for var in [
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING",
        "CARTRIDGE_WARP_PERFORMANCE__WRITE_BATCH_SIZE",
        "CARTRIDGE_WARP_SOURCE__SSL_MODE",
        "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING_FILE",
        "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING_FILE",
        "PROMETHEUS_METRICS_PORT",
        "LOG_LEVEL",
        "POD_NAME",
    ] {
        assert!(stdout.contains(var), "{var} missing");
    }
}

#[test]
fn version_names_the_compiled_features() {
    let out = warp(&["--version"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("cartridge-warp {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(stdout.contains("features: "), "{stdout}");
}

#[test]
fn run_flags_follow_the_seed_deployment() {
    // The seed passes `--mode=single --schema=$(SCHEMA_NAME)`; an unknown schema is refused
    // before anything connects.
    let seed = repo().join("examples/seed-ecommerce.yaml");
    let out = warp(
        &[
            "run",
            "--mode=single",
            "--schema=nope",
            &format!("--config={}", seed.display()),
        ],
        &seed_env(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("single_schema_name: schema `nope` is not among `schemas`"),
        "{stderr}"
    );
    let out = warp(&["run", "--mode=sideways", "--config=x"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
