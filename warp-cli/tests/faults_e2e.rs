//! Faults of the machine around the replicator, through the real binary: replication goes
//! on, and the destination ends equal to the source with no change applied twice.

#[path = "support/mysql_shop.rs"]
mod mysql_shop;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mysql_shop::shop;

/// A 64 KiB tmpfs at `dir`, unmounted when dropped. Needs root (as the suite runs in CI).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "a 64 KiB tmpfs for the full-disk case needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }

    /// Bytes written to files on it.
    fn used(&self) -> u64 {
        std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `logging.log_file` on a disk that fills up while replicating: the file stops growing,
/// logging goes on to stdout, and replication neither stops nor loses a change.
#[tokio::test]
async fn a_full_log_disk_degrades_logging_and_replication_goes_on() {
    let shop = shop("fulldisk", 2_000, 500).await;
    let disk = TinyDisk::mount(&shop.dir.join("logs"));
    let text = std::fs::read_to_string(&shop.config).unwrap();
    let logged = text.replacen(
        "logging: { level: info, format: text }",
        &format!(
            "logging: {{ level: debug, format: json, log_file: '{}' }}",
            disk.0.join("warp.log").display()
        ),
        1,
    );
    assert_ne!(logged, text, "the config has a logging mapping");
    std::fs::write(&shop.config, logged).unwrap();
    let health = warp_e2e::free_port();
    let mut run = shop.run_replica("fulldisk-a", health);
    shop.wait_streaming(2).await;

    // Debug lines fill the 64 KiB while changes stream.
    let mut round = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while disk.used() < 60 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log disk never filled ({} bytes)\n{}",
            disk.used(),
            shop.log()
        );
        round += 1;
        let id = round % 2_000 + 1;
        shop.exec(&format!(
            "UPDATE orders SET status = 'r{round}' WHERE id = {id}"
        ))
        .await;
        shop.wrote("orders", id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stdout_before = std::fs::metadata(shop.dir.join("fulldisk-a.log"))
        .unwrap()
        .len();

    // Full: every change from here on is written while logging cannot write its file.
    for i in 0..300i64 {
        let id = i % 2_000 + 1;
        shop.exec(&format!(
            "UPDATE orders SET note = 'full {i}' WHERE id = {id}"
        ))
        .await;
        shop.wrote("orders", id);
    }
    shop.exec("INSERT INTO customers VALUES (51, 'after the disk filled', 'gold', NULL)")
        .await;
    shop.wrote("customers", 51);
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;
    shop.assert_no_double_apply("orders").await;
    shop.assert_no_double_apply("customers").await;
    assert!(
        run.0.try_wait().unwrap().is_none(),
        "the replicator exited\n{}",
        shop.log()
    );
    assert_eq!(
        warp_e2e::http_get(health, "/health").map(|r| r.0),
        Some(200)
    );
    let stdout_after = std::fs::metadata(shop.dir.join("fulldisk-a.log"))
        .unwrap()
        .len();
    assert!(
        stdout_after > stdout_before,
        "logging to stdout stopped with the file"
    );
    assert!(run.terminate().success(), "{}", shop.log());
}
