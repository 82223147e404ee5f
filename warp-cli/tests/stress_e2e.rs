//! The invariant stress suite (docs/guarantees.md): random inserts, updates and deletes, each update
//! bumping a per-row counter, run while the replicator snapshots and streams; the
//! replicator is SIGKILLed at random moments and restarted, again and again. At the end
//! the destination equals the source row for row, and no row's `_cartridge_version`
//! exceeds the changes made to it at the source (a replayed change would push it above).
//!
//! Bounded by default (10 kills, 5,000 rows); `WARP_STRESS=long` (scripts/stress.sh) runs
//! 60 kills over 50,000 rows. `WARP_STRESS_SEED` replays a run. Each run appends its
//! report to target/stress-report.txt.

use warp_fixtures::mongo_store;
use warp_fixtures::mysql_shop;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson};
use warp_core::Row;
use warp_e2e::{Process, Rng};

struct Plan {
    kills: usize,
    rows: i64,
    seed: u64,
}

fn plan() -> Plan {
    let long = std::env::var("WARP_STRESS").is_ok_and(|v| v == "long");
    let seed = std::env::var("WARP_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    Plan {
        kills: if long { 60 } else { 10 },
        rows: if long { 50_000 } else { 5_000 },
        seed,
    }
}

/// Starts the replicator, then SIGKILLs and restarts it `kills` times, 0.3–2.5 s apart.
async fn kill_and_restart(kills: usize, rng: &mut Rng, start: impl Fn() -> Process) -> Process {
    let mut run = start();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2200))).await;
        run.kill();
        run = start();
    }
    run
}

/// One random workload step over `live` ids: 60% counter updates, 25% inserts, 15%
/// deletes. Returns the id it touched, and what it did.
enum Step {
    Update(i64),
    Insert(i64),
    Delete(i64),
}

fn step(rng: &mut Rng, live: &mut Vec<i64>, next_id: &mut i64) -> Step {
    let roll = rng.below(100);
    if live.is_empty() || (60..85).contains(&roll) {
        *next_id += 1;
        live.push(*next_id);
        Step::Insert(*next_id)
    } else if roll < 60 {
        Step::Update(live[rng.below(live.len() as u64) as usize])
    } else {
        Step::Delete(live.swap_remove(rng.below(live.len() as u64) as usize))
    }
}

/// Runs `write` for random steps until `stop`, counting changes.
fn workload<F, Fut>(
    seed: u64,
    rows: i64,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    write: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Step) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut live: Vec<i64> = (1..=rows).collect();
        let mut next_id = rows;
        while !stop.load(Ordering::SeqCst) {
            write(step(&mut rng, &mut live, &mut next_id)).await;
            changes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    })
}

/// Rows on one side but not the other (by first column, the key).
fn mismatches(source: &[Row], dest: &[Row]) -> usize {
    let index = |rows: &[Row]| -> HashMap<String, Row> {
        rows.iter()
            .map(|r| (format!("{:?}", r.values[0]), r.clone()))
            .collect()
    };
    let (s, d) = (index(source), index(dest));
    s.iter().filter(|(k, r)| d.get(*k) != Some(*r)).count()
        + d.keys().filter(|k| !s.contains_key(*k)).count()
}

/// Reports the run (stdout and target/stress-report.txt) and asserts nothing differs.
fn conclude(source: &str, plan: &Plan, changes: u64, src: &[Row], dest: &[Row]) {
    let bad = mismatches(src, dest);
    report(&format!(
        "stress {source}: seed {}, {} SIGKILLs, {changes} source changes, {} rows at the end, {bad} mismatches",
        plan.seed,
        plan.kills,
        src.len()
    ));
    assert_eq!(bad, 0, "replay with WARP_STRESS_SEED={}", plan.seed);
}

fn report(line: &str) {
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/stress-report.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

#[tokio::test]
async fn mysql_survives_random_sigkills_under_a_random_workload() {
    let plan = plan();
    let mut rng = Rng::new(plan.seed);
    let shop = Arc::new(mysql_shop::shop("stress", 1, 250).await);
    shop.exec("DROP TABLE orders, customers").await;
    shop.exec(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, counter INT NOT NULL, payload VARCHAR(40))",
    )
    .await;
    shop.exec(&format!(
        "INSERT INTO items SELECT seq, 0, CONCAT('p', seq) FROM seq_1_to_{}",
        plan.rows
    ))
    .await;
    for id in 1..=plan.rows {
        shop.wrote("items", id);
    }
    let (stop, changes) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = {
        let shop = Arc::clone(&shop);
        workload(
            plan.seed,
            plan.rows,
            Arc::clone(&stop),
            Arc::clone(&changes),
            move |s| {
                let shop = Arc::clone(&shop);
                async move {
                    let (sql, id) = match s {
                        Step::Update(id) => (
                            format!("UPDATE items SET counter = counter + 1 WHERE id = {id}"),
                            id,
                        ),
                        Step::Insert(id) => (
                            format!("INSERT INTO items VALUES ({id}, 0, 'new {id}')"),
                            id,
                        ),
                        Step::Delete(id) => (format!("DELETE FROM items WHERE id = {id}"), id),
                    };
                    shop.exec(&sql).await;
                    shop.wrote("items", id);
                }
            },
        )
    };
    let start = || shop.run_replica("stress", warp_e2e::free_port());
    let mut run = kill_and_restart(plan.kills, &mut rng, start).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("items").await;
    let (src, dest, _) = shop.both("items").await;
    conclude("mysql", &plan, changes.load(Ordering::SeqCst), &src, &dest);
    shop.assert_no_double_apply("items").await;
    assert!(run.terminate().success(), "{}", shop.replica_log("stress"));
}

#[tokio::test]
async fn mongodb_survives_random_sigkills_under_a_random_workload() {
    let plan = plan();
    let mut rng = Rng::new(plan.seed);
    let store = Arc::new(mongo_store::store("stress", 250, "    items: {}\n").await);
    let docs: Vec<_> = (1..=plan.rows)
        .map(|id| doc! { "_id": id, "counter": 0, "payload": format!("p{id}") })
        .collect();
    store.insert("items", docs).await;
    let (stop, changes) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = {
        let store = Arc::clone(&store);
        workload(
            plan.seed,
            plan.rows,
            Arc::clone(&stop),
            Arc::clone(&changes),
            move |s| {
                let store = Arc::clone(&store);
                async move {
                    let items = store.coll("items");
                    let id = match s {
                        Step::Update(id) => {
                            items
                                .update_one(doc! { "_id": id }, doc! { "$inc": { "counter": 1 } })
                                .await
                                .unwrap();
                            id
                        }
                        // One document per write: the emulator's change streams miss parts of
                        // multi-document inserts.
                        Step::Insert(id) => {
                            items.insert_one(doc! { "_id": id, "counter": 0, "payload": format!("new {id}") }).await.unwrap();
                            id
                        }
                        Step::Delete(id) => {
                            items.delete_one(doc! { "_id": id }).await.unwrap();
                            id
                        }
                    };
                    store.wrote("items", &Bson::Int64(id));
                }
            },
        )
    };
    let start = || store.run_replica("stress");
    let mut run = kill_and_restart(plan.kills, &mut rng, start).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    store.wait_equal("items").await;
    let (src, dest, _) = store.both("items").await;
    conclude(
        "mongodb",
        &plan,
        changes.load(Ordering::SeqCst),
        &src,
        &dest,
    );
    store.assert_no_double_apply("items").await;
    assert!(run.terminate().success(), "{}", store.replica_log("stress"));
}
