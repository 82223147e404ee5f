//! Headless Chromium driven through chromedriver's W3C WebDriver API, for the status page
//! test. Four commands are all it needs (new session, navigate, run a script, screenshot),
//! so they are sent here over plain HTTP rather than through a WebDriver crate (fantoccini
//! would bring a second TLS stack with a C build for a client that only talks to
//! localhost). `scripts/browser.sh` installs Debian's `chromium` and `chromium-driver`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::Process;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    port: u16,
    session: String,
    _driver: Process,
}

/// One WebDriver command: the reply's `value`, or the driver's error as a panic message.
fn command(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        // HTTP/1.1 and a Host with the port: chromedriver answers HTTP/1.0, or another
        // host, with nothing (its guard against DNS rebinding).
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then as many bytes as its Content-Length.
    let mut response = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (head, body) = loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{method} {path}: connection closed"));
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| format!("no Content-Length: {head}"))?;
            let mut body = response[end + 4..].to_vec();
            while body.len() < length {
                let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err(format!("{method} {path}: reply cut short"));
                }
                body.extend_from_slice(&buf[..n]);
            }
            break (head, String::from_utf8_lossy(&body).into_owned());
        }
    };
    let reply: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {head}\n{body}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {head}\n{reply}"));
    }
    Ok(reply.get("value").cloned().unwrap_or(Value::Null))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; fails naming the script that
    /// installs them when they are missing.
    pub fn start(log: &Path) -> Self {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: run scripts/browser.sh (Debian's chromium and chromium-driver)"
            );
        }
        let port = crate::free_port();
        let driver = Process::spawn(CHROMEDRIVER, &[&format!("--port={port}")], log);
        let ready = || {
            let status = command(port, "GET", "/status", None).ok()?;
            (status.get("ready").and_then(Value::as_bool) == Some(true)).then_some(())
        };
        let state = || std::fs::read_to_string(log).unwrap_or_default();
        crate::eventually_blocking("chromedriver ready", crate::Poll::SECONDS, ready, state);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1360,1000"],
            },
        }}});
        let session = command(port, "POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("a Chromium session: {e}"));
        let session = session
            .get("sessionId")
            .and_then(Value::as_str)
            .expect("a session id")
            .to_owned();
        Self {
            port,
            session,
            _driver: driver,
        }
    }

    fn call(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        command(self.port, method, &path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Saves a PNG of the window at `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.call("GET", "screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        std::fs::write(path, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; the driver is killed with its `Process`.
        let _ = command(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}
