//! Firing through failovers: 200 schedules every second for 60 s into the
//! ledger target while the leader is killed with SIGKILL twice. Every
//! instant in the window must have executed, and no (run id, attempt) twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use raftcron_e2e::{Cluster, ClusterOptions, Ledger, now_ms};
use raftcron_node::pb::scheduler::UpsertRequest;

const SCHEDULES: usize = 200;
const WINDOW_S: i64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instant_fires_through_two_leader_kills_and_no_attempt_runs_twice() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let ledger = Ledger::start(c.path()).await;
    let url = ledger.url("/ok");
    let items: Vec<UpsertRequest> = (0..SCHEDULES)
        .map(|i| UpsertRequest {
            namespace: "fire".into(),
            name: format!("s{i:03}"),
            uid: format!("uid-{i:03}"),
            generation: 1,
            spec_json: serde_json::json!({
                "schedule": "* * * * * *",
                "action": {"http": {"url": url}},
                // A run started by a leader that dies before the request
                // leaves is Lost; without retries it stays lost (at most
                // once). With them the next leader runs attempt 2.
                "retry": {"maxAttempts": 3, "initialBackoffSeconds": 1},
            })
            .to_string(),
            kubernetes: false,
        })
        .collect();
    c.client().upsert_batch(items).await.unwrap();
    let start = (now_ms() / 1000 + 2) * 1000;
    let end = start + WINDOW_S * 1000;
    let at = |s: i64| async move {
        let wait = start + s * 1000 - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    };
    let mut kills = Vec::new();
    for (kill_at, restart_at) in [(15, 20), (35, 40)] {
        at(kill_at).await;
        let leader = c
            .wait_leader(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
        c.node(leader).kill9();
        kills.push((leader, now_ms()));
        at(restart_at).await;
        c.node(leader).start(false);
    }
    at(WINDOW_S + 8).await; // retries and late starts settle

    let records = ledger.records();
    let mut by_run: HashMap<String, Vec<u32>> = HashMap::new();
    for r in &records {
        if let (Some(id), Some(a)) = (&r.run_id, r.attempt) {
            by_run.entry(id.clone()).or_default().push(a);
        }
    }
    // Every instant of every schedule executed at least once.
    let mut missing = Vec::new();
    for i in 0..SCHEDULES {
        let uid = format!("uid-{i:03}");
        for instant in (start..=end).step_by(1000) {
            if !by_run.contains_key(&raftcron_crds::names::run_id(&uid, instant)) {
                missing.push(format!("{uid}@{instant}"));
            }
        }
    }
    // No (run id, attempt) executed twice.
    let mut doubled = Vec::new();
    let mut retried: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (id, attempts) in &by_run {
        let mut sorted = attempts.clone();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            doubled.push(format!("{id}: attempts {sorted:?}"));
        }
        if sorted.iter().any(|a| *a > 1) {
            retried.insert(id.clone(), sorted);
        }
    }
    let checked = SCHEDULES as i64 * (WINDOW_S + 1);
    println!("kills: {kills:?}");
    println!(
        "{} ledger records, {checked} instants checked, {} missing, {} doubled",
        records.len(),
        missing.len(),
        doubled.len()
    );
    println!("Lost-then-retried runs ({}):", retried.len());
    for (id, attempts) in retried.iter().take(50) {
        println!("  {id} attempts {attempts:?}");
    }
    assert!(
        missing.is_empty(),
        "{} instants never executed, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        c.logs()
    );
    assert!(doubled.is_empty(), "attempts executed twice: {doubled:?}");
}
