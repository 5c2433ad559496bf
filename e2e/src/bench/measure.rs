//! Measurements returning raw data (for tables and plots). Each starts what
//! it measures from scratch: real processes on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftcron_crds::names::rfc3339_ms;
use raftcron_node::client::Client;
use serde_json::json;

use super::target::Target;
use super::{metric_sum, sorted, upsert};
use crate::etcd::Etcd;
use crate::etcd_rpc::EtcdClient;
use crate::{Cluster, ClusterOptions, Ledger, now_ms, wait_for};

/// One write run: clients, committed writes/s, latencies (ms, sorted).
pub struct Writes {
    pub clients: usize,
    pub rate: f64,
    pub latency_ms: Vec<f64>,
}

/// Schedule upserts through the scheduler API, each acknowledged once
/// committed on a quorum (fsync) and applied on the leader.
pub async fn raftcron_writes(clients: &[usize], duration: Duration) -> anyhow::Result<Vec<Writes>> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let spec =
        Arc::new(json!({"schedule": "0 0 1 1 *", "action": {"http": {"url": "http://10.0.0.1/"}}}));
    let mut out = Vec::new();
    for &n in clients {
        let mut tasks = Vec::new();
        for t in 0..n {
            let client = Client::new(c.endpoints(), None);
            let spec = spec.clone();
            client
                .upsert_batch(vec![upsert(&format!("w{n}"), &format!("warm-{t}"), &spec)])
                .await?;
            tasks.push(tokio::spawn(async move {
                let (mut lat, end, mut i) = (Vec::new(), Instant::now() + duration, 0u64);
                while Instant::now() < end {
                    let req = upsert(&format!("w{n}"), &format!("c{t}-{i}"), &spec);
                    let t0 = Instant::now();
                    client.upsert_batch(vec![req]).await.expect("write");
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    i += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        out.push(Writes {
            clients: n,
            rate: all.len() as f64 / duration.as_secs_f64(),
            latency_ms: sorted(all),
        });
    }
    Ok(out)
}

/// 256-byte puts to a 3-member etcd cluster, every client on the leader.
pub async fn etcd_writes(clients: &[usize], duration: Duration) -> anyhow::Result<Vec<Writes>> {
    let etcd = Etcd::start(100, 1000).await?;
    let leader = etcd
        .leader()
        .await
        .ok_or_else(|| anyhow::anyhow!("no etcd leader"))?;
    let url = etcd.members[leader].client_url.clone();
    let mut out = Vec::new();
    for &n in clients {
        let (rate, lat) = crate::etcd::puts(std::slice::from_ref(&url), n, duration).await?;
        out.push(Writes {
            clients: n,
            rate,
            latency_ms: sorted(lat),
        });
    }
    Ok(out)
}

/// raftcron: kill -9 of the leader 20 ms before a due instant → that fire
/// reaches the target (ms after its instant), per trial.
pub async fn raftcron_failover(trials: usize, node_args: Vec<String>) -> anyhow::Result<Vec<f64>> {
    let mut c = Cluster::start(ClusterOptions {
        nodes: 3,
        extra_args: node_args,
        ..Default::default()
    })
    .await;
    let ledger = Ledger::start(c.path()).await;
    let spec = json!({"schedule": "* * * * * *", "action": {"http": {"url": ledger.url("/ok")}}});
    c.client()
        .upsert_batch(vec![upsert("failover", "tick", &spec)])
        .await?;
    let mut gaps = Vec::new();
    for trial in 0..trials {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = c
            .wait_leader(Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let instant = (now_ms() / 1000 + 2) * 1000;
        tokio::time::sleep(Duration::from_millis(
            (instant - 20 - now_ms()).max(0) as u64
        ))
        .await;
        c.node(leader).kill9();
        let want = rfc3339_ms(instant);
        let fired = wait_for(Duration::from_secs(10), || {
            let r = ledger
                .records()
                .into_iter()
                .find(|r| r.scheduled_time.as_deref() == Some(want.as_str()));
            async move { r }
        })
        .await;
        match fired {
            Some(r) => gaps.push(r.received_ms - instant as f64),
            None => eprintln!("trial {trial}: the fire at {want} did not execute within 10 s"),
        }
        c.node(leader).start(false);
    }
    Ok(gaps)
}

/// etcd: kill -9 of the leader → first put accepted by the survivors (ms), per trial.
pub async fn etcd_failover(
    trials: usize,
    heartbeat_ms: u64,
    election_ms: u64,
) -> anyhow::Result<Vec<f64>> {
    let mut etcd = Etcd::start(heartbeat_ms, election_ms).await?;
    let mut gaps = Vec::new();
    for trial in 0..trials {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = wait_for(Duration::from_secs(10), || etcd.leader())
            .await
            .ok_or_else(|| anyhow::anyhow!("no etcd leader"))?;
        let survivors: Vec<String> = etcd
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, m)| m.client_url.clone())
            .collect();
        let mut clients = Vec::new();
        for s in &survivors {
            clients.push(EtcdClient::connect(s).await?);
        }
        etcd.members[leader].kill9();
        let killed = Instant::now();
        let mut done = None;
        'outer: while killed.elapsed() < Duration::from_secs(10) {
            for c in &mut clients {
                let put = tokio::time::timeout(
                    Duration::from_millis(200),
                    c.put(b"failover".to_vec(), b"x".to_vec()),
                )
                .await;
                if matches!(put, Ok(Ok(_))) {
                    done = Some(killed.elapsed());
                    break 'outer;
                }
            }
        }
        match done {
            Some(d) => gaps.push(d.as_secs_f64() * 1000.0),
            None => eprintln!("etcd trial {trial}: no write accepted within 10 s"),
        }
        let bin = etcd.bin.clone();
        etcd.members[leader].start(&bin);
    }
    Ok(gaps)
}

pub struct Lateness {
    pub schedules: usize,
    pub expected: usize,
    /// What received the fires: "nginx" or the project's own target.
    pub target: &'static str,
    /// Instant → request received at the target (ms, sorted).
    pub target_ms: Vec<f64>,
    /// The floor, per round: the same number of requests sent at one
    /// instant over warm keep-alive connections by a minimal client,
    /// instant → the last received (ms, sorted).
    pub floor_ms: Vec<f64>,
    /// The leader's `raftcron_node_fire_lateness_seconds` buckets: (le s, cumulative count).
    pub node_histogram: Vec<(f64, f64)>,
    /// Terms started during the window (leader elections).
    pub elections: u64,
}

/// Rounds of the floor; its figure is their median.
const FLOOR_ROUNDS: usize = 7;

/// `n` per-second schedules for `duration` into the target (nginx when
/// installed and `nginx`), after the floor for `n` requests at once is
/// measured against the same target with the cluster up and idle.
pub async fn lateness(n: usize, duration: Duration, nginx: bool) -> anyhow::Result<Lateness> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let target = Target::start(c.path(), nginx).await?;
    let floor_ms = sorted(super::target::floor(&target, n, FLOOR_ROUNDS).await?);
    let url = target.url("/ok");
    let spec = json!({"schedule": "* * * * * *", "action": {"http": {"url": url}}});
    let items: Vec<_> = (0..n)
        .map(|i| upsert("lateness", &format!("s{i:06}"), &spec))
        .collect();
    for chunk in items.chunks(1000) {
        c.client().upsert_batch(chunk.to_vec()).await?;
    }
    // Steady state: the first fires open the connections.
    let start = (now_ms() / 1000 + 4) * 1000;
    let end = start + duration.as_millis() as i64;
    let expected = n * ((end - start) / 1000) as usize;
    tokio::time::sleep(Duration::from_millis((start - now_ms()).max(0) as u64)).await;
    // The node's histogram counts from its start (the first fires open the
    // connections); the window's share is the difference.
    let at_start = leader_lateness(&c).await;
    let term_before = max_term(&every_node_metrics(&c).await);
    tokio::time::sleep(Duration::from_millis((end + 3000 - now_ms()).max(0) as u64)).await;
    let term_after = max_term(&every_node_metrics(&c).await);
    target.settle().await;
    let late: Vec<f64> = target
        .arrivals()
        .into_iter()
        .filter(|a| a.path == "/ok" && a.scheduled_ms >= start && a.scheduled_ms < end)
        .map(|a| a.received_ms - a.scheduled_ms as f64)
        .collect();
    let (leader, at_end) = leader_lateness(&c)
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    // With a new leader the whole of its histogram falls in the window.
    let node_histogram = match at_start {
        Some((before, start_buckets)) if before == leader => at_end
            .iter()
            .zip(start_buckets.iter())
            .map(|((le, end), (_, start))| (*le, end - start))
            .collect(),
        _ => at_end,
    };
    Ok(Lateness {
        schedules: n,
        expected,
        target: target.name(),
        target_ms: sorted(late),
        floor_ms,
        node_histogram,
        elections: (term_after - term_before).max(0.0) as u64,
    })
}

/// The `/metrics` text of every node that answers.
async fn every_node_metrics(c: &Cluster) -> Vec<String> {
    let mut texts = Vec::new();
    for node in &c.nodes {
        if let Ok((_, text)) = crate::http_get(&node.http, "/metrics").await {
            texts.push(text);
        }
    }
    texts
}

/// The highest Raft term any node reports: elections are its increments.
fn max_term(texts: &[String]) -> f64 {
    texts
        .iter()
        .map(|t| metric_sum(t, "raftcron_node_raft_term", ""))
        .fold(0.0, f64::max)
}

/// The leader (the one node that fires) and its lateness histogram.
async fn leader_lateness(c: &Cluster) -> Option<(u64, Vec<(f64, f64)>)> {
    let leader = c.wait_leader(Duration::from_secs(5)).await?;
    let (_, text) = crate::http_get(&c.nodes[(leader - 1) as usize].http, "/metrics")
        .await
        .ok()?;
    Some((
        leader,
        super::histogram(&text, "raftcron_node_fire_lateness_seconds"),
    ))
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub struct Scale {
    /// (schedules, max RSS over the three nodes in MiB)
    pub rss: Vec<(usize, f64)>,
    pub schedules: usize,
    /// kill -9 of a follower → restarted process answers /readyz 200 (ms).
    pub ready_ms: f64,
    /// … and holds every schedule with its applied index at the leader's commit (ms).
    pub caught_up_ms: f64,
}

/// Loads `n` schedules in steps, recording memory; then restarts a follower.
pub async fn scale(n: usize) -> anyhow::Result<Scale> {
    // Frequent snapshots so the restarted node recovers from a snapshot, not a long log.
    let mut c = Cluster::start(ClusterOptions {
        extra_args: vec!["--snapshot-every=50".into()],
        ..Default::default()
    })
    .await;
    let client = c.client();
    let steps = [0, n / 10, n / 2, n];
    let mut rss = Vec::new();
    let mut loaded = 0;
    for &target in &steps {
        while loaded < target {
            let batch: Vec<_> = (loaded..(loaded + 1000).min(target))
                .map(|i| {
                    upsert(
                        &format!("ns-{}", i % 50),
                        &format!("job-{i:06}"),
                        &json!({"schedule": "0 0 1 1 *", "timeZone": "Europe/Berlin", "concurrencyPolicy": "Forbid",
                                "action": {"http": {"url": format!("http://service-{}.ns.svc:8080/run", i % 100),
                                                    "headers": [{"name": "X-Job", "value": format!("job-{i}")}]}}}),
                    )
                })
                .collect();
            loaded += batch.len();
            client.upsert_batch(batch).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let max = c
            .nodes
            .iter()
            .filter_map(|p| p.pid().and_then(rss_mib))
            .fold(0.0, f64::max);
        rss.push((target, max));
    }
    let leader = c
        .wait_leader(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    wait_for(Duration::from_secs(60), || async {
        c.status(follower)
            .await
            .filter(|s| s.snapshot_index.unwrap_or(0) > 0)
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("follower took no snapshot"))?;
    c.node(follower).kill9();
    let commit = c
        .status(leader)
        .await
        .and_then(|s| s.commit_index)
        .unwrap_or(0);
    let http = c.nodes[(follower - 1) as usize].http.clone();
    let t0 = Instant::now();
    c.node(follower).start(false);
    wait_for(Duration::from_secs(60), || async {
        (crate::http_get(&http, "/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("never ready"))?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
    wait_for(Duration::from_secs(60), || async {
        c.status(follower)
            .await
            .filter(|s| s.schedules as usize == n && s.applied_index >= Some(commit))
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("never caught up"))?;
    let caught_up_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok(Scale {
        rss,
        schedules: n,
        ready_ms,
        caught_up_ms,
    })
}

pub struct Fires {
    pub schedules: usize,
    /// Successful runs per second over the window, all nodes together.
    pub rate: f64,
    /// Terms started during the window (leader elections under load).
    pub elections: u64,
    pub expected_rate: f64,
}

/// `n` per-second schedules on nodes started with `--dry-run`: every fire is
/// claimed, started and finished through Raft (fsync on a quorum), but no
/// action runs, so the figure is the scheduler's own bookkeeping rate.
pub async fn sustained_fires(n: usize, window: Duration) -> anyhow::Result<Fires> {
    let c = Cluster::start(ClusterOptions {
        extra_args: vec!["--dry-run".into()],
        ..Default::default()
    })
    .await;
    let spec = json!({"schedule": "* * * * * *", "action": {"http": {"url": "http://10.0.0.1/"}}});
    let items: Vec<_> = (0..n)
        .map(|i| upsert("fires", &format!("f{i:06}"), &spec))
        .collect();
    for chunk in items.chunks(2000) {
        c.client().upsert_batch(chunk.to_vec()).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // reach a steady state
    // Summed over every node: a run is counted once, by the leader that ran
    // it, and the leader may change under load (heartbeats time out when the
    // nodes saturate both cores); counting one node would miss the rest.
    let sample = || async {
        let texts = every_node_metrics(&c).await;
        let succeeded = texts
            .iter()
            .map(|t| metric_sum(t, "raftcron_node_runs_total", "result=\"Succeeded\""))
            .sum::<f64>();
        (succeeded, max_term(&texts))
    };
    let (before, term_before) = sample().await;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (after, term_after) = sample().await;
    Ok(Fires {
        schedules: n,
        rate: (after - before) / t0.elapsed().as_secs_f64(),
        elections: (term_after - term_before).max(0.0) as u64,
        expected_rate: n as f64,
    })
}
