//! A MariaDB server of one test's own, binlog on as the shared peer has it (ROW, FULL
//! image and metadata), so the test may restart it or purge its binlog without disturbing
//! the suites sharing the peer. Killed and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct PrivateMariadb {
    dir: PathBuf,
    pub port: u16,
    server: Option<Child>,
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl PrivateMariadb {
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cartridge-warp-test-mariadb-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal"])
            .args(["--skip-test-db", "--skip-name-resolve"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--user={}", user()))
            .output()
            .expect("mariadb-install-db (scripts/peers.sh installs MariaDB)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut me = Self {
            dir,
            port: crate::free_port(),
            server: None,
        };
        me.run();
        me
    }

    fn run(&mut self) {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d("data")))
            .arg(format!("--user={}", user()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d("sock")))
            .arg(format!("--pid-file={}", d("pid")))
            .arg(format!("--log-error={}", d("err")))
            .args([
                "--skip-name-resolve",
                "--server-id=1",
                "--log-bin=mysql-bin",
            ])
            .args(["--binlog-format=ROW", "--binlog-row-image=FULL"])
            .args([
                "--binlog-row-metadata=FULL",
                "--character-set-server=utf8mb4",
            ])
            .arg("--collation-server=utf8mb4_unicode_ci")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.server = Some(server);
        let answers = || {
            let ping = Command::new("mariadb-admin")
                .arg(format!("--socket={}", d("sock")))
                .args(["-uroot", "ping"])
                .output()
                .expect("mariadb-admin");
            ping.status.success().then_some(())
        };
        let state = || std::fs::read_to_string(d("err")).unwrap_or_default();
        crate::eventually_blocking("the private MariaDB", crate::Poll::SECONDS, answers, state);
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// A clean shutdown (SIGTERM, as a service manager stops it), then a start on the
    /// same port and data.
    pub fn restart(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status();
            server.wait().expect("mariadbd exits");
        }
        self.run();
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
