//! Benchmarks of jobs from app code (`raftcron-bench jobs`): `dueTime: 0s`
//! (enqueue) → the request at the app, split into its parts, with each job
//! checked to arrive exactly once; then many jobs created through one
//! sidecar: the rate, and the nodes' RSS before and after. Prints figures;
//! asserts nothing.
//!
//! ```text
//!  this process ──PUT /v1/jobs/q-i──► sidecar web-0 ──PutJob──► leader: Upsert (Raft) ─┐
//!                                                     fire loop ◄── change feed ───────┘
//!                                        claim (Raft) → arm → firer ──Prepare/Go──► sidecar web-k
//!                                                                  ledger target k ◄──POST /raftcron/jobs/q-i
//! ```
//!
//! One machine, one clock, so the parts of an enqueued job line up:
//! sent (here) → dueTime (`0s` is the leader's now as it parses the PUT; the
//! `Raftcron-Scheduled-Time` the app gets) → reply (here: the job was
//! committed and applied) → armed (the leader's `armed` debug line, when the
//! nodes log `raftcron_node::scheduler::leader=debug`) → received (the
//! ledger's clock).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftcron_crds::names::parse_rfc3339_ms;
use serde_json::{Value, json};

use super::sidecar::{self, Replica, machine_busy_seconds, rss_mib};
use super::{Report, hist_quantile, histogram, percentile, sorted};
use crate::lease_check::LocalApi;
use crate::{Cluster, ClusterOptions, http_get, wait_for};

#[derive(Clone, Debug)]
pub struct Options {
    /// Jobs enqueued with `dueTime: 0s`, one at a time.
    pub enqueue: usize,
    /// Their PUTs per second.
    pub rate: f64,
    /// Jobs created due in an hour (they do not fire during the run).
    pub create: usize,
    /// Their PUTs in flight at once, each on a connection of its own.
    pub in_flight: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enqueue: 2000,
            rate: 50.0,
            create: 10_000,
            in_flight: 16,
        }
    }
}

/// Upper bounds of the options: a benchmark, not a load generator.
const MAX_ENQUEUE: usize = 20_000;
const MAX_CREATE: usize = 100_000;
const MAX_RATE: f64 = 500.0;
const T: Duration = Duration::from_secs(10);
/// The enqueue target: `dueTime` now → request at the app, p99.
const TARGET_MS: f64 = 10.0;
const ENQUEUED: &str = "q-";
const CREATED: &str = "later-";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Unix time in milliseconds with a fraction, as the ledger records it.
fn wall_ms() -> f64 {
    ms(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock"))
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How loaded the machine is over a stage: load averages at both ends and
/// the share of all cores busy in between.
struct Load {
    at_start: String,
    busy: f64,
    started: Instant,
}

impl Load {
    fn start() -> Self {
        Self {
            at_start: loadavg(),
            busy: machine_busy_seconds(),
            started: Instant::now(),
        }
    }

    fn note(&self, what: &str) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = (machine_busy_seconds() - self.busy)
            / (self.started.elapsed().as_secs_f64() * cores)
            * 100.0;
        format!(
            "Load during {what}: load averages (1, 5, 15 min) {} at its start, {} at its end; \
             {busy:.0} % of the {cores} cores busy over its {:.0} s (everything on the machine).",
            self.at_start,
            loadavg(),
            self.started.elapsed().as_secs_f64()
        )
    }
}

async fn put(api: &mut LocalApi, name: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    api.call(
        "PUT",
        &format!("/v1/jobs/{name}"),
        Some(&body.to_string()),
        T,
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// p50, p99 and max of `v` as rows; with `target`, the p99's verdict.
fn rows(r: &mut Report, what: &str, v: Vec<f64>, target: Option<f64>) {
    let v = sorted(v);
    let p99 = percentile(&v, 99.0);
    r.add(format!("{what}, p50"), percentile(&v, 50.0), "ms");
    let p99_name = match target {
        Some(t) if p99 <= t => format!("{what}, p99 (target ≤ {t} ms: met)"),
        Some(t) => format!("{what}, p99 (target ≤ {t} ms: **missed**)"),
        None => format!("{what}, p99"),
    };
    r.add(p99_name, p99, "ms");
    r.add(format!("{what}, max"), percentile(&v, 100.0), "ms");
}

/// The leader's HTTP address (metrics).
async fn leader_http(c: &Cluster) -> anyhow::Result<(u64, String)> {
    let id = c
        .wait_leader(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    Ok((id, c.nodes[(id - 1) as usize].http.clone()))
}

/// Buckets of a histogram of `addr`'s metrics.
async fn buckets(addr: &str, name: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let (_, text) = http_get(addr, "/metrics").await?;
    Ok(histogram(&text, name))
}

/// `after − before`, bucket by bucket: what one stage added.
fn since(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let b = before.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (*le, n - b)
        })
        .collect()
}

/// Requests the apps received for jobs named `prefix<i>`: i → (received,
/// Unix ms; the scheduled instant, ms; the attempt), from every replica.
fn received(replicas: &[Replica], prefix: &str) -> HashMap<usize, Vec<(f64, Option<i64>, u32)>> {
    let path = format!("/raftcron/jobs/{prefix}");
    let mut m: HashMap<usize, Vec<_>> = HashMap::new();
    for r in replicas {
        for rec in r.app.records() {
            let Some(i) = rec
                .path
                .strip_prefix(&path)
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            let at = rec.scheduled_time.as_deref().and_then(parse_rfc3339_ms);
            m.entry(i)
                .or_default()
                .push((rec.received_ms, at, rec.attempt.unwrap_or(0)));
        }
    }
    m
}

/// From the nodes' JSON logs, the fire loop's `armed` lines that armed one
/// start: its instant (ms) → when it was armed (Unix ms). Instants armed
/// more than once, or with others, are left out (ambiguous).
fn armed(c: &Cluster) -> HashMap<i64, f64> {
    let mut out = HashMap::new();
    let mut ambiguous = HashSet::new();
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("\"armed\"")) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let f = &v["fields"];
            let (Some(first), Some(lead_us), Some(k)) =
                (f["first"].as_i64(), f["lead_us"].as_i64(), f["n"].as_u64())
            else {
                continue;
            };
            if f["message"] != "armed" {
                continue;
            }
            // lead_us = instant − the pass's start, in µs.
            let at = (first * 1000 - lead_us) as f64 / 1000.0;
            if k != 1 || out.insert(first, at).is_some() {
                ambiguous.insert(first);
            }
        }
    }
    for a in ambiguous {
        out.remove(&a);
    }
    out
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=MAX_ENQUEUE).contains(&opts.enqueue)
            && (1..=MAX_CREATE).contains(&opts.create)
            && opts.rate > 0.0
            && opts.rate <= MAX_RATE
            && (1..=256).contains(&opts.in_flight),
        "options out of bounds: enqueue 1..={MAX_ENQUEUE}, create 1..={MAX_CREATE}, rate ≤ {MAX_RATE}/s, in flight 1..=256"
    );
    let mut report = Report::default();
    let c = Cluster::start(ClusterOptions {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..ClusterOptions::default()
    })
    .await;
    let replicas = sidecar::start_replicas(&c, 3, sidecar::CAPACITY).await?;
    let rss_empty: Vec<f64> = c
        .nodes
        .iter()
        .map(|n| n.pid().map_or(f64::NAN, rss_mib))
        .collect();
    enqueue(&c, &replicas, &opts, &mut report).await?;
    create(&c, &replicas, &opts, &rss_empty, &mut report).await?;
    Ok(report)
}

/// (1) `dueTime: 0s`, one PUT at a time at `rate`, through web-0.
async fn enqueue(
    c: &Cluster,
    replicas: &[Replica],
    opts: &Options,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = opts.enqueue;
    let mut api = LocalApi::new(&replicas[0].listen);
    // Warm every hop (app → sidecar, sidecar → leader, leader → each
    // sidecar, sidecar → app) before anything is measured.
    for i in 0..30 {
        let (code, v) = put(&mut api, &format!("warm-{i}"), &json!({"dueTime": "0s"})).await?;
        anyhow::ensure!(code == 201, "warm-up PUT: {code} {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (leader, leader_addr) = leader_http(c).await?;
    const FIRE: &str = "raftcron_node_fire_lateness_seconds";
    const APP: &str = "raftcron_node_app_lateness_seconds";
    let (fire0, app0) = (
        buckets(&leader_addr, FIRE).await?,
        buckets(&leader_addr, APP).await?,
    );
    let load = Load::start();
    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let start = tokio::time::Instant::now();
    // (sent, reply), Unix ms.
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let body = json!({"dueTime": "0s", "data": {"i": i}});
        let at = wall_ms();
        let t = Instant::now();
        let (code, v) = put(&mut api, &format!("{ENQUEUED}{i}"), &body).await?;
        sent.push((at, at + ms(t.elapsed())));
        anyhow::ensure!(code == 201, "PUT {ENQUEUED}{i}: {code} {v}");
    }
    let put_s = start.elapsed().as_secs_f64();
    // Every job arrives, or 15 s pass; then a second more, for a second
    // delivery of any of them to show (the ledgers flush every 100 ms).
    wait_for(Duration::from_secs(15), || async {
        (received(replicas, ENQUEUED).len() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = received(replicas, ENQUEUED);
    let (fire1, app1) = (
        buckets(&leader_addr, FIRE).await?,
        buckets(&leader_addr, APP).await?,
    );
    report.notes.push(load.note("the enqueue stage"));
    let still = leader_http(c).await?.0;
    if still != leader {
        report.notes.push(format!(
            "the leader changed during the enqueue stage ({leader} → {still}): its histograms are partial"
        ));
    }

    let once = (0..n).filter(|i| got.get(i).is_some_and(|v| v.len() == 1));
    let once = once.count();
    let missing = (0..n).filter(|i| !got.contains_key(i)).count();
    let twice = got.values().filter(|v| v.len() > 1).count();
    let retried = got.values().flatten().filter(|r| r.2 != 1).count();
    report.add(
        format!("enqueued jobs received exactly once by one replica, of {n}"),
        once as f64,
        "jobs",
    );
    report.add("  never received", missing as f64, "jobs");
    report.add("  received more than once", twice as f64, "jobs");
    report.add(
        "  requests that were a retry (attempt > 1)",
        retried as f64,
        "requests",
    );

    let arm = armed(c);
    let (mut due_app, mut sent_app, mut sent_reply, mut sent_due) =
        (vec![], vec![], vec![], vec![]);
    let (mut due_armed, mut reply_armed, mut armed_app) = (vec![], vec![], vec![]);
    let mut over = 0;
    for (i, (s, reply)) in sent.iter().enumerate() {
        sent_reply.push(reply - s);
        let Some((recv, Some(due), _)) = got.get(&i).and_then(|v| v.first()).copied() else {
            continue;
        };
        let due_f = due as f64;
        due_app.push(recv - due_f);
        sent_app.push(recv - s);
        sent_due.push(due_f - s);
        if recv - due_f > TARGET_MS {
            over += 1;
        }
        if let Some(at) = arm.get(&due) {
            due_armed.push(at - due_f);
            reply_armed.push(at - reply);
            armed_app.push(recv - at);
        }
    }
    let k = due_app.len();
    rows(
        report,
        "dueTime (Raftcron-Scheduled-Time) → request at the app",
        due_app,
        Some(TARGET_MS),
    );
    report.add(
        format!("  jobs over {TARGET_MS} ms, of {k}"),
        over as f64,
        "jobs",
    );
    rows(report, "PUT sent → request at the app", sent_app, None);
    report.add(
        format!("PUTs per second offered (one at a time, {n} in {put_s:.1} s)"),
        opts.rate,
        "PUT/s",
    );
    report.add("  achieved", n as f64 / put_s, "PUT/s");
    rows(
        report,
        "  PUT sent → dueTime stamped by the leader (±1 ms: dueTime is whole ms)",
        sent_due,
        None,
    );
    rows(
        report,
        "  PUT sent → reply (the job committed on a quorum and applied)",
        sent_reply,
        None,
    );
    if due_armed.is_empty() {
        report.notes.push(
            "No `armed` lines in the node logs: run with \
             RAFTCRON_LOG=info,openraft=warn,raftcron_node::scheduler::leader=debug for the split at the arm."
                .into(),
        );
    } else {
        let m = due_armed.len();
        rows(
            report,
            &format!("  dueTime → armed on the leader ({m} jobs armed alone)"),
            due_armed,
            None,
        );
        rows(
            report,
            "  PUT reply → armed (the claim: waiting for a claim pass, and its Raft write)",
            reply_armed,
            None,
        );
        rows(
            report,
            "  armed → request at the app (launch, Go on the attach stream, the sidecar's POST)",
            armed_app,
            None,
        );
    }
    let (fire, app) = (since(&fire0, &fire1), since(&app0, &app1));
    for (what, b) in [
        (
            "  dueTime → attempt started on the leader (fire lateness histogram, bucket bound)",
            &fire,
        ),
        (
            "  dueTime → request leaving the sidecar (app lateness histogram, bucket bound)",
            &app,
        ),
    ] {
        report.add(
            format!("{what}, p50"),
            hist_quantile(b, 50.0) * 1000.0,
            "ms",
        );
        report.add(
            format!("{what}, p99"),
            hist_quantile(b, 99.0) * 1000.0,
            "ms",
        );
    }
    report.notes.push(format!(
        "Enqueue: {n} PUT /v1/jobs/{ENQUEUED}i {{\"dueTime\": \"0s\", \"data\": {{\"i\": i}}}}, one at a time at {} per second over one kept \
         HTTP/1.1 connection to the sidecar of web-0 (3 replicas: `raftcron-node sidecar --capacity {}` + `raftcron-node target` each; \
         3 nodes on loopback). Times are Unix ms on this machine's one clock: sent and reply here, dueTime from the \
         Raftcron-Scheduled-Time the app got, received by the ledger, armed from the leader's log.",
        opts.rate,
        sidecar::CAPACITY
    ));
    Ok(())
}

/// (2) `create` jobs due in an hour, `in_flight` PUTs at once, through
/// web-0; the nodes' RSS before and after.
async fn create(
    c: &Cluster,
    replicas: &[Replica],
    opts: &Options,
    rss_empty: &[f64],
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = opts.create;
    // The enqueued jobs end (removed by the leader) and every node applies it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let schedules = |id: u64| async move { c.status(id).await.map(|s| s.schedules) };
    let mut base = Vec::new();
    for n in &c.nodes {
        base.push(schedules(n.id).await.unwrap_or(0));
    }
    let rss = || -> Vec<f64> {
        c.nodes
            .iter()
            .map(|n| n.pid().map_or(f64::NAN, rss_mib))
            .collect()
    };
    let before = rss();
    let load = Load::start();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.in_flight {
        let next = next.clone();
        let listen = replicas[0].listen.clone();
        tasks.push(tokio::spawn(async move {
            let mut api = LocalApi::new(&listen);
            let mut out: Vec<(f64, Result<u16, String>)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let body = json!({"dueTime": "1h", "data": {"i": i}});
                let t = Instant::now();
                let r = put(&mut api, &format!("{CREATED}{i:05}"), &body).await;
                out.push((
                    ms(t.elapsed()),
                    r.map(|(code, _)| code).map_err(|e| e.to_string()),
                ));
            }
        }));
    }
    let mut latency = Vec::with_capacity(n);
    let (mut created, mut errors) = (0usize, Vec::new());
    for t in tasks {
        for (l, r) in t.await? {
            latency.push(l);
            match r {
                Ok(201) => created += 1,
                Ok(code) => errors.push(format!("HTTP {code}")),
                Err(e) => errors.push(e),
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    // Every node holds them: its schedule count has grown by as many.
    let stored = wait_for(Duration::from_secs(60), || async {
        for (node, b) in c.nodes.iter().zip(&base) {
            if schedules(node.id).await? < b + created as u64 {
                return None;
            }
        }
        Some(())
    })
    .await
    .is_some();
    let applied = started.elapsed().as_secs_f64();
    let after = rss();
    report.notes.push(load.note("the create stage"));
    report.add(
        format!(
            "{n} jobs (dueTime 1h) PUT through one sidecar, {} in flight: created (201)",
            opts.in_flight
        ),
        created as f64,
        "jobs",
    );
    report.add("  creation rate", created as f64 / took, "jobs/s");
    report.add("  all PUTs answered", took, "s");
    if stored {
        report.add("  PUT of the first → every node holds all", applied, "s");
    } else {
        report
            .notes
            .push("not every node held all the created jobs within 60 s".into());
    }
    rows(report, "  PUT latency at this concurrency", latency, None);
    let leader = c.leader().await.unwrap_or(0);
    for (i, node) in c.nodes.iter().enumerate() {
        let role = if node.id == leader {
            "leader"
        } else {
            "follower"
        };
        let id = node.id;
        report.add(
            format!("node {id} ({role}) RSS, empty cluster"),
            rss_empty[i],
            "MiB",
        );
        report.add(
            format!("  node {id} RSS before the {n} (after the enqueue stage)"),
            before[i],
            "MiB",
        );
        report.add(format!("  node {id} RSS after the {n}"), after[i], "MiB");
        report.add(
            format!("  node {id} RSS growth per job created"),
            (after[i] - before[i]) * 1024.0 / created.max(1) as f64,
            "KiB",
        );
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        report.notes.push(format!(
            "{} PUTs were not 201; kinds: {}",
            n - created,
            errors.into_iter().take(5).collect::<Vec<_>>().join("; ")
        ));
    }
    report.notes.push(format!(
        "Create: PUT /v1/jobs/{CREATED}NNNNN {{\"dueTime\": \"1h\", \"data\": {{\"i\": i}}}}, {} tasks each on its own kept connection \
         to web-0's sidecar; RSS is VmRSS of /proc/<pid>/status, read 3 s after the enqueue stage and once every node's \
         schedule count shows all the created jobs.",
        opts.in_flight
    ));
    Ok(())
}
