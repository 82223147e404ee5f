//! Table ownership between replicas of one schema, with the in-memory doubles: an even
//! split, hand-back on shutdown, takeover from a replica that died without a word.

use warp_core::testing::{wait_for, MemorySource};
use warp_core::TableState;

mod common;
use common::*;

const TABLES: [&str; 6] = ["a1", "a2", "b1", "b2", "c1", "c2"];

fn owned(run: &Running) -> Vec<String> {
    run.status
        .snapshot()
        .into_iter()
        .filter(|s| s.state != TableState::Stopped)
        .map(|s| s.table)
        .collect()
}

fn settings_for(owner: &str) -> warp_core::EngineSettings {
    let mut s = settings();
    s.owner = owner.into();
    s
}

async fn wait_split(runs: &[&Running], shares: &[usize]) {
    wait_for("tables split between replicas", WAIT, || {
        let sets: Vec<Vec<String>> = runs.iter().map(|r| owned(r)).collect();
        let mut all: Vec<&String> = sets.iter().flatten().collect();
        all.sort();
        let before = all.len();
        all.dedup();
        let counts: Vec<usize> = sets.iter().map(Vec::len).collect();
        before == all.len() && all.len() == TABLES.len() && counts == shares
    })
    .await;
}

#[tokio::test]
async fn replicas_split_tables_hand_back_and_take_over() {
    let source = MemorySource::new("shop");
    for (i, t) in TABLES.iter().enumerate() {
        source.create_table(t);
        for id in 0..20 {
            source.insert(t, row(id, i as i64));
        }
    }
    let sink = destination();
    let yaml: String = TABLES.iter().map(|t| format!("    {t}: {{}}\n")).collect();
    let a = start(&source, &sink, schema(&yaml), settings_for("pod-a"));
    let b = start(&source, &sink, schema(&yaml), settings_for("pod-b"));
    let c = start(&source, &sink, schema(&yaml), settings_for("pod-c"));
    wait_split(&[&a, &b, &c], &[2, 2, 2]).await;
    for t in TABLES {
        source.insert(t, row(100, 1));
        sink.wait_until_equal(&source, "shop", t).await;
    }

    // A clean shutdown hands b's tables back; the survivors share them.
    b.stop().await;
    wait_split(&[&a, &c], &[3, 3]).await;

    // c dies without a word (its tasks are dropped mid-flight): its leases lapse and a
    // takes everything, while changes keep coming.
    c.handle.abort();
    let _ = c.handle.await;
    for t in TABLES {
        source.update(t, row(5, 7));
    }
    wait_split(&[&a], &[6]).await;
    for t in TABLES {
        sink.wait_until_equal(&source, "shop", t).await;
        assert_no_double_apply(&source, &sink, t);
        assert_eq!(sink.lease_owner(&key(t)).as_deref(), Some("pod-a"));
    }
    a.stop().await;
    for t in TABLES {
        assert_eq!(
            sink.lease_owner(&key(t)),
            None,
            "{t} handed back on shutdown"
        );
    }
}
