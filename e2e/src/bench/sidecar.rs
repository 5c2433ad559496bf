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

mod failover;
mod scale;
mod streams;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raftcron_crds::names::parse_rfc3339_ms;
use raftcron_node::pb::scheduler::UpsertRequest;
use serde_json::{Value, json};

pub use failover::{Failover, failover, failover_figures};
pub use scale::{Level, Scale, ScaleOptions, scale, scale_figures, scale_notes};
pub use streams::{BenchReplica, StreamCounters, machine_busy_seconds, rss_mib};

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
    pub(crate) listen: String,
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
            // RAFTCRON_SIDECAR_LOG=debug shows each attach try.
            .env(
                "RAFTCRON_LOG",
                std::env::var("RAFTCRON_SIDECAR_LOG").unwrap_or_else(|_| "info".into()),
            );
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

pub(crate) async fn start_replicas(
    c: &Cluster,
    n: usize,
    capacity: u32,
) -> anyhow::Result<Vec<Replica>> {
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
            "leader_elected": f.leader_elected_ms, "leader_reattached": f.leader_reattached_ms,
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
