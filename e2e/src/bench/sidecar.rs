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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftcron_crds::names::{parse_rfc3339_ms, run_id};
use raftcron_node::pb::metadata::LEADER_ADDR;
use raftcron_node::pb::scheduler::UpsertRequest;
use raftcron_node::pb::sidecar as pb;
use raftcron_node::pb::sidecar::attach_client::AttachClient;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Report, hist_quantile, histogram, percentile, sorted, upsert};
use crate::process::ChildGuard;
use crate::{Cluster, ClusterOptions, Ledger, bin, free_port, http_get, now_ms, wait_for};

const NS: &str = "shop";
const APP: &str = "web";

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
            (t, None) => format!("{} (target {t})", f.what),
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
    sidecar: ChildGuard,
}

impl Replica {
    async fn start(dir: &Path, cluster: &[String], pod: &str) -> Self {
        let home = dir.join(pod);
        std::fs::create_dir_all(&home).expect("replica dir");
        let mut r = Replica {
            pod: pod.to_string(),
            app: Ledger::start(&home).await,
            listen: format!("127.0.0.1:{}", free_port()),
            log: home.join("sidecar.log"),
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

async fn start_replicas(c: &Cluster, n: usize) -> anyhow::Result<Vec<Replica>> {
    let mut replicas = Vec::new();
    for i in 0..n {
        replicas.push(Replica::start(c.path(), &c.endpoints(), &format!("web-{i}")).await);
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
pub async fn lateness(jobs: usize, window: Duration, rounds: usize) -> anyhow::Result<AppLateness> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let replicas = start_replicas(&c, 3).await?;
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
        "{} per-second `app` jobs (3 replicas: `raftcron-node sidecar` + `raftcron-node target` each) and {} per-second `http` jobs at the same 3 targets, taking turns on one 3-node cluster; lateness = the target's receive time − the scheduled instant, attempt 1; {} instants per kind expected.",
        l.jobs, l.jobs, l.expected
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
    let mut replicas = start_replicas(&c, 3).await?;
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
// protocol, and dispatch throughput.

/// Counters of every [`BenchReplica`] of a run.
#[derive(Default)]
pub struct StreamCounters {
    /// Streams attached now.
    pub attached: AtomicI64,
    /// Welcomes received in all (re-attachments included).
    pub welcomes: AtomicU64,
    pub prepares: AtomicU64,
    /// Results sent: every Go with its Prepare ends in a Succeeded result.
    pub results: AtomicU64,
    /// Go without a Prepare (answered Refused).
    pub refused: AtomicU64,
}

/// A minimal sidecar inside the bench: one gRPC connection and one attach
/// stream, Hello → Welcome, heartbeats every 250 ms, and every Go answered
/// at once with a Succeeded result (no app behind it), so the figure is the
/// leader's dispatch, not an app's. It follows the leader as the sidecar
/// does (UNAVAILABLE names it), and re-attaches after a leader change.
pub struct BenchReplica {
    pub app: String,
    pub pod: String,
    pub capacity: u32,
}

impl BenchReplica {
    pub async fn run(self, endpoints: Arc<Vec<String>>, counters: Arc<StreamCounters>, seed: u64) {
        let mut next = seed as usize;
        let mut target: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        loop {
            let addr = target.take().unwrap_or_else(|| {
                next += 1;
                endpoints[next % endpoints.len()].clone()
            });
            let t0 = Instant::now();
            if let Some(leader) = self.attach_once(&addr, &counters).await {
                target = Some(leader);
                continue;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let jitter = rng % (backoff.as_millis() as u64 / 2 + 1);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One attachment until it ends; Some(leader address) when a follower named it.
    async fn attach_once(&self, addr: &str, counters: &StreamCounters) -> Option<String> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1));
        let channel = endpoint.connect().await.ok()?;
        let (tx, rx) = mpsc::channel::<pb::FromSidecar>(4096);
        let _ = tx.try_send(pb::FromSidecar {
            msg: Some(pb::from_sidecar::Msg::Hello(pb::Hello {
                namespace: NS.into(),
                app: self.app.clone(),
                pod: self.pod.clone(),
                capacity: self.capacity,
                token: String::new(),
            })),
        });
        let outbound =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let mut client = AttachClient::new(channel);
        let mut inbound =
            match tokio::time::timeout(Duration::from_secs(5), client.attach(outbound)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    return status
                        .metadata()
                        .get(LEADER_ADDR)
                        .and_then(|v| v.to_str().ok())
                        .filter(|l| *l != addr)
                        .map(str::to_string);
                }
                Err(_) => return None,
            };
        let silence = Duration::from_secs(1);
        match tokio::time::timeout(silence, inbound.message()).await {
            Ok(Ok(Some(pb::ToSidecar {
                msg: Some(pb::to_sidecar::Msg::Welcome(_)),
            }))) => {}
            _ => return None,
        }
        counters.welcomes.fetch_add(1, Ordering::Relaxed);
        counters.attached.fetch_add(1, Ordering::Relaxed);
        let mut prepared: HashSet<(String, u32)> = HashSet::new();
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                m = tokio::time::timeout(silence, inbound.message()) => {
                    let Ok(Ok(Some(pb::ToSidecar { msg: Some(msg) }))) = m else { break };
                    let reply = match msg {
                        pb::to_sidecar::Msg::Prepare(p) => {
                            counters.prepares.fetch_add(1, Ordering::Relaxed);
                            prepared.insert((p.run_id, p.attempt));
                            None
                        }
                        pb::to_sidecar::Msg::Go(g) => {
                            let known = prepared.remove(&(g.run_id.clone(), g.attempt));
                            let (outcome, counter) = if known {
                                (pb::Outcome::Succeeded, &counters.results)
                            } else {
                                (pb::Outcome::Refused, &counters.refused)
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            Some(pb::from_sidecar::Msg::Result(pb::Result {
                                run_id: g.run_id,
                                attempt: g.attempt,
                                outcome: outcome as i32,
                                message: "HTTP 200".into(),
                                sent_us: now_ms() * 1000,
                            }))
                        }
                        pb::to_sidecar::Msg::Cancel(x) => {
                            prepared.remove(&(x.run_id, x.attempt));
                            None
                        }
                        _ => None,
                    };
                    if let Some(msg) = reply
                        && tx.send(pb::FromSidecar { msg: Some(msg) }).await.is_err()
                    {
                        break;
                    }
                }
                _ = beat.tick() => {
                    let msg = pb::FromSidecar { msg: Some(pb::from_sidecar::Msg::Heartbeat(pb::Heartbeat {})) };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        counters.attached.fetch_sub(1, Ordering::Relaxed);
        None
    }
}

/// CPU time of a process so far, in seconds (utime + stime of /proc/<pid>/stat).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU used over a window, in % of one core, for each pid.
async fn cpu_percent(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| match (b, cpu_seconds(*p)) {
            (Some(b), Some(a)) => (a - b) / secs * 100.0,
            _ => f64::NAN,
        })
        .collect()
}

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
    /// Per-second `app` jobs of the first app (its `replicas` replicas).
    pub jobs: usize,
    /// The capacity each stream announces.
    pub capacity: u32,
    pub window: Duration,
}

pub struct Scale {
    pub streams: usize,
    pub jobs: usize,
    pub replicas: usize,
    /// Attach of every stream → all welcomed (s).
    pub attach_s: f64,
    /// The leader's CPU (% of one core) and RSS (MiB): no stream; the
    /// streams attached and idle (heartbeats); under the dispatch load.
    pub cpu_empty: f64,
    pub rss_empty: f64,
    pub cpu_idle: f64,
    pub rss_idle: f64,
    pub cpu_load: f64,
    pub rss_load: f64,
    /// This process (every stream) while idle and under load, % of one core.
    pub bench_cpu_idle: f64,
    pub bench_cpu_load: f64,
    /// Attempts dispatched and finished (SUCCEEDED results) per second, by
    /// the nodes' `raftcron_node_dispatches_total`; results sent by the
    /// streams per second; runs Succeeded per second.
    pub dispatch_rate: f64,
    pub results_rate: f64,
    pub runs_rate: f64,
    pub elections: u64,
    /// Welcomes beyond the first of each stream (re-attachments).
    pub reattached: u64,
    pub lateness_p99_ms: f64,
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

    // The load: per-second app jobs of app-000, over its replicas.
    let spec =
        json!({"schedule": "* * * * * *", "action": {"app": {"name": "app-000", "path": "/ok"}}});
    let items: Vec<_> = (0..o.jobs)
        .map(|i| job(&format!("load-{i:05}"), 1, &spec))
        .collect();
    for chunk in items.chunks(2000) {
        c.client().upsert_batch(chunk.to_vec()).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // a steady state
    let pid = leader_pid(&c).await.unwrap_or(pid);
    let sample = || async {
        (
            metric_sum(&c, "raftcron_node_dispatches_total{", "SUCCEEDED").await,
            metric_sum(&c, "raftcron_node_runs_total{", "result=\"Succeeded\"").await,
            metric_max(&c, "raftcron_node_raft_term").await,
            counters.results.load(Ordering::Relaxed),
        )
    };
    let (d0, r0, term0, s0) = sample().await;
    let t1 = Instant::now();
    let load = cpu_percent(&[pid, me], o.window).await;
    let (d1, r1, term1, s1) = sample().await;
    let secs = t1.elapsed().as_secs_f64();
    let rss_load = rss_mib(pid);
    let (_, metrics) = http_get(
        &c.nodes[(c.wait_leader(Duration::from_secs(5)).await.unwrap_or(1) - 1) as usize].http,
        "/metrics",
    )
    .await?;
    let lateness_p99_ms = hist_quantile(
        &histogram(&metrics, "raftcron_node_app_lateness_seconds"),
        99.0,
    ) * 1000.0;
    let reattached = counters
        .welcomes
        .load(Ordering::Relaxed)
        .saturating_sub(streams as u64);
    for t in tasks {
        t.abort();
    }
    Ok(Scale {
        streams,
        jobs: o.jobs,
        replicas: o.replicas,
        attach_s,
        cpu_empty,
        rss_empty,
        cpu_idle: idle[0],
        rss_idle,
        cpu_load: load[0],
        rss_load,
        bench_cpu_idle: idle[1],
        bench_cpu_load: load[1],
        dispatch_rate: (d1 - d0) / secs,
        results_rate: (s1 - s0) as f64 / secs,
        runs_rate: (r1 - r0) / secs,
        elections: (term1 - term0).max(0.0) as u64,
        reattached,
        lateness_p99_ms,
    })
}

pub fn scale_figures(s: &Scale) -> Vec<Figure> {
    let n = s.streams;
    vec![
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
            format!(
                "dispatched and finished, {} per-second app jobs over {} replicas",
                s.jobs, s.replicas
            ),
            "≥ 10,000 /s",
            s.dispatch_rate,
            "attempts/s",
            Some(s.dispatch_rate >= 10_000.0),
        ),
        fig(
            "… results sent by the replicas",
            "",
            s.results_rate,
            "results/s",
            None,
        ),
        fig(
            "… runs Succeeded (recorded through Raft)",
            "",
            s.runs_rate,
            "runs/s",
            None,
        ),
        fig(
            "… instant → result leaving the replica p99 (leader's histogram, bucket bound)",
            "",
            s.lateness_p99_ms,
            "ms",
            None,
        ),
        fig(
            "leader CPU under that load",
            "",
            s.cpu_load,
            "% of a core",
            None,
        ),
        fig("leader RSS under that load", "", s.rss_load, "MiB", None),
        fig(
            "leader elections during the load window",
            "",
            s.elections as f64,
            "",
            None,
        ),
        fig(
            "re-attachments during the run",
            "",
            s.reattached as f64,
            "",
            None,
        ),
        fig(
            format!("this process's CPU ({n} streams), idle / under load"),
            "",
            s.bench_cpu_idle,
            "% of a core",
            None,
        ),
        fig("… under load", "", s.bench_cpu_load, "% of a core", None),
    ]
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
        (Duration::from_secs(5), 1, 3, 2000, Duration::from_secs(10))
    } else {
        (
            Duration::from_secs(20),
            2,
            10,
            12_000,
            Duration::from_secs(30),
        )
    };
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    eprintln!("-- sidecar: lateness at the app, 200 app vs 200 http jobs");
    let l = lateness(200, window, rounds).await?;
    figures.extend(lateness_figures(&l));
    notes.extend(lateness_notes(&l));
    eprintln!("-- sidecar: replica and leader kills, {trials} trials each");
    let f = failover(trials).await?;
    figures.extend(failover_figures(&f));
    eprintln!("-- sidecar: 1,000 attached replicas and dispatch throughput");
    let s = scale(ScaleOptions {
        apps: 100,
        replicas: 10,
        jobs,
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
