//! `cartridge-warp verify` against a running MariaDB → PostgreSQL replication: rows
//! tampered with behind the replicator's back are found while writes keep flowing
//! (and those writes are never reported), `--repair` rewrites exactly the tampered rows,
//! and a clean run exits 0.

use warp_fixtures::mongo_store;
use warp_fixtures::mysql_shop;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_shop::{shop, Shop};

fn verify(config: &Path, schema: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cartridge-warp"))
        .args([
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--schema",
            schema,
        ])
        .args(["--recheck-delay", "1"])
        .args(extra)
        .output()
        .unwrap()
}

/// The keys of every mismatch in a `verify --json` report, as text.
fn reported_keys(report: &[u8]) -> BTreeSet<String> {
    let reports: Vec<serde_json::Value> = serde_json::from_slice(report).unwrap();
    reports
        .iter()
        .flat_map(|r| r["mismatches"].as_array().cloned().unwrap_or_default())
        .flat_map(|m| m["keys"].as_array().cloned().unwrap_or_default())
        .map(|k| match &k["v"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// `xmin` per order id: a row rewritten by anyone gets a new one.
async fn xmins(shop: &Shop) -> BTreeMap<i64, String> {
    sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(format!(
        "SELECT id, xmin::text FROM {}.orders",
        shop.db
    )))
    .fetch_all(&shop.pg)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn tamper(shop: &Shop, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.replace("{db}", &shop.db)))
        .execute(&shop.pg)
        .await
        .unwrap();
}

/// Behind the replicator's back: one row changed (42), a range of ten gone (700–709), one
/// row invented (999999). Returns the keys.
async fn tamper_three_ways(shop: &Shop) -> BTreeSet<i64> {
    tamper(
        shop,
        "UPDATE {db}.orders SET status = 'tampered' WHERE id = 42",
    )
    .await;
    tamper(shop, "DELETE FROM {db}.orders WHERE id BETWEEN 700 AND 709").await;
    tamper(
        shop,
        "INSERT INTO {db}.orders (id, customer_id, status) VALUES (999999, 1, 'ghost')",
    )
    .await;
    [42].into_iter().chain(700..=709).chain([999_999]).collect()
}

#[tokio::test]
async fn verify_finds_tampering_online_and_repair_fixes_exactly_it() {
    let shop = Arc::new(shop("verify", 3000, 500).await);
    let mut run = shop.run();
    shop.wait_equal("orders").await;
    shop.wait_equal("customers").await;

    // Writes keep landing on ids 2001..=3000 throughout: verify must not report them.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (shop, stop) = (Arc::clone(&shop), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let id = 2001 + (round * 37) % 1000;
                shop.exec(&format!(
                    "UPDATE orders SET amount = amount + 1 WHERE id = {id}"
                ))
                .await;
                shop.wrote("orders", id);
                round += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let tampered = tamper_three_ways(&shop).await;
    // The invented row's version 1 is the test's own write, not a replayed change.
    shop.wrote("orders", 999_999);

    let out = verify(&shop.config, &shop.db, &["--json", "--table", "orders"]);
    let text = text(&out.stdout);
    assert!(!out.status.success(), "differences exit non-zero\n{text}");
    let reports: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let orders = &reports[0];
    let found = reported_keys(&out.stdout);
    assert_eq!(
        found,
        tampered
            .iter()
            .map(ToString::to_string)
            .collect::<BTreeSet<_>>(),
        "exactly the tampered rows, none of the live writes\n{text}"
    );
    let sum = |f: &str| -> u64 {
        orders["mismatches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[f].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("missing"), sum("extra"), sum("different")),
        (10, 1, 1),
        "{text}"
    );
    assert_eq!(
        orders["mismatches"].as_array().unwrap().len(),
        3,
        "three ranges\n{text}"
    );

    // --repair rewrites those rows and no other.
    let before = xmins(&shop).await;
    let metrics = shop.dir.join("verify.prom");
    let out = verify(
        &shop.config,
        &shop.db,
        &["--repair", "--metrics-file", metrics.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "repaired: exit 0\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("repaired: 11 written, 1 deleted, 0 left"),
        "{text}"
    );
    let after = xmins(&shop).await;
    for (id, xmin) in &before {
        if !tampered.contains(id) && !(2001..=3000).contains(id) {
            assert_eq!(after.get(id), Some(xmin), "order {id} was rewritten");
        }
    }
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("cartridge_warp_verify_mismatched_rows"),
        "{prom}"
    );
    assert!(
        prom.contains("cartridge_warp_verify_repaired_rows"),
        "{prom}"
    );

    let out = verify(&shop.config, &shop.db, &[]);
    assert!(
        out.status.success(),
        "clean now\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("orders").await;
    shop.assert_no_double_apply("orders").await;
    assert!(run.terminate().success());
}

#[tokio::test]
async fn verify_compares_mongodb_documents_in_their_landed_shape() {
    let store = mongo_store::store("verify", 100, "    docs: {}\n").await;
    let docs: Vec<_> = (1..=300)
        .map(|i| bson::doc! { "_id": i, "n": i, "tag": format!("t{i}"), "sub": { "x": i } })
        .collect();
    store.insert("docs", docs).await;
    let mut run = store.run();
    store.wait_equal("docs").await;
    let out = verify(&store.config, &store.db, &[]);
    assert!(
        out.status.success(),
        "equal at first\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    for sql in [
        "UPDATE {db}.docs SET tag = 'tampered' WHERE _id = '7'",
        "DELETE FROM {db}.docs WHERE _id = '250'",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.replace("{db}", &store.db)))
            .execute(&store.pg)
            .await
            .unwrap();
    }
    let out = verify(&store.config, &store.db, &["--json"]);
    assert!(!out.status.success());
    assert_eq!(
        reported_keys(&out.stdout),
        BTreeSet::from(["7".to_owned(), "250".to_owned()]),
        "{}",
        text(&out.stdout)
    );
    let out = verify(&store.config, &store.db, &["--repair"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    store.wait_equal("docs").await;
    assert!(run.terminate().success());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The port `key` (`metrics_port`, `health_check_port`) of a suite's config file.
fn port(config: &Path, key: &str) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let at = text.find(&format!("{key}: ")).unwrap() + key.len() + 2;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The `orders` table's background verification as `/status` shows it.
fn verification(health: u16) -> Option<serde_json::Value> {
    let (_, body) = warp_e2e::http_get(health, "/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["tables"]
        .as_array()?
        .iter()
        .find(|t| t["table"] == "orders")
        .map(|t| t["verification"].clone())
        .filter(|v| !v.is_null())
}

fn gauge(metrics: u16, name: &str, db: &str) -> Option<f64> {
    let (_, body) = warp_e2e::http_get(metrics, "/metrics")?;
    let prefix = format!("{name}{{schema=\"{db}\",table=\"orders\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn run_verifies_in_the_background_reports_tampering_and_repairs_when_asked() {
    let shop = shop("bgverify", 2000, 500).await;
    let base = std::fs::read_to_string(&shop.config).unwrap();
    // Small ranges, so one pass reads several; a second between passes.
    let settings = "verification: { pass_interval: 1, recheck_delay: 0.5, range_rows: 700 }\n";
    std::fs::write(&shop.config, format!("{base}{settings}")).unwrap();
    let (metrics, health) = (
        port(&shop.config, "metrics_port"),
        port(&shop.config, "health_check_port"),
    );
    let mut run = shop.run();
    shop.wait_equal("orders").await;
    let state = || format!("{:?}\n{}", verification(health), shop.log());

    // A clean pass first: nothing reported on a table that equals its source.
    let clean = warp_e2e::eventually(
        "a complete pass",
        || verification(health).filter(|v| v["passes"].as_u64() >= Some(1)),
        state,
    )
    .await;
    assert_eq!(clean["mismatched_rows"], 0, "{clean}");
    assert_eq!(clean["extra_rows_checked"], true, "{clean}");
    assert!(
        clean["ranges"].as_u64() >= Some(3),
        "several ranges: {clean}"
    );

    tamper_three_ways(&shop).await;
    let found = warp_e2e::eventually(
        "the tampering reported in /status",
        || verification(health).filter(|v| v["mismatched_rows"] == 12),
        state,
    )
    .await;
    let summary = found["last_mismatch"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        summary.contains("10 missing, 1 extra, 1 different") && summary.contains("999999"),
        "{found}"
    );
    warp_e2e::eventually(
        "the mismatch in /metrics",
        || {
            (gauge(metrics, "cartridge_warp_verify_mismatched_rows", &shop.db) == Some(12.0))
                .then_some(())
        },
        state,
    )
    .await;
    assert!(gauge(metrics, "cartridge_warp_verify_passes_total", &shop.db) >= Some(2.0));
    // `status` reads what the replica recorded in the metadata schema.
    warp_e2e::eventually(
        "the mismatch recorded for `status`",
        || {
            shop.status().into_iter().find(|t| {
                t.table == "orders"
                    && t.verification
                        .as_ref()
                        .is_some_and(|v| v.mismatched_rows == 12)
            })
        },
        state,
    )
    .await;
    // Reporting never writes.
    assert_eq!(
        shop.scalar_pg(format!(
            "SELECT count(*) FROM {}.orders WHERE status = 'tampered'",
            shop.db
        ))
        .await,
        1
    );
    assert!(run.terminate().success());

    // With `mode: repair` the differences are rewritten from the source.
    let repairing = settings.replace("pass_interval", "mode: repair, pass_interval");
    std::fs::write(&shop.config, format!("{base}{repairing}")).unwrap();
    let mut run = shop.run();
    let repaired = warp_e2e::eventually(
        "a repairing pass",
        || verification(health).filter(|v| v["repaired_rows"] == 12),
        state,
    )
    .await;
    assert_eq!(repaired["mismatched_rows"], 0, "{repaired}");
    shop.wait_equal("orders").await;
    assert!(run.terminate().success());
}
