//! Whole-cluster downtime against `missedRunPolicy` and
//! `startingDeadlineSeconds`: three real node processes are killed at once
//! half a second before an instant (so its fire is claimed and not yet
//! started), kept down for 20 s and restarted. A ledger target counts every
//! request. Failovers are the other side of the rule and are covered by
//! `firing.rs` (a leader killed twice loses no instant, policy RunOnce).

use std::collections::HashMap;
use std::time::Duration;

use raftcron_e2e::{Cluster, ClusterOptions, Ledger, LedgerRecord, now_ms};
use raftcron_node::pb::scheduler::UpsertRequest;

const OUTAGE_S: u64 = 20;

fn schedule(name: &str, spec: serde_json::Value) -> UpsertRequest {
    UpsertRequest {
        namespace: "downtime".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        spec_json: spec.to_string(),
        kubernetes: false,
    }
}

/// Ledger records of one schedule by scheduled instant.
fn by_instant(records: &[LedgerRecord], name: &str, instants: &[i64]) -> HashMap<i64, f64> {
    let uid = format!("uid-{name}");
    let ids: HashMap<String, i64> = instants
        .iter()
        .map(|i| (raftcron_crds::names::run_id(&uid, *i), *i))
        .collect();
    let mut out = HashMap::new();
    for r in records {
        if let Some(i) = r.run_id.as_ref().and_then(|id| ids.get(id)) {
            out.entry(*i).or_insert(r.received_ms);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_stop_follows_the_missed_run_policy_and_the_starting_deadline() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let ledger = Ledger::start(c.path()).await;
    let url = ledger.url("/ok");
    let every_2s = |policy: &str| {
        serde_json::json!({
            "schedule": "*/2 * * * * *",
            "missedRunPolicy": policy,
            "action": {"http": {"url": url}},
        })
    };
    c.client()
        .upsert_batch(vec![
            schedule("skip", every_2s("Skip")),
            schedule("once", every_2s("RunOnce")),
            schedule("all", every_2s("RunAll")),
            schedule(
                "deadline",
                serde_json::json!({
                    "schedule": "* * * * * *",
                    "missedRunPolicy": "RunAll",
                    "startingDeadlineSeconds": 2,
                    "action": {"http": {"url": url}},
                }),
            ),
        ])
        .await
        .unwrap();

    // Stop every node at an odd second + 0.6 s: the even instant 0.4 s
    // later is claimed (1 s look-ahead) and not started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut stop = (now_ms() / 1000 + 1) * 1000 + 600;
    if (stop / 1000) % 2 == 0 {
        stop += 1000;
    }
    tokio::time::sleep(Duration::from_millis((stop - now_ms()).max(0) as u64)).await;
    let stopped = now_ms();
    for id in 1..=3 {
        c.node(id).kill9();
    }
    tokio::time::sleep(Duration::from_secs(OUTAGE_S)).await;
    let restarted = now_ms();
    for id in 1..=3 {
        c.node(id).start(false);
    }
    c.wait_leader(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no leader after the restart\n{}", c.logs()));
    tokio::time::sleep(Duration::from_secs(6)).await;

    let records = ledger.records();
    let first = (stopped / 1000 + 1) * 1000;
    // Instants in [first, restarted]; the one at `restarted` rounded down
    // may be either side and is counted here only.
    let missed_even: Vec<i64> = (first..=restarted / 1000 * 1000)
        .step_by(1000)
        .filter(|i| (i / 1000) % 2 == 0)
        .collect();
    let missed_all: Vec<i64> = (first..=restarted / 1000 * 1000).step_by(1000).collect();
    println!(
        "stopped at {stopped}, restarted at {restarted}; {} even and {} per-second instants in between",
        missed_even.len(),
        missed_all.len()
    );
    let late = |runs: &HashMap<i64, f64>| -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = runs
            .iter()
            .map(|(i, at)| (*i, *at as i64 - *i))
            .filter(|(_, late)| *late > 1_500)
            .collect();
        v.sort();
        v
    };

    // Skip: nothing that came due while the cluster was down runs.
    let skip = by_instant(&records, "skip", &missed_even);
    assert!(
        skip.is_empty(),
        "Skip ran missed instants {:?}\n{}",
        late(&skip),
        c.logs()
    );
    // The takeover that ended the outage falls between the last instant
    // Skip left out and the first it ran: every even instant after the stop
    // and before that first run was missed.
    let after: Vec<i64> = ((restarted / 1000 + 1) * 1000..now_ms() - 2_000)
        .step_by(1000)
        .filter(|i| (i / 1000) % 2 == 0)
        .collect();
    let skip_after = by_instant(&records, "skip", &after);
    let resumed = *after
        .iter()
        .find(|i| skip_after.contains_key(i))
        .unwrap_or_else(|| panic!("Skip never fired after the restart\n{}", c.logs()));
    let not_after: Vec<&i64> = after
        .iter()
        .filter(|i| **i > resumed && !skip_after.contains_key(i))
        .collect();
    assert!(
        not_after.is_empty(),
        "Skip did not fire {not_after:?} after the outage"
    );
    let missed: Vec<i64> = (first..resumed)
        .step_by(1000)
        .filter(|i| (i / 1000) % 2 == 0)
        .collect();
    println!(
        "missed instants: {} (the first run after them: {resumed})",
        missed.len()
    );
    // Skip ran none of them (the first check above covers the outage itself).
    let skipped = by_instant(&records, "skip", &missed);
    assert!(skipped.is_empty(), "Skip ran {:?}", late(&skipped));
    // RunOnce: exactly one, the newest.
    let once = by_instant(&records, "once", &missed);
    let ran: Vec<&i64> = once.keys().collect();
    assert_eq!(
        ran,
        vec![missed.last().unwrap()],
        "RunOnce should run only the newest missed instant\n{}",
        c.logs()
    );
    // RunAll: every one.
    let all = by_instant(&records, "all", &missed);
    let not_run: Vec<&i64> = missed.iter().filter(|i| !all.contains_key(i)).collect();
    assert!(
        not_run.is_empty(),
        "RunAll did not run {not_run:?}\n{}",
        c.logs()
    );
    // The deadline wins over RunAll, also for the fire claimed before the stop.
    let mut every: Vec<i64> = missed_all.clone();
    every.extend(after.iter().flat_map(|i| [*i, *i + 1000]));
    let deadline = by_instant(&records, "deadline", &every);
    let past: Vec<(i64, i64)> = deadline
        .iter()
        .map(|(i, at)| (*i, *at as i64 - *i))
        .filter(|(_, late)| *late > 2_500)
        .collect();
    assert!(
        past.is_empty(),
        "started past startingDeadlineSeconds (instant, ms late): {past:?}\n{}",
        c.logs()
    );
    assert!(
        !by_instant(&records, "deadline", &after).is_empty(),
        "the deadline schedule never fired after the restart\n{}",
        c.logs()
    );
}
