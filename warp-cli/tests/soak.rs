//! The soak (issue 21; not in CI, `scripts/soak.sh`): mixed load on three tables for
//! `WARP_SOAK_SECS` (1800 by default) while the replicator is SIGKILLed every 20–60 s and
//! restarted, and the destination (a private PostgreSQL cluster) is restarted once half-way.
//! Ends with every table equal to the source row for row and no `_cartridge_version` above
//! the source's changes to its row. Background verification runs throughout (a pass every
//! 2 s) and must never report a difference: its state is read from `/status` every 2 s.
//! Prints a report line (kept in docs/testing.md).

use warp_fixtures::mysql_shop;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_shop::{keep_writing, shop_to, Shop};
use warp_e2e::private_pg::PrivatePg;
use warp_e2e::Rng;

/// Inserts into `events` and deletes some of what it inserted until `stop`.
fn keep_inserting(
    shop: &Arc<Shop>,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (shop, stop, done) = (Arc::clone(shop), Arc::clone(stop), Arc::clone(done));
    tokio::spawn(async move {
        let mut id = 1_000_000i64;
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            shop.exec(&format!(
                "INSERT INTO events VALUES ({id}, 'new', JSON_OBJECT('n', {id}))"
            ))
            .await;
            shop.wrote("events", id);
            if id % 3 == 0 {
                let gone = id - 2;
                shop.exec(&format!("DELETE FROM events WHERE id = {gone}"))
                    .await;
                shop.wrote("events", gone);
            }
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn health_port(config: &str) -> u16 {
    let at = config.find("health_check_port: ").unwrap() + "health_check_port: ".len();
    config[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Verification passes seen in `/status` across the replicator's restarts; any table
/// with a confirmed mismatch fails the soak at once.
#[derive(Default)]
struct Passes {
    total: u64,
    /// The last count seen per table. A process counts from zero, and before its first
    /// pass a table shows the count its predecessor recorded: only increases are added,
    /// and a count below the last one is a new process's.
    last: std::collections::BTreeMap<String, u64>,
}

impl Passes {
    fn sample(&mut self, health: u16) {
        let Some((_, body)) = warp_e2e::http_get(health, "/status") else {
            return;
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
            return;
        };
        for t in status["tables"].as_array().into_iter().flatten() {
            let v = &t["verification"];
            if v.is_null() {
                continue;
            }
            assert_eq!(
                v["mismatched_rows"], 0,
                "verification reported a mismatch: {t}"
            );
            let table = t["table"].as_str().unwrap_or_default().to_owned();
            let n = v["passes"].as_u64().unwrap_or(0);
            let last = self.last.insert(table, n).unwrap_or(0);
            self.total += if n >= last { n - last } else { n };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 minutes: run by scripts/soak.sh"]
async fn soak_under_kills_and_a_destination_restart() {
    let seconds: u64 = std::env::var("WARP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(seed);
    let pg = PrivatePg::start("soak");
    let shop = Arc::new(shop_to("soak", 20_000, 2_000, &pg.url()).await);
    shop.exec("CREATE TABLE events (id BIGINT PRIMARY KEY, status VARCHAR(10), payload JSON)")
        .await;
    shop.exec("INSERT INTO events SELECT seq, 'seed', JSON_OBJECT('n', seq) FROM seq_1_to_20000")
        .await;
    for id in 1..=20_000 {
        shop.wrote("events", id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let updater = keep_writing(&shop, &["orders", "customers", "events"], 50, &stop);
    let inserter = keep_inserting(&shop, &stop, &inserted);

    let base = std::fs::read_to_string(&shop.config).unwrap();
    std::fs::write(
        &shop.config,
        format!("{base}verification: {{ pass_interval: 2 }}\n"),
    )
    .unwrap();
    let health = health_port(&base);
    let mut passes = Passes::default();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut run = shop.run();
    let (mut kills, mut restarted) = (0, false);
    while Instant::now() < end {
        let pause = Duration::from_secs(20 + rng.below(41));
        let until = Instant::now() + pause.min(end.saturating_duration_since(Instant::now()));
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(2)).await;
            passes.sample(health);
        }
        if !restarted && started.elapsed() >= Duration::from_secs(seconds / 2) {
            pg.restart();
            restarted = true;
            continue;
        }
        if Instant::now() < end {
            run.kill();
            kills += 1;
            run = shop.run();
        }
    }
    stop.store(true, Ordering::SeqCst);
    updater.await.unwrap();
    inserter.await.unwrap();
    for t in ["orders", "customers", "events"] {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    assert!(restarted, "the destination was restarted once");
    assert!(
        passes.total > 0,
        "background verification completed no pass"
    );
    let writes: u64 = shop.writes.lock().unwrap().values().sum();
    println!(
        "soak: {} s, seed {seed}, {kills} SIGKILLs, 1 PostgreSQL restart, {writes} source writes \
         ({} insert rounds), 3 tables equal, no version above the source's writes, \
         {} verification passes without a mismatch",
        started.elapsed().as_secs(),
        inserted.load(Ordering::Relaxed),
        passes.total
    );
    assert!(run.terminate().success(), "{}", shop.log());
}
