//! (c) Many attached replicas: attach streams of this process (`streams`)
//! against a real cluster, the leader's CPU and RSS, and the dispatch rate
//! at rising offered loads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::streams::{BenchReplica, StreamCounters, cpu_percent, machine_busy_seconds, rss_mib};
use super::{Figure, fig, job};
use crate::bench::{hist_quantile, histogram};
use crate::{Cluster, ClusterOptions, http_get, wait_for};

/// Sum of a metric's samples whose line contains `label`, over every node.
async fn metric_sum(c: &Cluster, name: &str, label: &str) -> f64 {
    let mut sum = 0.0;
    for n in &c.nodes {
        if let Ok((_, text)) = http_get(&n.http, "/metrics").await {
            sum += text
                .lines()
                .filter(|l| l.starts_with(name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    sum
}

pub struct ScaleOptions {
    /// Apps attached, and replicas of each: apps × replicas streams.
    pub apps: usize,
    pub replicas: usize,
    /// Offered loads, ascending: per-second `app` jobs of the first app
    /// (over its `replicas` replicas), one window each. A load that costs
    /// an election ends the series (the next would start from a cluster
    /// still recovering).
    pub jobs: Vec<usize>,
    /// The capacity each stream announces.
    pub capacity: u32,
    pub window: Duration,
}

/// One offered load, measured over a window.
pub struct Level {
    pub offered: usize,
    /// Attempts dispatched and finished (SUCCEEDED results) per second, by
    /// the nodes' `raftcron_node_dispatches_total`.
    pub dispatch_rate: f64,
    /// Results sent by the streams per second.
    pub results_rate: f64,
    /// Runs Succeeded per second (`raftcron_node_runs_total`).
    pub runs_rate: f64,
    /// Instant → result leaving the replica, p99 of this window (bucket bound, ms).
    pub lateness_p99_ms: f64,
    /// % of one core over the window: the leader, the other two nodes,
    /// this process (every stream), and everything else on the machine.
    pub cpu_leader: f64,
    pub cpu_followers: f64,
    pub cpu_bench: f64,
    pub cpu_other: f64,
    pub rss_leader: f64,
    pub elections: u64,
}

pub struct Scale {
    pub streams: usize,
    pub replicas: usize,
    /// Attach of every stream → all welcomed (s).
    pub attach_s: f64,
    /// The leader's CPU (% of one core) and RSS (MiB): no stream; the
    /// streams attached and idle (heartbeats).
    pub cpu_empty: f64,
    pub rss_empty: f64,
    pub cpu_idle: f64,
    pub rss_idle: f64,
    pub bench_cpu_idle: f64,
    pub levels: Vec<Level>,
    /// Welcomes beyond the first of each stream (re-attachments), over the run.
    pub reattached: u64,
}

async fn leader_pid(c: &Cluster) -> Option<u32> {
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    c.nodes[(l - 1) as usize].pid()
}

/// The largest sample of a metric over every node.
async fn metric_max(c: &Cluster, name: &str) -> f64 {
    let mut max = 0.0f64;
    for n in &c.nodes {
        if let Ok((_, text)) = http_get(&n.http, "/metrics").await {
            for v in text
                .lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            {
                max = max.max(v);
            }
        }
    }
    max
}

/// Histogram buckets summed over every node (each leader counts its own).
async fn histogram_all(c: &Cluster, name: &str) -> Vec<(f64, f64)> {
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for n in &c.nodes {
        if let Ok((_, text)) = http_get(&n.http, "/metrics").await {
            let h = histogram(&text, name);
            if sum.is_empty() {
                sum = h;
            } else {
                for (s, (_, c)) in sum.iter_mut().zip(h) {
                    s.1 += c;
                }
            }
        }
    }
    sum
}

pub async fn scale(o: ScaleOptions) -> anyhow::Result<Scale> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let pid = leader_pid(&c)
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let me = std::process::id();
    let probe = Duration::from_secs(10);
    let cpu_empty = cpu_percent(&[pid], probe).await[0];
    let rss_empty = rss_mib(pid);

    let endpoints = Arc::new(c.endpoints());
    let counters = Arc::new(StreamCounters::default());
    let streams = o.apps * o.replicas;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..o.apps {
        for r in 0..o.replicas {
            let replica = BenchReplica {
                app: format!("app-{a:03}"),
                pod: format!("app-{a:03}-{r:02}"),
                capacity: o.capacity,
            };
            let seed = (a * o.replicas + r) as u64;
            tasks.push(tokio::spawn(replica.run(
                endpoints.clone(),
                counters.clone(),
                seed,
            )));
        }
    }
    let all = wait_for(Duration::from_secs(60), || {
        let n = counters.attached.load(Ordering::Relaxed);
        async move { (n as usize >= streams).then_some(()) }
    })
    .await;
    if all.is_none() {
        anyhow::bail!(
            "only {} of {streams} streams attached within 60 s\n{}",
            counters.attached.load(Ordering::Relaxed),
            c.logs()
        );
    }
    let attach_s = t0.elapsed().as_secs_f64();
    let gauge = metric_sum(&c, "raftcron_node_attached_replicas", "").await;
    eprintln!("{streams} streams attached in {attach_s:.2} s; the nodes' gauge says {gauge}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = cpu_percent(&[pid, me], probe).await;
    let rss_idle = rss_mib(pid);

    // The load: per-second app jobs of app-000, over its replicas; a level
    // resumes the first N jobs (one batch entry each 2,000), the rest stay
    // suspended.
    let spec = |suspend: bool| {
        json!({"schedule": "* * * * * *", "suspend": suspend,
               "action": {"app": {"name": "app-000", "path": "/ok"}}})
    };
    let most = o.jobs.iter().copied().max().unwrap_or(0);
    let mut levels = Vec::new();
    // Generations 2, 3, …: each level re-applies the specs as an update.
    for (generation, &offered) in (2..).zip(o.jobs.iter()) {
        let items: Vec<_> = (0..most)
            .map(|i| job(&format!("load-{i:05}"), generation, &spec(i >= offered)))
            .collect();
        for chunk in items.chunks(2000) {
            c.client().upsert_batch(chunk.to_vec()).await?;
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // a steady state
        let level = measure_level(&c, offered, o.window, &counters).await;
        eprintln!(
            "{offered} jobs/s offered: {:.0} dispatched/s, p99 {} ms, {} election(s)",
            level.dispatch_rate, level.lateness_p99_ms, level.elections
        );
        let elections = level.elections;
        levels.push(level);
        if elections > 0 {
            break;
        }
    }
    let reattached = counters
        .welcomes
        .load(Ordering::Relaxed)
        .saturating_sub(streams as u64);
    for t in tasks {
        t.abort();
    }
    Ok(Scale {
        streams,
        replicas: o.replicas,
        attach_s,
        cpu_empty,
        rss_empty,
        cpu_idle: idle[0],
        rss_idle,
        bench_cpu_idle: idle[1],
        levels,
        reattached,
    })
}

async fn measure_level(
    c: &Cluster,
    offered: usize,
    window: Duration,
    counters: &StreamCounters,
) -> Level {
    const LATENESS: &str = "raftcron_node_app_lateness_seconds";
    let sample = || async {
        (
            metric_sum(c, "raftcron_node_dispatches_total{", "SUCCEEDED").await,
            metric_sum(c, "raftcron_node_runs_total{", "result=\"Succeeded\"").await,
            metric_max(c, "raftcron_node_raft_term").await,
            counters.results.load(Ordering::Relaxed),
            histogram_all(c, LATENESS).await,
        )
    };
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap_or(1);
    let mut pids = vec![c.nodes[(leader - 1) as usize].pid().unwrap_or(0)];
    pids.extend(
        c.nodes
            .iter()
            .filter(|n| n.id != leader)
            .filter_map(|n| n.pid()),
    );
    pids.push(std::process::id());
    let (d0, r0, term0, s0, h0) = sample().await;
    let busy0 = machine_busy_seconds();
    let t1 = Instant::now();
    let cpu = cpu_percent(&pids, window).await;
    let busy = (machine_busy_seconds() - busy0) / t1.elapsed().as_secs_f64() * 100.0;
    let (d1, r1, term1, s1, h1) = sample().await;
    let secs = t1.elapsed().as_secs_f64();
    let delta: Vec<(f64, f64)> = h1
        .iter()
        .zip(h0.iter().chain(std::iter::repeat(&(0.0, 0.0))))
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let followers: f64 = cpu[1..cpu.len() - 1].iter().sum();
    let ours: f64 = cpu.iter().sum();
    Level {
        offered,
        dispatch_rate: (d1 - d0) / secs,
        results_rate: (s1 - s0) as f64 / secs,
        runs_rate: (r1 - r0) / secs,
        lateness_p99_ms: hist_quantile(&delta, 99.0) * 1000.0,
        cpu_leader: cpu[0],
        cpu_followers: followers,
        cpu_bench: cpu[cpu.len() - 1],
        cpu_other: (busy - ours).max(0.0),
        rss_leader: rss_mib(pids[0]),
        elections: (term1 - term0).max(0.0) as u64,
    }
}

pub fn scale_figures(s: &Scale) -> Vec<Figure> {
    let n = s.streams;
    let mut f = vec![
        fig(
            format!("{n} attach streams → all welcomed"),
            "",
            s.attach_s,
            "s",
            None,
        ),
        fig(
            "leader CPU, no stream attached",
            "",
            s.cpu_empty,
            "% of a core",
            None,
        ),
        fig(
            format!("leader CPU, {n} streams attached, idle (heartbeats)"),
            "measured",
            s.cpu_idle,
            "% of a core",
            None,
        ),
        fig(
            "leader RSS, no stream attached",
            "",
            s.rss_empty,
            "MiB",
            None,
        ),
        fig(
            format!("leader RSS, {n} streams attached"),
            "measured",
            s.rss_idle,
            "MiB",
            None,
        ),
        fig(
            format!("this process's CPU, {n} streams attached, idle"),
            "",
            s.bench_cpu_idle,
            "% of a core",
            None,
        ),
    ];
    let best = s
        .levels
        .iter()
        .filter(|l| l.elections == 0)
        .map(|l| l.dispatch_rate)
        .fold(f64::NAN, f64::max);
    f.push(fig(
        format!(
            "dispatched and finished over {} replicas, best load without an election",
            s.replicas
        ),
        "≥ 10,000 /s",
        best,
        "attempts/s",
        Some(best >= 10_000.0),
    ));
    for l in &s.levels {
        let o = l.offered;
        f.extend([
            fig(
                format!("{o} jobs/s offered: dispatched and finished"),
                "",
                l.dispatch_rate,
                "attempts/s",
                None,
            ),
            fig(
                format!("{o} jobs/s: results sent by the replicas"),
                "",
                l.results_rate,
                "results/s",
                None,
            ),
            fig(
                format!("{o} jobs/s: runs Succeeded (recorded through Raft)"),
                "",
                l.runs_rate,
                "runs/s",
                None,
            ),
            fig(
                format!("{o} jobs/s: instant → result leaving the replica p99 (bucket bound)"),
                "",
                l.lateness_p99_ms,
                "ms",
                None,
            ),
            fig(
                format!("{o} jobs/s: CPU leader / other nodes / bench / rest of the machine"),
                "",
                l.cpu_leader,
                "% of a core",
                None,
            ),
            fig(
                format!("{o} jobs/s: … other nodes"),
                "",
                l.cpu_followers,
                "% of a core",
                None,
            ),
            fig(
                format!("{o} jobs/s: … bench (streams)"),
                "",
                l.cpu_bench,
                "% of a core",
                None,
            ),
            fig(
                format!("{o} jobs/s: … rest of the machine"),
                "",
                l.cpu_other,
                "% of a core",
                None,
            ),
            fig(
                format!("{o} jobs/s: leader RSS"),
                "",
                l.rss_leader,
                "MiB",
                None,
            ),
            fig(
                format!("{o} jobs/s: leader elections in the window"),
                "",
                l.elections as f64,
                "",
                None,
            ),
        ]);
    }
    f.push(fig(
        "re-attachments during the run",
        "",
        s.reattached as f64,
        "",
        None,
    ));
    f
}

pub fn scale_notes(s: &Scale) -> Vec<String> {
    vec![format!(
        "The {} replicas are attach streams of this bench process, one gRPC connection each (a minimal client of proto/sidecar.proto: Hello, heartbeats, Result SUCCEEDED at once on Go, no app behind it), not {} `raftcron-node sidecar` processes: on 2 cores those would measure process scheduling. The lateness and failover figures use real sidecar processes.",
        s.streams, s.streams
    )]
}
