//! The operator's status page (`GET /` on the health port) in headless Chromium, served by
//! the real binary replicating the MariaDB peer: the snapshot's progress bar, then the
//! `streaming` state without a reload, then a keyless table's failure with its reason and
//! hint; what the page shows agrees with `/status`. Screenshots go to
//! `target/tmp/status-page-*.png`.

use warp_fixtures::mysql_shop;

use std::path::Path;

use mysql_shop::shop;
use serde_json::Value;
use warp_e2e::browser::Browser;

/// What `/status` says of one table, as the page should show it.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Listed {
    schema: String,
    table: String,
    state: Option<String>,
    owner: Option<String>,
    dead_letters: i64,
    schema_version: Option<i32>,
    last_error: Option<String>,
    hint: Option<String>,
}

#[derive(serde::Deserialize)]
struct StatusReply {
    tables: Vec<Listed>,
}

/// Each table row of the page, read from the DOM in `/status`'s terms.
const READ_PAGE: &str = r#"
return [...document.querySelectorAll("tr[data-table]")].map((row) => {
  const name = row.dataset.table;
  const detail = document.querySelector(`tr[data-detail="${name}"]`);
  const text = (sel) => { const e = detail && detail.querySelector(sel); return e ? e.textContent.replace(/^[^:]+: /, "") : null; };
  const cells = row.querySelectorAll("td");
  const owner = cells[5].textContent.replace(" (this replica)", "");
  return {
    schema: name.split(".")[0], table: name.split(".").slice(1).join("."),
    state: row.dataset.state === "unknown" ? null : row.dataset.state,
    owner: owner === "no live lease" ? null : owner,
    dead_letters: Number(cells[6].textContent.replace(/,/g, "")),
    schema_version: cells[7].textContent === "—" ? null : Number(cells[7].textContent),
    last_error: text(".reason"), hint: text(".hint"),
  };
});"#;

fn page_rows(browser: &Browser) -> Vec<Listed> {
    serde_json::from_value(browser.eval(READ_PAGE)).expect("rows as /status lists them")
}

fn status(port: u16) -> Vec<Listed> {
    let (code, body) = warp_e2e::http_get(port, "/status").expect("/status answers");
    assert_eq!(code, 200, "{body}");
    let reply: StatusReply = serde_json::from_str(&body).expect("/status JSON");
    let mut tables = reply.tables;
    tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    tables
}

/// The state and progress value of `table`'s row (`null` while the row is not shown).
fn row(browser: &Browser, table: &str) -> Value {
    browser.eval(&format!(
        r#"const row = document.querySelector('tr[data-table="{table}"]');
           if (!row) return null;
           const bar = row.querySelector("progress");
           const verified = row.querySelector("[data-verified]");
           const detail = document.querySelector('tr[data-detail="{table}"]');
           return {{ state: row.dataset.state, progress: bar ? Number(bar.value) : null,
                     verified: verified ? verified.dataset.verified : null,
                     detail: detail ? detail.textContent : null }};"#
    ))
}

async fn wait_row(
    browser: &Browser,
    table: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
    log: impl Fn() -> String,
) -> Value {
    let shown = || Some(row(browser, table)).filter(|seen| done(seen));
    let state = || format!("last seen {}\n{}", row(browser, table), log());
    warp_e2e::eventually(&format!("{table} {what} on the page"), shown, state).await
}

/// An Ingress's path prefix in front of the health port: `GET /<prefix>/x` is forwarded
/// as `GET /x` (as HTTP/1.0, one request per connection); anything else is refused.
async fn behind_prefix(prefix: &'static str, health: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (line, headers) = head.split_once("\r\n").unwrap_or_default();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let Some(rest) = path.strip_prefix(prefix) else {
                    let _ = client
                        .write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let rest = if rest.is_empty() { "/" } else { rest };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", health)).await
                else {
                    return;
                };
                // No keep-alive: a second request on this connection would skip the rewrite.
                let headers: String = headers
                    .split("\r\n")
                    .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
                    .map(|h| format!("{h}\r\n"))
                    .collect();
                let request = format!("{method} {rest} HTTP/1.0\r\nConnection: close\r\n{headers}");
                if upstream.write_all(request.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut upstream, &mut client).await;
                }
            });
        }
    });
    port
}

// Multi-threaded: the browser calls block their thread while the prefix proxy serves
// Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_snapshot_into_streaming_and_shows_a_failed_table() {
    let shop = shop("page", 40_000, 400).await;
    warp_e2e::tune(&shop.config, "table_discovery_interval", "1");
    let config = std::fs::read_to_string(&shop.config).unwrap();
    std::fs::write(
        &shop.config,
        format!("{config}verification: {{ pass_interval: 1, recheck_delay: 0.5, rows_per_second: 100000 }}\n"),
    )
    .unwrap();
    let health = warp_e2e::free_port();
    let _run = shop.run_replica("page-a", health);
    let orders = format!("{}.orders", shop.db);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));

    // Hold orders' copy after its first chunk: another session locks its landing table.
    let exists = format!("SELECT (to_regclass('{orders}') IS NOT NULL)::int::bigint");
    let copied = format!("SELECT count(*)::bigint FROM {orders}");
    let landed = async || {
        let first =
            shop.scalar_pg(exists.clone()).await != 0 && shop.scalar_pg(copied.clone()).await != 0;
        first.then_some(())
    };
    let what = "orders' first chunk landed";
    warp_e2e::eventually_with(what, warp_e2e::Poll::TIGHT, landed, || shop.log()).await;
    let lock = shop.lock_landing("orders").await;

    let browser = Browser::start(&shop.dir.join("chromedriver.log"));
    browser.open(&format!("http://127.0.0.1:{health}/"));
    // Set once: were the page reloaded, it would be gone.
    browser.eval("window.loadedOnce = 42; return null;");
    let copying = wait_row(
        &browser,
        &orders,
        "copying with a progress bar",
        |r| r["state"] == "snapshotting" && r["progress"].is_number(),
        || shop.log(),
    )
    .await;
    let progress = copying["progress"].as_f64().unwrap();
    assert!(
        (0.0..100.0).contains(&progress),
        "held after its first chunk, orders is not fully copied: {copying}"
    );
    browser.screenshot(&shots.join("status-page-snapshot.png"));

    drop(lock);
    wait_row(
        &browser,
        &orders,
        "streaming",
        |r| r["state"] == "streaming" && r["progress"].is_null(),
        || shop.log(),
    )
    .await;
    // Verification: a clean pass shown as such, then a row changed behind the
    // replicator's back shown with its key.
    wait_row(
        &browser,
        &orders,
        "verified",
        |r| r["verified"] == "ok",
        || shop.log(),
    )
    .await;
    shop.scalar_pg(format!(
        "WITH t AS (UPDATE {orders} SET status = 'tampered' WHERE id = 7 RETURNING 1) SELECT count(*) FROM t"
    ))
    .await;
    let differs = wait_row(
        &browser,
        &orders,
        "shown differing",
        |r| r["verified"] == "mismatch",
        || shop.log(),
    )
    .await;
    let detail = differs["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Verification: 1 row differs") && detail.contains("keys: 7"),
        "{differs}"
    );
    browser.screenshot(&shots.join("status-page-verification.png"));

    // A table without a key, created while running: found, refused, shown with its hint.
    shop.exec("CREATE TABLE audit_log (line TEXT)").await;
    let audit = format!("{}.audit_log", shop.db);
    wait_row(
        &browser,
        &audit,
        "failed",
        |r| r["state"] == "failed",
        || shop.log(),
    )
    .await;
    let rows = page_rows(&browser);
    let failed = rows.iter().find(|r| r.table == "audit_log").unwrap();
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no primary key")),
        "{failed:?}"
    );
    assert!(
        failed
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("primary_key")),
        "{failed:?}"
    );
    let first_group =
        browser.eval(r#"return document.querySelector("section[data-group]").dataset.group;"#);
    assert_eq!(first_group, "failed", "failed tables come first");
    assert_eq!(
        browser.eval("return window.loadedOnce;"),
        42,
        "the page updated itself without a reload"
    );

    // The page and /status agree, table by table (the page may be one poll behind).
    let shown = || {
        let mut shown = page_rows(&browser);
        shown.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        shown
    };
    let agree = || {
        let listed = status(health);
        (shown() == listed).then_some(listed)
    };
    let state = || {
        format!(
            "the page shows {:?}\n/status lists {:?}",
            shown(),
            status(health)
        )
    };
    let listed = warp_e2e::eventually("the page agreeing with /status", agree, state).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed.iter().all(|t| t.owner.as_deref() == Some("page-a")),
        "{listed:?}"
    );
    browser.screenshot(&shots.join("status-page-failed.png"));

    // Behind an Ingress path prefix (`/<schema>`, no trailing slash) the page finds its
    // `/status` under the prefix too.
    let proxy = behind_prefix("/e2e_page", health).await;
    browser.open(&format!("http://127.0.0.1:{proxy}/e2e_page"));
    wait_row(
        &browser,
        &audit,
        "failed behind the path prefix",
        |r| r["state"] == "failed",
        || shop.log(),
    )
    .await;
}
