//! Benchmarks of the sidecar scheduler (`raftcron-bench sidecar-*`): the
//! `app` action against `http`, a replica's and a leader's death, and one
//! cluster with a thousand attached replicas. Prints figures; asserts nothing.
//!
//! ```text
//!  lateness, failover:  3 nodes ◄─attach─ raftcron-node sidecar ×3 ──HTTP──► raftcron-node target ×3 (ledgers)
//!                                └──────────── http action ────────────────►  (the same targets)
//!  scale:               3 nodes ◄─attach─ N streams of this process (BenchReplica: the real
//!                                          protocol, Result at once on Go, no app behind it)
//! ```
//!
//! Lateness at the app is the ledger's receive time less the scheduled
//! instant, for `app` and `http` alike, so both figures include the same
//! target and the same loopback hop; `app` adds the leader → sidecar stream
//! and the sidecar's own HTTP client.

mod streams;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raftcron_crds::names::{parse_rfc3339_ms, run_id};
use raftcron_node::pb::scheduler::UpsertRequest;
use serde_json::{Value, json};

pub use streams::{BenchReplica, StreamCounters};
use streams::{cpu_percent, machine_busy_seconds, rss_mib};

use super::{Report, hist_quantile, histogram, percentile, sorted, upsert};
use crate::process::ChildGuard;
use crate::{Cluster, ClusterOptions, Ledger, bin, free_port, http_get, now_ms, wait_for};

const NS: &str = "shop";
const APP: &str = "web";
/// `--capacity` of the sidecar processes: 200 per-second jobs over 3
/// replicas put ~67 deliveries on each at once, more than the default 16.
pub const CAPACITY: u32 = 128;

/// One figure with its DESIGN.md target, for the tables.
pub struct Figure {
    pub what: String,
    pub target: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub met: Option<bool>,
}

fn fig(
    what: impl Into<String>,
    target: &'static str,
    value: f64,
    unit: &'static str,
    met: Option<bool>,
) -> Figure {
    Figure {
        what: what.into(),
        target,
        value,
        unit,
        met,
    }
}

/// Figures as a report: the target in the name, the verdict in the notes.
pub fn report(figures: &[Figure], notes: Vec<String>) -> Report {
    let mut r = Report::default();
    for f in figures {
        let name = match (f.target, f.met) {
            ("", _) => f.what.clone(),
            (t, Some(true)) => format!("{} (target {t}: met)", f.what),
            (t, Some(false)) => format!("{} (target {t}: **missed**)", f.what),
            (_, None) => f.what.clone(),
        };
        r.add(name, f.value, f.unit);
    }
    r.notes = notes;
    r
}

// ---------------------------------------------------------------------------
// Real replicas: a ledger target and a `raftcron-node sidecar` process each.

/// One app replica: its app (a ledger target) and its sidecar process.
pub struct Replica {
    pub pod: String,
    pub app: Ledger,
    listen: String,
    log: PathBuf,
    capacity: u32,
    sidecar: ChildGuard,
}

impl Replica {
    async fn start(dir: &Path, cluster: &[String], pod: &str, capacity: u32) -> Self {
        let home = dir.join(pod);
        std::fs::create_dir_all(&home).expect("replica dir");
        let mut r = Replica {
            pod: pod.to_string(),
            app: Ledger::start(&home).await,
            listen: format!("127.0.0.1:{}", free_port()),
            log: home.join("sidecar.log"),
            capacity,
            sidecar: ChildGuard::default(),
        };
        r.spawn(cluster);
        r
    }

    fn spawn(&mut self, cluster: &[String]) {
        let mut cmd = Command::new(bin("raftcron-node"));
        cmd.arg("sidecar")
            .args(["--cluster", &cluster.join(",")])
            .args(["--namespace", NS, "--app", APP, "--pod", &self.pod])
            .args(["--app-url", &format!("http://{}", self.app.addr)])
            .args(["--listen", &self.listen])
            .args(["--capacity", &self.capacity.to_string()])
            .env("RAFTCRON_LOG", "info");
        self.sidecar.spawn_logged(&mut cmd, &self.log, "sidecar");
    }

    /// SIGSTOP: the process freezes with its sockets open, as a hung or
    /// cut-off replica does (no FIN reaches the leader).
    fn freeze(&self) {
        if let Some(pid) = self.sidecar.pid() {
            let _ = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        }
    }

    async fn attached(&self) -> bool {
        self.sidecar.is_started() && matches!(http_get(&self.listen, "/readyz").await, Ok((200, _)))
    }
}

async fn start_replicas(c: &Cluster, n: usize, capacity: u32) -> anyhow::Result<Vec<Replica>> {
    let mut replicas = Vec::new();
    for i in 0..n {
        let pod = format!("web-{i}");
        replicas.push(Replica::start(c.path(), &c.endpoints(), &pod, capacity).await);
    }
    if !all_attached(&replicas, Duration::from_secs(20)).await {
        anyhow::bail!("the sidecars did not attach\n{}", c.logs());
    }
    Ok(replicas)
}

async fn all_attached(replicas: &[Replica], timeout: Duration) -> bool {
    wait_for(timeout, || async {
        for r in replicas {
            if !r.attached().await {
                return None;
            }
        }
        Some(())
    })
    .await
    .is_some()
}

fn job(name: &str, generation: i64, spec: &Value) -> UpsertRequest {
    UpsertRequest {
        generation,
        ..upsert(NS, name, spec)
    }
}

fn uid(name: &str) -> String {
    upsert(NS, name, &json!({})).uid
}

// ---------------------------------------------------------------------------
// (a) Lateness at the app: `app` jobs through the sidecars against `http`
// jobs straight at the same targets.

pub struct AppLateness {
    pub jobs: usize,
    pub capacity: u32,
    /// Instant → request received by the app (ms, sorted), attempt 1 only.
    pub app_ms: Vec<f64>,
    pub http_ms: Vec<f64>,
    /// Instants × jobs in the measured windows, per kind.
    pub expected: usize,
    /// The leader's `raftcron_node_app_lateness_seconds` buckets (instant →
    /// request leaving the sidecar), over the whole run.
    pub node_app_histogram: Vec<(f64, f64)>,
}

/// `jobs` per-second `app` jobs over 3 replicas, and `jobs` per-second
/// `http` jobs at the same 3 targets (job i at replica i mod 3), in turns of
/// `window` each, `rounds` times (http, app, http, app, …), on one cluster.
/// Taking turns keeps the two from competing for the same instants.
pub async fn lateness(
    jobs: usize,
    window: Duration,
    rounds: usize,
    capacity: u32,
) -> anyhow::Result<AppLateness> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let replicas = start_replicas(&c, 3, capacity).await?;
    let spec = |kind: &str, i: usize, suspend: bool| {
        let action = match kind {
            "http" => json!({"http": {"url": replicas[i % 3].app.url("/ok")}}),
            _ => json!({"app": {"name": APP, "path": "/ok"}}),
        };
        json!({"schedule": "* * * * * *", "suspend": suspend, "missedRunPolicy": "Skip", "action": action})
    };
    let mut generation = 1;
    let set = |kind: &str, suspend: bool, generation: i64| -> Vec<UpsertRequest> {
        (0..jobs)
            .map(|i| {
                job(
                    &format!("{kind}-{i:04}"),
                    generation,
                    &spec(kind, i, suspend),
                )
            })
            .collect()
    };
    let client = c.client();
    client.upsert_batch(set("http", true, generation)).await?;
    client.upsert_batch(set("app", true, generation)).await?;
    let mut windows = Vec::new();
    for _ in 0..rounds {
        for kind in ["http", "app"] {
            generation += 1;
            client.upsert_batch(set(kind, false, generation)).await?;
            let start = (now_ms() / 1000 + 2) * 1000;
            let end = start + window.as_millis() as i64;
            sleep_until(end + 500).await;
            client.upsert_batch(set(kind, true, generation)).await?;
            windows.push((kind, start, end));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the ledgers flush
    let (mut app_ms, mut http_ms) = (Vec::new(), Vec::new());
    let prefix = |kind: &str| format!("{}-", uid(kind));
    let (app_prefix, http_prefix) = (prefix("app"), prefix("http"));
    for r in &replicas {
        for rec in r.app.records() {
            let (Some(id), Some(at)) = (
                rec.run_id.as_deref(),
                rec.scheduled_time.as_deref().and_then(parse_rfc3339_ms),
            ) else {
                continue;
            };
            if rec.attempt != Some(1) {
                continue;
            }
            let kind = if id.starts_with(&app_prefix) {
                "app"
            } else if id.starts_with(&http_prefix) {
                "http"
            } else {
                continue;
            };
            let inside = windows
                .iter()
                .any(|(k, s, e)| *k == kind && at >= *s && at < *e);
            if inside {
                let late = rec.received_ms - at as f64;
                let into = if kind == "app" {
                    &mut app_ms
                } else {
                    &mut http_ms
                };
                into.push(late);
            }
        }
    }
    let per_kind = rounds * window.as_secs() as usize * jobs;
    let leader = c
        .wait_leader(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let (_, metrics) = http_get(&c.nodes[(leader - 1) as usize].http, "/metrics").await?;
    Ok(AppLateness {
        jobs,
        capacity,
        app_ms: sorted(app_ms),
        http_ms: sorted(http_ms),
        expected: per_kind,
        node_app_histogram: histogram(&metrics, "raftcron_node_app_lateness_seconds"),
    })
}

pub fn lateness_figures(l: &AppLateness) -> Vec<Figure> {
    let n = l.jobs;
    let (a99, h99) = (percentile(&l.app_ms, 99.0), percentile(&l.http_ms, 99.0));
    let mut f = Vec::new();
    for (kind, v) in [("app", &l.app_ms), ("http", &l.http_ms)] {
        for p in [50.0, 99.0] {
            f.push(fig(
                format!("lateness at the app p{p}, {n} per-second `{kind}` jobs"),
                "",
                percentile(v, p),
                "ms",
                None,
            ));
        }
        f.push(fig(
            format!("lateness at the app max, {n} per-second `{kind}` jobs"),
            "",
            v.last().copied().unwrap_or(f64::NAN),
            "ms",
            None,
        ));
        f.push(fig(
            format!("`{kind}` requests received / instants expected"),
            "all",
            v.len() as f64 / l.expected.max(1) as f64,
            "ratio",
            Some(v.len() >= l.expected),
        ));
    }
    let diff = a99 - h99;
    f.push(fig(
        "lateness at the app p99: `app` − `http`",
        "≤ 2 ms",
        diff,
        "ms",
        Some(diff <= 2.0),
    ));
    f.push(fig(
        "instant → request leaving the sidecar p99 (leader's histogram, bucket bound)",
        "",
        hist_quantile(&l.node_app_histogram, 99.0) * 1000.0,
        "ms",
        None,
    ));
    f
}

pub fn lateness_notes(l: &AppLateness) -> Vec<String> {
    vec![format!(
        "{} per-second `app` jobs (3 replicas: `raftcron-node sidecar --capacity {}` + `raftcron-node target` each) and {} per-second `http` jobs at the same 3 targets, taking turns on one 3-node cluster; lateness = the target's receive time − the scheduled instant, attempt 1; {} instants per kind expected.",
        l.jobs, l.capacity, l.jobs, l.expected
    )]
}

async fn sleep_until(ms: i64) {
    tokio::time::sleep(Duration::from_millis((ms - now_ms()).max(0) as u64)).await;
}

// ---------------------------------------------------------------------------
// (b) A replica's death mid-attempt, and the leader's.

pub struct Failover {
    /// kill -9 of the replica's sidecar → the retry received by another
    /// replica's app (ms), default retry policy (backoff 1 s ± 10 %).
    pub replica_kill_ms: Vec<f64>,
    /// … with `initialBackoffSeconds: 0`: detection and re-placement only.
    pub replica_kill_no_backoff_ms: Vec<f64>,
    /// SIGSTOP of the sidecar (no FIN; heartbeat silence), backoff 0.
    pub replica_freeze_ms: Vec<f64>,
    /// kill -9 of the leader 20 ms before an instant → that instant's
    /// request received by the app (`app` job) / the target (`http` job).
    pub leader_app_ms: Vec<f64>,
    pub leader_http_ms: Vec<f64>,
    /// (run, attempt) delivered to more than one replica, over the run.
    pub double_deliveries: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Death {
    Kill,
    Freeze,
}

pub async fn failover(trials: usize) -> anyhow::Result<Failover> {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let mut replicas = start_replicas(&c, 3, CAPACITY).await?;
    let default_retry = json!({"maxAttempts": 3});
    let no_backoff = json!({"maxAttempts": 3, "initialBackoffSeconds": 0, "jitter": 0});
    let replica_kill_ms = replica_trials(
        &c,
        &mut replicas,
        "slow-default",
        &default_retry,
        Death::Kill,
        trials,
    )
    .await?;
    let replica_kill_no_backoff_ms = replica_trials(
        &c,
        &mut replicas,
        "slow-nobackoff",
        &no_backoff,
        Death::Kill,
        trials,
    )
    .await?;
    let replica_freeze_ms = replica_trials(
        &c,
        &mut replicas,
        "slow-freeze",
        &no_backoff,
        Death::Freeze,
        trials.div_ceil(2),
    )
    .await?;
    let (leader_app_ms, leader_http_ms) = leader_trials(&mut c, &mut replicas, trials).await?;
    // Deliveries of each (run, attempt) of the app jobs, over every replica.
    let (tick, slow) = (uid("tick-app"), format!("{NS}-slow-"));
    let mut seen: HashMap<(String, u32), usize> = HashMap::new();
    for r in &replicas {
        for ((run, attempt), n) in r.app.executions() {
            if run.starts_with(&tick) || run.starts_with(&slow) {
                *seen.entry((run, attempt)).or_default() += n;
            }
        }
    }
    let double_deliveries = seen.values().filter(|n| **n > 1).count();
    Ok(Failover {
        replica_kill_ms: sorted(replica_kill_ms),
        replica_kill_no_backoff_ms: sorted(replica_kill_no_backoff_ms),
        replica_freeze_ms: sorted(replica_freeze_ms),
        leader_app_ms: sorted(leader_app_ms),
        leader_http_ms: sorted(leader_http_ms),
        double_deliveries,
    })
}

/// A slow app job (3 s per attempt); each trial kills (or freezes) the
/// replica serving a fresh first attempt 300 ms into it and measures the
/// kill → the retry received by another replica's app.
async fn replica_trials(
    c: &Cluster,
    replicas: &mut [Replica],
    name: &str,
    retry: &Value,
    death: Death,
    trials: usize,
) -> anyhow::Result<Vec<f64>> {
    let spec = json!({"schedule": "*/4 * * * * *", "timeoutSeconds": 30, "retry": retry,
        "action": {"app": {"name": APP, "path": "/slow?ms=3000", "placement": "RoundRobin"}}});
    c.client().upsert_batch(vec![job(name, 1, &spec)]).await?;
    let prefix = format!("{}-", uid(name));
    let mut gaps = Vec::new();
    for trial in 0..trials {
        let endpoints = c.endpoints();
        for r in replicas.iter_mut() {
            if !r.sidecar.is_started() {
                r.spawn(&endpoints);
            }
        }
        if !all_attached(replicas, Duration::from_secs(20)).await {
            anyhow::bail!(
                "{name} trial {trial}: sidecars did not re-attach\n{}",
                c.logs()
            );
        }
        let t0 = now_ms() as f64;
        let first = wait_for(Duration::from_secs(12), || {
            let hit = replicas.iter().enumerate().find_map(|(i, r)| {
                r.app
                    .records()
                    .into_iter()
                    .find(|rec| {
                        rec.attempt == Some(1)
                            && rec.received_ms > t0
                            && rec
                                .run_id
                                .as_deref()
                                .is_some_and(|id| id.starts_with(&prefix))
                    })
                    .and_then(|rec| Some((i, rec.run_id?)))
            });
            async move { hit }
        })
        .await;
        let Some((victim, run)) = first else {
            eprintln!("{name} trial {trial}: no first attempt delivered within 12 s");
            continue;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        match death {
            Death::Kill => replicas[victim].sidecar.kill9(),
            Death::Freeze => replicas[victim].freeze(),
        }
        let killed = now_ms() as f64;
        let retried = wait_for(Duration::from_secs(10), || {
            let at = replicas
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .flat_map(|(_, r)| r.app.records())
                .filter(|rec| rec.run_id.as_deref() == Some(run.as_str()) && rec.attempt > Some(1))
                .map(|rec| rec.received_ms)
                .reduce(f64::min);
            async move { at }
        })
        .await;
        match retried {
            Some(at) => gaps.push(at - killed),
            None => eprintln!("{name} trial {trial}: {run} not retried elsewhere within 10 s"),
        }
        replicas[victim].sidecar.kill9();
    }
    c.client().delete(NS, name, &uid(name)).await?;
    Ok(gaps)
}

/// A per-second `app` job and a per-second `http` job; each trial kills
/// the leader 20 ms before an instant and measures that instant's arrival.
async fn leader_trials(
    c: &mut Cluster,
    replicas: &mut [Replica],
    trials: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let every = |action: Value| json!({"schedule": "* * * * * *", "action": action});
    c.client()
        .upsert_batch(vec![
            job(
                "tick-app",
                1,
                &every(json!({"app": {"name": APP, "path": "/ok"}})),
            ),
            job(
                "tick-http",
                1,
                &every(json!({"http": {"url": replicas[0].app.url("/ok")}})),
            ),
        ])
        .await?;
    let (app_uid, http_uid) = (uid("tick-app"), uid("tick-http"));
    let (mut app, mut http) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let endpoints = c.endpoints();
        for r in replicas.iter_mut() {
            if !r.sidecar.is_started() {
                r.spawn(&endpoints);
            }
        }
        if !all_attached(replicas, Duration::from_secs(20)).await {
            anyhow::bail!(
                "leader trial {trial}: sidecars did not re-attach\n{}",
                c.logs()
            );
        }
        let leader = c
            .wait_leader(Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let instant = (now_ms() / 1000 + 2) * 1000;
        sleep_until(instant - 20).await;
        c.node(leader).kill9();
        let (want_app, want_http) = (run_id(&app_uid, instant), run_id(&http_uid, instant));
        let shared: &[Replica] = replicas;
        let arrived = |want: String| {
            let replicas = shared;
            async move {
                wait_for(Duration::from_secs(10), || {
                    let at = replicas
                        .iter()
                        .flat_map(|r| r.app.records())
                        .filter(|rec| rec.run_id.as_deref() == Some(want.as_str()))
                        .map(|rec| rec.received_ms)
                        .reduce(f64::min);
                    async move { at }
                })
                .await
            }
        };
        let (a, h) = tokio::join!(arrived(want_app), arrived(want_http));
        match a {
            Some(at) => app.push(at - instant as f64),
            None => eprintln!("leader trial {trial}: the app fire did not arrive within 10 s"),
        }
        if let Some(at) = h {
            http.push(at - instant as f64);
        }
        c.node(leader).start(false);
    }
    Ok((app, http))
}

pub fn failover_figures(f: &Failover) -> Vec<Figure> {
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    let mut out = Vec::new();
    let rows: [(&str, &Vec<f64>, &'static str, f64); 5] = [
        (
            "replica kill -9 mid-attempt → retry received by another replica, default retry (1 s backoff ± 10 %)",
            &f.replica_kill_ms,
            "≤ 1.5 s",
            1500.0,
        ),
        (
            "… with initialBackoffSeconds 0 (detection + placement only)",
            &f.replica_kill_no_backoff_ms,
            "",
            f64::NAN,
        ),
        (
            "replica frozen (SIGSTOP: no FIN, heartbeat silence) → retry elsewhere, backoff 0",
            &f.replica_freeze_ms,
            "",
            f64::NAN,
        ),
        (
            "leader kill -9 → next `app` fire received by the app",
            &f.leader_app_ms,
            "≤ 1 s",
            1000.0,
        ),
        (
            "leader kill -9 → next `http` fire received (same run)",
            &f.leader_http_ms,
            "",
            f64::NAN,
        ),
    ];
    for (what, v, target, bound) in rows {
        let met = (!bound.is_nan()).then(|| max(v) <= bound && !v.is_empty());
        out.push(fig(
            format!("{what}, p50"),
            target,
            percentile(v, 50.0),
            "ms",
            met,
        ));
        out.push(fig(format!("{what}, max"), target, max(v), "ms", met));
        out.push(fig(format!("{what}, trials"), "", v.len() as f64, "", None));
    }
    out.push(fig(
        "(run, attempt) delivered to two replicas",
        "0",
        f.double_deliveries as f64,
        "",
        Some(f.double_deliveries == 0),
    ));
    out
}

// ---------------------------------------------------------------------------
// (c) Many attached replicas: streams of this process speaking the attach
// protocol (`streams`), and dispatch throughput.

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
    let mut generation = 1;
    for &offered in &o.jobs {
        generation += 1;
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

// ---------------------------------------------------------------------------
// Everything, for `raftcron-bench sidecar` and the `all` stage.

pub struct Options {
    pub quick: bool,
}

/// Runs (a), (b) and (c); returns the figures, the notes and the raw data.
pub async fn run_all(o: Options) -> anyhow::Result<(Vec<Figure>, Vec<String>, Value)> {
    let (window, rounds, trials, jobs, scale_window) = if o.quick {
        (
            Duration::from_secs(5),
            1,
            3,
            &[2000][..],
            Duration::from_secs(10),
        )
    } else {
        (
            Duration::from_secs(20),
            2,
            10,
            &[5000, 8000, 10_000, 12_000][..],
            Duration::from_secs(20),
        )
    };
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    eprintln!("-- sidecar: lateness at the app, 200 app vs 200 http jobs");
    let l = lateness(200, window, rounds, CAPACITY).await?;
    figures.extend(lateness_figures(&l));
    notes.extend(lateness_notes(&l));
    eprintln!("-- sidecar: replica and leader kills, {trials} trials each");
    let f = failover(trials).await?;
    figures.extend(failover_figures(&f));
    eprintln!("-- sidecar: 1,000 attached replicas and dispatch throughput");
    let s = scale(ScaleOptions {
        apps: 100,
        replicas: 10,
        jobs: jobs.to_vec(),
        capacity: 10_000,
        window: scale_window,
    })
    .await?;
    figures.extend(scale_figures(&s));
    notes.extend(scale_notes(&s));
    let raw = json!({
        "lateness": {"jobs": l.jobs, "expected": l.expected, "app_ms": l.app_ms, "http_ms": l.http_ms,
            "node_app_histogram": l.node_app_histogram},
        "failover_ms": {"replica_kill": f.replica_kill_ms, "replica_kill_no_backoff": f.replica_kill_no_backoff_ms,
            "replica_freeze": f.replica_freeze_ms, "leader_app": f.leader_app_ms, "leader_http": f.leader_http_ms,
            "double_deliveries": f.double_deliveries},
        "figures": figures.iter().map(|x| json!({"what": x.what, "target": x.target, "value": x.value, "unit": x.unit, "met": x.met})).collect::<Vec<_>>(),
    });
    Ok((figures, notes, raw))
}

/// A markdown table of figures with their targets.
pub fn markdown(figures: &[Figure]) -> String {
    let mut md = String::from("| measurement | target | value | met |\n|---|---|---:|---|\n");
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        md.push_str(&format!(
            "| {} | {} | {} {} | {met} |\n",
            f.what,
            f.target,
            super::fmt(f.value),
            f.unit
        ));
    }
    md
}
