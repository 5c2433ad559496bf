//! Three `raftcron-node run` processes on loopback: replication, kill -9 of
//! leaders and followers, restarts, and writes that must survive.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftcron_e2e::{Cluster, ClusterOptions, wait_for};
use raftcron_node::pb::scheduler::UpsertRequest;

/// `n` ScheduledJobs in one multi-document YAML file. They fire once a year,
/// so this test measures replication, not firing.
fn jobs_yaml(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: raftcron.dev/v1alpha1\nkind: ScheduledJob\nmetadata:\n  name: job-{i:04}\n  namespace: ns-{}\nspec:\n  schedule: \"0 0 1 1 *\"\n  action:\n    http:\n      url: http://127.0.0.1:9/job/{i}\n",
                i % 7
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn listed(c: &Cluster) -> usize {
    c.ctl_json(&["list"]).as_array().expect("array").len()
}

async fn applied(c: &Cluster, id: u64) -> Option<u64> {
    c.status(id).await.and_then(|s| s.applied_index)
}

async fn commit_of_leader(c: &Cluster) -> u64 {
    let l = c
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    c.status(l)
        .await
        .and_then(|s| s.commit_index)
        .expect("commit index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_every_schedule_through_leader_and_follower_kills() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let file = c.path().join("jobs.yaml");
    std::fs::write(&file, jobs_yaml(1000)).unwrap();
    let out = c.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert_eq!(listed(&c), 1000);

    // kill -9 the leader: a new one within 2 s (default timeouts), nothing lost.
    let old = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    c.node(old).kill9();
    let t = Instant::now();
    let new = c
        .wait_new_leader(old, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no new leader\n{}", c.logs()));
    let gap = t.elapsed();
    println!("leader {old} killed; node {new} leads after {gap:?}");
    assert!(gap < Duration::from_secs(2), "new leader after {gap:?}");
    assert_eq!(listed(&c), 1000);
    let out = c.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "re-apply with a node down");

    // The killed node comes back and catches up.
    c.node(old).start(false);
    let target = commit_of_leader(&c).await;
    let caught = wait_for(Duration::from_secs(15), || async {
        applied(&c, old).await.filter(|a| *a >= target)
    })
    .await;
    assert!(
        caught.is_some(),
        "node {old} did not catch up to {target}\n{}",
        c.logs()
    );

    // The same with a follower.
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    c.node(follower).kill9();
    let more = c.path().join("more.yaml");
    std::fs::write(&more, jobs_yaml(1010)).unwrap();
    assert!(
        c.ctl(&["apply", "-f", more.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(
        c.wait_leader(Duration::from_secs(2)).await,
        Some(leader),
        "killing a follower must not move leadership"
    );
    c.node(follower).start(false);
    let target = commit_of_leader(&c).await;
    let caught = wait_for(Duration::from_secs(15), || async {
        applied(&c, follower).await.filter(|a| *a >= target)
    })
    .await;
    assert!(
        caught.is_some(),
        "follower {follower} did not catch up\n{}",
        c.logs()
    );
    assert_eq!(listed(&c), 1010);
}

fn upsert(name: &str) -> UpsertRequest {
    UpsertRequest {
        namespace: "durability".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        spec_json: r#"{"schedule":"0 0 1 1 *","action":{"http":{"url":"http://127.0.0.1:9/"}}}"#
            .into(),
        kubernetes: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_killing_all_nodes_at_once() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let client = c.client();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w-{i:06}");
                match client.upsert_batch(vec![upsert(&name)]).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    Err(_) => return i,
                }
            }
            unreachable!()
        })
    };
    // Kill once enough writes are acknowledged (not after a fixed time: on a
    // busy machine 1.5 s gave fewer than 50).
    let enough = wait_for(Duration::from_secs(30), || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().len() >= 100).then_some(()) }
    })
    .await;
    assert!(
        enough.is_some(),
        "fewer than 100 writes acknowledged in 30 s\n{}",
        c.logs()
    );
    for id in 1..=3 {
        c.node(id).kill9();
    }
    let attempted = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} writes before the kill",
        acked.len()
    );
    for id in 1..=3 {
        c.node(id).start(false);
    }
    c.wait_leader(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no leader after restart\n{}", c.logs()));
    let listed: BTreeSet<String> = c
        .ctl_json(&["list", "-n", "durability"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&listed).collect();
    println!(
        "{} writes acknowledged of {attempted} attempted; {} listed after restart",
        acked.len(),
        listed.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_as_a_new_member_and_no_second_cluster_is_bootstrapped() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let file = c.path().join("jobs.yaml");
    std::fs::write(&file, jobs_yaml(20)).unwrap();
    assert!(
        c.ctl(&["apply", "-f", file.to_str().unwrap()])
            .status
            .success()
    );
    // The leader proposes the cluster id right after bootstrap; a follower
    // reports it once applied.
    let before = wait_for(Duration::from_secs(10), || async {
        let s = c.status(1).await?;
        (!s.cluster_id.is_empty() && s.schedules == 20).then_some(s)
    })
    .await
    .expect("node 1 reports the cluster id and the 20 schedules");
    let cluster_id = before.cluster_id.clone();

    // Wipe every node in turn, the bootstrap node last, restarting each as it
    // was started (node 1 with --bootstrap): each must rejoin under a new uid.
    for id in [2, 3, 1] {
        let old_uid = c.status(id).await.unwrap().uid;
        c.node(id).kill9();
        c.wait_leader(Duration::from_secs(10))
            .await
            .expect("a leader among the others");
        c.node(id).wipe();
        c.node(id).start(id == 1);
        let rejoined = wait_for(Duration::from_secs(20), || async {
            let s = c.status(id).await?;
            let member = s.members.iter().find(|m| m.id == id)?;
            (member.uid == s.uid
                && s.uid != old_uid
                && member.voter
                && s.applied_index >= before.applied_index)
                .then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("node {id} did not rejoin\n{}", c.logs()));
        assert_eq!(
            rejoined.cluster_id, cluster_id,
            "node {id} joined another cluster"
        );
        assert_eq!(rejoined.schedules, 20);
        let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
        let ls = c.status(leader).await.unwrap();
        assert_eq!(ls.members.len(), 3, "{:?}", ls.members);
        assert!(ls.members.iter().all(|m| m.voter));
    }
    for id in 1..=3 {
        assert_eq!(c.status(id).await.unwrap().cluster_id, cluster_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_streamed_snapshot() {
    let mut c = Cluster::start(ClusterOptions {
        extra_args: vec!["--snapshot-every=100".into()],
        ..Default::default()
    })
    .await;
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    c.node(follower).kill9();
    let client = c.client();
    for i in 0..1500 {
        client
            .upsert_batch(vec![upsert(&format!("snap-{i:05}"))])
            .await
            .unwrap();
    }
    let leader_status = c.status(leader).await.unwrap();
    assert!(
        leader_status.snapshot_index.unwrap_or(0) > 1000,
        "{leader_status:?}"
    );
    c.node(follower).start(false);
    let target = commit_of_leader(&c).await;
    let caught = wait_for(Duration::from_secs(20), || async {
        c.status(follower)
            .await
            .filter(|s| s.applied_index >= Some(target) && s.schedules == 1500)
    })
    .await
    .unwrap_or_else(|| panic!("follower {follower} did not catch up\n{}", c.logs()));
    // The entries it missed were purged on the leader: only a snapshot could bring it here.
    assert!(caught.snapshot_index.unwrap_or(0) > 1000, "{caught:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_and_added_back_through_the_leader() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let other = (1..=3).find(|i| *i != leader).unwrap();
    let out = c.ctl(&["member", "remove", &other.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let members: Vec<u64> = c
        .status(leader)
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(!members.contains(&other), "{members:?}");
    let addr = c.nodes[(other - 1) as usize].grpc.clone();
    let out = c.ctl(&["member", "add", &other.to_string(), &addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = wait_for(Duration::from_secs(10), || async {
        let s = c.status(c.leader().await?).await?;
        s.members
            .iter()
            .any(|m| m.id == other && m.voter)
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "{}", c.logs());
    let refused = c.ctl(&["member", "add", "7", &addr]);
    assert!(
        !refused.status.success(),
        "a node answering as another id must be refused"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("is node {other}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_metrics_health_and_readiness() {
    let c = Cluster::start(ClusterOptions::default()).await;
    for n in &c.nodes {
        let (code, body) = raftcron_e2e::http_get(&n.http, "/readyz").await.unwrap();
        assert_eq!(code, 200, "node {}: {body}", n.id);
        assert_eq!(
            raftcron_e2e::http_get(&n.http, "/healthz").await.unwrap().0,
            200
        );
        let (_, metrics) = raftcron_e2e::http_get(&n.http, "/metrics").await.unwrap();
        for name in [
            "raftcron_node_raft_term",
            "raftcron_node_raft_is_leader",
            "raftcron_node_raft_commit_index",
            "raftcron_node_raft_applied_index",
            "raftcron_node_grpc_requests_total",
            "raftcron_node_grpc_request_duration_seconds",
            "raftcron_node_fire_lateness_seconds",
            "raftcron_node_active_runs",
            "raftcron_node_retries_total",
            "raftcron_node_schedules",
            // Labelled counters carry every result from the start (at 0).
            "raftcron_node_runs_total{result=\"Lost\"",
            "raftcron_node_attempts_total{result=\"TimedOut\"",
            "raftcron_node_status_patches_total{result=\"error\"",
            "raftcron_node_dispatches_total{result=\"LOST\"",
            "raftcron_node_attached_replicas",
            "raftcron_node_attached_apps",
            "raftcron_node_app_lateness_seconds",
            "raftcron_node_app_wait_seconds",
            "raftcron_node_lease_grants_total{kind=\"takeover\"",
            "raftcron_node_lease_refusals_total",
            "raftcron_node_lease_ends_total{reason=\"expired\"",
            "raftcron_node_leases",
        ] {
            assert!(metrics.contains(name), "node {} lacks {name}", n.id);
        }
        let (_, status) = raftcron_e2e::http_get(&n.http, "/v1/status").await.unwrap();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert!(status["leader"].is_u64(), "{status}");
    }
    // A node that is not (yet) a member is alive but not ready.
    let mut lone = Cluster::new(ClusterOptions {
        nodes: 1,
        ..Default::default()
    });
    lone.node(1).start(false);
    let http = lone.nodes[0].http.clone();
    let not_ready = wait_for(Duration::from_secs(10), || async {
        let (code, body) = raftcron_e2e::http_get(&http, "/readyz").await.ok()?;
        (code == 503).then_some(body)
    })
    .await
    .expect("readyz answers 503");
    assert!(not_ready.contains("not a member"), "{not_ready}");
    assert_eq!(
        raftcron_e2e::http_get(&http, "/healthz").await.unwrap().0,
        200
    );
}

/// The sum over every node of `name{result="…"}` (runs are counted on the
/// node that led when they ended).
async fn metric_sum(c: &Cluster, name: &str, result: &str) -> u64 {
    let mut sum = 0;
    for n in &c.nodes {
        let Ok((_, text)) = raftcron_e2e::http_get(&n.http, "/metrics").await else {
            continue;
        };
        let label = format!("result=\"{result}\"");
        sum += text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum::<u64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_succeeds_on_its_third_attempt_counts_once_as_succeeded() {
    const RUNS: u64 = 4;
    let c = Cluster::start(ClusterOptions::default()).await;
    let ledger = raftcron_e2e::Ledger::start(c.path()).await;
    c.client()
        .upsert_batch(vec![UpsertRequest {
            namespace: "metrics".into(),
            name: "flaky".into(),
            uid: "uid-flaky".into(),
            generation: 1,
            spec_json: serde_json::json!({
                "schedule": "0 0 1 1 *",
                "concurrencyPolicy": "Allow",
                // Attempts 1 and 2 of every run get a 500, attempt 3 a 200.
                "action": {"http": {"url": ledger.url("/flaky?fail=2")}},
                "retry": {"maxAttempts": 3, "initialBackoffSeconds": 0.1, "jitter": 0.0},
            })
            .to_string(),
            kubernetes: false,
        }])
        .await
        .unwrap();
    for name in ["raftcron_node_runs_total", "raftcron_node_attempts_total"] {
        assert_eq!(
            metric_sum(&c, name, "Failed").await,
            0,
            "{name} starts at 0"
        );
    }
    for _ in 0..RUNS {
        c.client().trigger("metrics", "flaky").await.unwrap();
    }
    let succeeded = wait_for(Duration::from_secs(30), || async {
        let n = metric_sum(&c, "raftcron_node_runs_total", "Succeeded").await;
        (n >= RUNS).then_some(n)
    })
    .await;
    assert_eq!(succeeded, Some(RUNS), "{}", c.logs());
    // The issue's case: this showed runs_total{result="Failed"} 8.
    assert_eq!(
        metric_sum(&c, "raftcron_node_runs_total", "Failed").await,
        0
    );
    assert_eq!(
        metric_sum(&c, "raftcron_node_attempts_total", "Failed").await,
        2 * RUNS
    );
    assert_eq!(
        metric_sum(&c, "raftcron_node_attempts_total", "Succeeded").await,
        RUNS
    );
    // The target got every third attempt (it flushes its ledger every 100 ms).
    let third = wait_for(Duration::from_secs(5), || async {
        let n = ledger
            .records()
            .iter()
            .filter(|r| r.attempt == Some(3))
            .count() as u64;
        (n >= RUNS).then_some(n)
    })
    .await;
    assert_eq!(third, Some(RUNS));
}
