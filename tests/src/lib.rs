//! Support for end-to-end suites: where the database peers started by
//! `scripts/peers.sh` listen. A suite that needs a peer fails loudly when it is missing;
//! it never skips silently.

pub mod browser;
pub mod fake_sts;
pub mod http_faults;
pub mod partition_rule;
pub mod private_mariadb;
pub mod private_pg;
pub mod proxy;
pub mod replica;
pub mod tls;

/// The URL of a peer from its `WARP_TEST_*` variable (`scripts/peers.sh env` prints them).
/// `attempt` until it succeeds or fails for good: transient errors are retried, as
/// the engine does, for up to a minute (a deadline for a hung server, not a slow one).
pub async fn retried<T, F, Fut>(attempt: F) -> warp_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = warp_core::Result<T>>,
{
    let backoff = warp_core::Backoff {
        base: std::time::Duration::from_millis(50),
        max: std::time::Duration::from_secs(1),
    };
    backoff
        .retry_transient(std::time::Duration::from_secs(60), attempt)
        .await
}

pub fn peer_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the peers with `scripts/peers.sh start` and export `scripts/peers.sh env`, or run scripts/test.sh")
    })
}

/// `host:port` of a URL such as `mysql://root@127.0.0.1:3307`.
pub fn host_port(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?'])
        .next()
        .unwrap_or(after_scheme);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .to_owned()
}

/// A TCP port free right now on 127.0.0.1 (for a child process to bind), never one this
/// process handed out before: the OS may offer a port just released again, and two calls
/// for one config (metrics and health ports) once returned the same port, which the
/// config then refused (mongo_e2e, 2026-12-07).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if given.insert(port) {
            return port;
        }
    }
}

/// `GET path` over plain HTTP/1.0: (status, body), or `None` when nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `cartridge-warp status --json --config config`: every table's report, as the CLI
/// prints it (so a change of its JSON shape fails here).
pub fn status(bin: &str, config: &std::path::Path) -> Vec<warp_core::TableReport> {
    let out = std::process::Command::new(bin)
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run cartridge-warp status");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is a list of table reports")
}

/// `cartridge-warp resync` of one table; its output.
pub fn resync(bin: &str, config: &std::path::Path, schema: &str, table: &str) -> String {
    let out = std::process::Command::new(bin)
        .args(["resync", "--config"])
        .arg(config)
        .args(["--schema", schema, "--table", table])
        .output()
        .expect("run cartridge-warp resync");
    assert!(
        out.status.success(),
        "resync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long a suite waits for a condition before it fails: a deadline for a hung
/// replicator, not a measure of a slow one.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// How a wait polls: every `every`, for at most `patience`.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub every: std::time::Duration,
    pub patience: std::time::Duration,
}

impl Poll {
    /// For what takes seconds (a copy, a restart, a status change).
    pub const SECONDS: Self = Self {
        every: std::time::Duration::from_millis(200),
        patience: PATIENCE,
    };
    /// For a state that passes quickly (a commit to see before the next one).
    pub const TIGHT: Self = Self {
        every: std::time::Duration::from_millis(10),
        patience: PATIENCE,
    };

    /// The same, waiting at most `patience` (a stall must fail before a harness timeout).
    pub const fn patience(self, patience: std::time::Duration) -> Self {
        Self { patience, ..self }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, and returns that; fails after
/// [`PATIENCE`] naming `what`, with `state()` (what the suite last saw, a log tail).
pub async fn eventually<T>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> T {
    eventually_with(what, Poll::SECONDS, async || check(), state).await
}

/// [`eventually`] for a check that waits itself (a query, a request), polled as `poll`
/// says. Every condition wait of the suites goes through here: none sleeps a fixed time.
pub async fn eventually_with<T>(
    what: &str,
    poll: Poll,
    mut check: impl AsyncFnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + poll.patience;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            state()
        );
        tokio::time::sleep(poll.every).await;
    }
}

/// [`eventually`] for code that cannot await (starting a server process or a driver
/// before any runtime work): blocks the thread between polls.
pub fn eventually_blocking<T>(
    what: &str,
    poll: Poll,
    mut check: impl FnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + poll.patience;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            state()
        );
        std::thread::sleep(poll.every);
    }
}

/// Waits until every one of `tables` is failed in `status` with a hint naming `resync`
/// (a lost source position); `log` says what the replicator wrote when it never is.
pub async fn wait_lost(
    bin: &str,
    config: &std::path::Path,
    tables: &[&str],
    log: impl Fn() -> String,
) {
    let lost = || {
        let status = status(bin, config);
        tables
            .iter()
            .all(|name| {
                status.iter().any(|t| {
                    t.table == *name
                        && t.state == Some(warp_core::TableState::Failed)
                        && t.hint.as_deref().is_some_and(|h| h.contains("resync"))
                })
            })
            .then_some(())
    };
    let what = format!("{tables:?} to stop with a resync hint");
    eventually(&what, lost, || {
        format!("{:?}\n{}", status(bin, config), log())
    })
    .await;
}

/// Waits until `status` for `config` shows `n` tables streaming; `log` says what the
/// replicator wrote when it never does.
pub async fn wait_streaming(
    bin: &str,
    config: &std::path::Path,
    n: usize,
    log: impl Fn() -> String,
) {
    let streaming = || {
        let status = status(bin, config);
        let live = status.iter();
        (live
            .filter(|t| t.state == Some(warp_core::TableState::Streaming))
            .count()
            == n)
            .then_some(())
    };
    let what = format!("{n} tables streaming");
    eventually(&what, streaming, || {
        format!("{:?}\n{}", status(bin, config), log())
    })
    .await;
}

/// Sets `key: value` in the `performance` mapping of the config file at `config` (written
/// as `performance: { … }` by the suites).
pub fn tune(config: &std::path::Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let tuned = text.replacen(
        "performance: { ",
        &format!("performance: {{ {key}: {value}, "),
        1,
    );
    assert_ne!(tuned, text, "the config has a performance mapping");
    std::fs::write(config, tuned).expect("write config");
}

/// A child process (usually `cartridge-warp run`) that is SIGKILLed and reaped when
/// dropped, so a failing test never leaves one running.
pub struct Process(pub std::process::Child);

impl Process {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(program: &str, args: &[&str], log: &std::path::Path) -> Self {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        Self::start(cmd, log)
    }

    /// Starts `cmd` (with whatever environment it was given), output appended to `log`.
    pub fn start(mut cmd: std::process::Command, log: &std::path::Path) -> Self {
        use std::process::Stdio;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        Self(
            cmd.stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }

    /// SIGKILL, as a crash: nothing runs after it.
    pub fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }

    /// Sends `signal` (`STOP`, `CONT`, …) without waiting: a stopped process is frozen
    /// mid-flight, as a long pause or a partition looks to the others.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// SIGTERM, as Kubernetes stops a pod; returns how the process exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill -TERM");
        self.0.wait().expect("reap")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cartridge-warp run --config config` as replica `pod` (`POD_NAME`), with its own
/// health port and a free metrics port, logging to `<log_dir>/<pod>.log`.
pub fn run_replica(
    bin: &str,
    config: &std::path::Path,
    log_dir: &std::path::Path,
    pod: &str,
    health_port: u16,
) -> Process {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["run", "--config", config.to_str().expect("utf-8 path")])
        .env("POD_NAME", pod)
        .env(
            "CARTRIDGE_WARP_MONITORING__HEALTH_CHECK_PORT",
            health_port.to_string(),
        )
        .env(
            "CARTRIDGE_WARP_MONITORING__METRICS_PORT",
            free_port().to_string(),
        );
    Process::start(cmd, &log_dir.join(format!("{pod}.log")))
}

/// A small deterministic generator (xorshift64*) for randomized tests: print the seed,
/// and a failure replays with `WARP_STRESS_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: std::collections::BTreeSet<u16> = (0..200).map(|_| super::free_port()).collect();
        assert_eq!(ports.len(), 200);
    }
}
