//! The bounded fault run of the test suite: 3 and then 5 nodes in their own
//! network namespaces under a seeded sequence of kills, partitions, one-way
//! cuts and slow links, with 3 app replicas (a ledger target and a sidecar
//! each, on hosts of their own) under sidecar kills, sidecar-node cuts and
//! replica outages (see `raftcron_e2e::chaos`). Longer runs:
//! `raftcron-chaos --nodes 5 --duration 2h --seed N`.
//!
//! Needs root for `ip netns`; without it the test prints SKIPPED and why.

use std::time::Duration;

use raftcron_e2e::chaos::{self, ChaosOptions};
use raftcron_e2e::netlab::NetLab;

fn seed() -> u64 {
    std::env::var("RAFTCRON_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122)
}

async fn run(nodes: usize, secs: u64) {
    if let Err(why) = NetLab::available() {
        println!("SKIPPED: the fault harness needs network namespaces: {why}");
        return;
    }
    let secs = std::env::var("RAFTCRON_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(secs);
    let opts = ChaosOptions {
        nodes,
        seed: seed() + nodes as u64,
        duration: Duration::from_secs(secs),
        schedules: 20,
        replicas: 3,
        app_schedules: 6,
        max_hold: Duration::from_secs(6),
        only: None,
    };
    println!("fault run: {opts:?} (rerun with RAFTCRON_CHAOS_SEED)");
    // The harness prints each fault as it injects it.
    let report = chaos::run(opts).await.expect("fault lab");
    println!("{}", report.summary());
    assert_eq!(report.violations(), 0, "{}", report.summary());
    assert!(report.instants_checked > 0 && report.app_instants_checked > 0);
    assert!(!report.faults.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_fire_write_and_app_delivery_through_seeded_faults() {
    run(3, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_keep_every_fire_write_and_app_delivery_through_seeded_faults() {
    run(5, 80).await;
}
