//! A PostgreSQL cluster of one test's own, so the test may restart it without disturbing
//! the suites sharing the machine's cluster: `initdb` as the `postgres` user under
//! /var/tmp (who may not enter a checkout under /root), trust authentication, on a free
//! port; stopped and removed when dropped. Needs root, as the suite runs in CI.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePg {
    dir: PathBuf,
    pub port: u16,
}

fn bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let version = versions
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a PostgreSQL version");
    version.join("bin").join(name)
}

fn as_postgres(program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    pub fn start(name: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/var/tmp/cartridge-warp-test-pg-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let owned = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(owned.success(), "a private cluster needs root (chown)");
        let path = dir.to_str().expect("utf-8 path").to_owned();
        as_postgres(
            "initdb",
            &["-D", &path, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        let port = crate::free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={path} -c fsync=off -c max_connections=100"
        );
        let log = format!("{path}/server.log");
        as_postgres(
            "pg_ctl",
            &["-D", &path, "-l", &log, "-w", "-o", &options, "start"],
        );
        Self { dir, port }
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// `pg_ctl restart -m fast`: every session is ended, its transaction rolled back.
    pub fn restart(&self) {
        // With its log file again: without one the server would hold pg_ctl's output open.
        let log = format!("{}/server.log", self.path());
        as_postgres(
            "pg_ctl",
            &["-D", self.path(), "-l", &log, "-m", "fast", "-w", "restart"],
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("pg_ctl"))
            .args(["-D", self.path(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
