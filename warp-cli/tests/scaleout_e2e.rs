//! Three `cartridge-warp run` replicas of one MariaDB schema (docs/deploy.md, Scaling out): the tables split
//! between them, a SIGKILLed replica's tables are taken over, a frozen replica that wakes
//! up after losing its leases cannot commit, and the destination ends equal to the source
//! with no change applied twice.

use warp_fixtures::mysql_shop;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_shop::{shop, Shop};
use warp_core::TableState;
use warp_e2e::Process;

const TABLES: [&str; 6] = ["t1", "t2", "t3", "t4", "t5", "t6"];
const ROWS: i64 = 300;

struct Replica {
    pod: &'static str,
    port: u16,
    process: Process,
}

/// What a replica's `/status` says of one table.
#[derive(serde::Deserialize)]
struct Listed {
    table: String,
    state: Option<TableState>,
    /// The replica runs it itself.
    here: bool,
    /// Whoever holds its lease, as the metadata schema says.
    owner: Option<String>,
}

#[derive(serde::Deserialize)]
struct StatusReply {
    tables: Vec<Listed>,
}

/// The tables a replica runs, from its own `/status` (not from the leases table).
fn runs(r: &Replica) -> Option<Vec<String>> {
    let (code, body) = warp_e2e::http_get(r.port, "/status")?;
    if code != 200 {
        return None;
    }
    let reply: StatusReply = serde_json::from_str(&body).expect("/status lists tables");
    let mut names: Vec<String> = reply
        .tables
        .into_iter()
        .filter(|t| t.here && t.state != Some(TableState::Stopped))
        .map(|t| t.table)
        .collect();
    names.sort();
    Some(names)
}

/// Waits until the `live` replicas run every table between them, each exactly once,
/// `shares` apiece (in order).
async fn wait_split(shop: &Shop, live: &[&Replica], shares: &[usize]) {
    let views = || -> Vec<Option<Vec<String>>> { live.iter().map(|r| runs(r)).collect() };
    let split = || {
        let views = views();
        let mut owner = BTreeMap::new();
        let mut twice = false;
        for (r, view) in live.iter().zip(&views) {
            for t in view.iter().flatten() {
                twice |= owner.insert(t.clone(), r.pod.to_owned()).is_some();
            }
        }
        let counts: Vec<usize> = views
            .iter()
            .map(|v| v.as_ref().map_or(usize::MAX, Vec::len))
            .collect();
        (!twice && owner.len() == TABLES.len() && counts == shares).then_some(())
    };
    let state = || {
        let logs: Vec<String> = live.iter().map(|r| shop.replica_log(r.pod)).collect();
        format!("{:?}\n{}", views(), logs.join("\n----\n"))
    };
    warp_e2e::eventually(&format!("tables split {shares:?}"), split, state).await;
}

/// Waits until `r`'s `/status` (what its status page shows) lists every table with the
/// replica running it, its own and the others' alike.
async fn wait_listed(shop: &Shop, r: &Replica, owners: &[&str]) {
    let listed = || -> Vec<(String, Option<String>, bool)> {
        warp_e2e::http_get(r.port, "/status")
            .and_then(|(_, body)| serde_json::from_str::<StatusReply>(&body).ok())
            .map(|reply| {
                reply
                    .tables
                    .into_iter()
                    .filter(|t| TABLES.contains(&t.table.as_str()))
                    .map(|t| (t.table, t.owner, t.here))
                    .collect()
            })
            .unwrap_or_default()
    };
    let complete = || {
        let listed = listed();
        let mut seen: Vec<&str> = listed.iter().filter_map(|t| t.1.as_deref()).collect();
        seen.sort_unstable();
        seen.dedup();
        let own = listed
            .iter()
            .filter(|t| t.2 && t.1.as_deref() == Some(r.pod))
            .count();
        (listed.len() == TABLES.len() && seen == owners && own == 2).then_some(())
    };
    let what = format!("{}'s /status listing every table with its owner", r.pod);
    let state = || format!("{:?}\n{}", listed(), shop.replica_log(r.pod));
    warp_e2e::eventually(&what, complete, state).await;
}

/// Waits until the replicas hold `n` binlog dump connections between them: one each,
/// whatever number of tables each runs.
async fn wait_dumps(shop: &Shop, n: usize) {
    let held = async || (shop.binlog_dumps().await == n).then_some(());
    let what = format!("{n} binlog dumps");
    warp_e2e::eventually_with(&what, warp_e2e::Poll::SECONDS, held, || shop.log()).await;
}

fn start(shop: &Shop, pod: &'static str) -> Replica {
    let port = warp_e2e::free_port();
    Replica {
        pod,
        port,
        process: shop.run_replica(pod, port),
    }
}

#[tokio::test]
async fn replicas_split_tables_take_over_the_dead_and_fence_the_stale() {
    let shop = Arc::new(shop("scale", 1, 100).await);
    // Only the six tables below replicate.
    shop.exec("DROP TABLE orders, customers").await;
    for t in TABLES {
        shop.exec(&format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, counter INT NOT NULL, note VARCHAR(20))"
        ))
        .await;
        shop.exec(&format!(
            "INSERT INTO {t} SELECT seq, 0, 'seed' FROM seq_1_to_{ROWS}"
        ))
        .await;
        for id in 1..=ROWS {
            shop.wrote(t, id);
        }
    }
    shop.own_user().await;
    // Writes go on through every step below.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (shop, stop) = (Arc::clone(&shop), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let t = TABLES[(round % 6) as usize];
                let id = (round * 37) % ROWS + 1;
                shop.exec(&format!(
                    "UPDATE {t} SET counter = counter + 1, note = 'r{round}' WHERE id = {id}"
                ))
                .await;
                shop.wrote(t, id);
                if round % 5 == 0 {
                    let new_id = 10_000 + round;
                    shop.exec(&format!("INSERT INTO {t} VALUES ({new_id}, 0, 'new')"))
                        .await;
                    shop.wrote(t, new_id);
                }
                if round % 11 == 0 {
                    let gone = (round * 53) % ROWS + 1;
                    shop.exec(&format!("DELETE FROM {t} WHERE id = {gone}"))
                        .await;
                    shop.wrote(t, gone);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let a = start(&shop, "warp-a");
    let mut b = start(&shop, "warp-b");
    let c = start(&shop, "warp-c");
    wait_split(&shop, &[&a, &b, &c], &[2, 2, 2]).await;
    wait_dumps(&shop, 3).await;
    wait_listed(&shop, &a, &["warp-a", "warp-b", "warp-c"]).await;

    // SIGKILL: b's tables move to a and c once its leases lapse.
    b.process.kill();
    wait_split(&shop, &[&a, &c], &[3, 3]).await;
    wait_dumps(&shop, 2).await;

    // Freeze c mid-flight: a takes everything; when c wakes it must not commit.
    c.process.signal("STOP");
    wait_split(&shop, &[&a], &[6]).await;
    c.process.signal("CONT");
    wait_split(&shop, &[&a, &c], &[3, 3]).await;
    let woke = shop.replica_log("warp-c");
    assert!(
        woke.contains("lease lost") || woke.contains("handed over"),
        "the frozen replica noticed it was fenced off\n{woke}"
    );

    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for t in TABLES {
        shop.wait_equal(t).await;
        shop.assert_no_double_apply(t).await;
    }
    // A clean stop hands the leases back at once.
    let meta = format!("{}_meta", shop.db);
    for mut r in [a, c] {
        assert!(
            r.process.terminate().success(),
            "{}",
            shop.replica_log(r.pod)
        );
    }
    let held = shop
        .scalar_pg(format!(
            "SELECT count(*) FROM {meta}.leases WHERE owner <> ''"
        ))
        .await;
    assert_eq!(held, 0, "every lease handed back on SIGTERM");
}

/// One table's snapshot copied by three replicas at once (docs/guarantees.md, "Copies
/// shared between replicas"): the table's owner claims chunks, the other two claim the
/// rest; one of them is SIGKILLed while it holds a claim, and its chunk is claimed and
/// copied by another once the claim lapses. A writer updates, inserts and deletes rows
/// of the table throughout the copy: it ends equal, no row counting more versions than
/// its writes.
#[tokio::test]
async fn a_table_copied_by_three_replicas_survives_one_killed_mid_copy() {
    copied_by_three_replicas("sharedcopy", false).await;
}

/// The same with `stream_during_copy`: the table streams from the start while the three
/// replicas copy its chunks, one copy window at a time; a change made during the copy
/// reaches the destination before the copy ends.
#[tokio::test]
async fn a_table_streaming_while_three_replicas_copy_it_survives_one_killed() {
    copied_by_three_replicas("sharedstream", true).await;
}

async fn copied_by_three_replicas(name: &str, stream_during_copy: bool) {
    // Streaming during the copy, a change must be seen arriving before the copy ends:
    // the copy is made long enough for that.
    let orders: i64 = if stream_during_copy { 200_000 } else { 60_000 };
    let shop = Arc::new(shop(name, orders, 1_000).await);
    shop.exec("DROP TABLE customers").await;
    if stream_during_copy {
        shop.copy_inside_the_stream();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (shop, stop) = (Arc::clone(&shop), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let id = match round % 3 {
                    0 => {
                        let id = (round * 7919) % orders + 1;
                        shop.exec(&format!(
                            "UPDATE orders SET status = 'r{round}' WHERE id = {id}"
                        ))
                        .await;
                        id
                    }
                    1 => {
                        let id = 1_000_000 + round;
                        shop.exec(&format!("INSERT INTO orders (id, customer_id, amount, status) VALUES ({id}, 1, 2.50, 'new')"))
                            .await;
                        id
                    }
                    _ => {
                        let id = (round * 104_729) % orders + 1;
                        shop.exec(&format!("DELETE FROM orders WHERE id = {id}"))
                            .await;
                        id
                    }
                };
                shop.wrote("orders", id);
                round += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let meta = format!("{}_meta", shop.db);
    let mut replicas: Vec<Replica> = ["warp-a", "warp-b", "warp-c"]
        .into_iter()
        .map(|pod| start(&shop, pod))
        .collect();
    // Whoever does not own the table helps: wait for a helper to hold a claim, kill it.
    let held = format!(
        "SELECT split_part(c.holder, '/', 1), c.chunk_index FROM {meta}.snapshot_chunks c
          JOIN {meta}.leases l ON l.schema_name = c.schema_name AND l.table_name = c.table_name
         WHERE c.done_position IS NULL AND c.claimed_until > now()
           AND split_part(c.holder, '/', 1) <> l.owner
         LIMIT 1"
    );
    // (An error until a replica has created the metadata schema.)
    let helping = async || {
        sqlx::query_as::<_, (String, i32)>(sqlx::AssertSqlSafe(held.clone()))
            .fetch_optional(&shop.pg)
            .await
            .ok()
            .flatten()
    };
    let (pod, claimed) = warp_e2e::eventually_with(
        "a helper holding a claim",
        warp_e2e::Poll::TIGHT,
        helping,
        || shop.log(),
    )
    .await;
    let killed = replicas.iter().position(|r| r.pod == pod).unwrap();
    replicas[killed].process.kill();
    let survivors: Vec<Replica> = replicas.into_iter().filter(|r| r.pod != pod).collect();
    // The chunk it held is copied by another replica once its claim lapses (unless the
    // copy already ended: the hand-over clears the plan, and it needed that chunk).
    let taken_over = format!(
        "SELECT count(*) FROM {meta}.snapshot_chunks WHERE chunk_index = {claimed}
            AND done_position IS NOT NULL AND split_part(holder, '/', 1) <> '{pod}'"
    );
    let copied_by_another = async || (shop.scalar_pg(taken_over.clone()).await == 1).then_some(());
    let copy_ended = async || {
        if stream_during_copy {
            return shop
                .log()
                .contains("copy inside the stream done")
                .then_some(());
        }
        let status = shop.status();
        status
            .iter()
            .any(|t| t.table == "orders" && t.state == Some(TableState::Streaming))
            .then_some(())
    };
    if stream_during_copy {
        // A change made now reaches the destination while chunks are still to copy.
        shop.exec("INSERT INTO orders (id, customer_id, amount, status, note) VALUES (5000000, 1, 1.00, 'new', 'during the copy')")
            .await;
        shop.wrote("orders", 5_000_000);
        let landed = format!("SELECT count(*) FROM {}.orders WHERE id = 5000000", shop.db);
        let seen = async || (shop.scalar_pg(landed.clone()).await == 1).then_some(());
        warp_e2e::eventually_with(
            "the change made during the copy",
            warp_e2e::Poll::TIGHT,
            seen,
            || shop.log(),
        )
        .await;
        let left = shop
            .scalar_pg(format!(
                "SELECT count(*) FROM {meta}.snapshot_chunks WHERE done_position IS NULL"
            ))
            .await;
        assert!(left > 0, "the copy had ended already\n{}", shop.log());
    }
    tokio::select! {
        () = warp_e2e::eventually_with("the killed helper's chunk copied by another", warp_e2e::Poll::SECONDS, copied_by_another, || shop.log()) => {}
        // The hand-over clears the plan: a copy that ended needed that chunk.
        () = warp_e2e::eventually_with("the copy to end", warp_e2e::Poll::SECONDS, copy_ended, || shop.log()) => {}
    }
    shop.wait_streaming(1).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    shop.wait_equal("orders").await;
    shop.assert_no_double_apply("orders").await;
    // Helpers copied chunks for the owner (the killed one, the other, or both).
    let log = shop.log();
    assert!(log.contains("chunk copied for the table's owner"), "{log}");
    for mut r in survivors {
        assert!(
            r.process.terminate().success(),
            "{}",
            shop.replica_log(r.pod)
        );
    }
}
