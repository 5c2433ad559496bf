//! Benchmarks behind `raftcron-bench`: each starts its own cluster of real
//! processes, drives it, and returns figures. Nothing here asserts timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftcron_crds::names::{parse_rfc3339_ms, rfc3339_ms};
use raftcron_node::client::Client;
use raftcron_node::pb::scheduler::UpsertRequest;
use serde_json::json;

use crate::{Cluster, ClusterOptions, Ledger, now_ms, wait_for};

/// Named figures, printed as a markdown table.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<(String, f64, &'static str)>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.rows.push((name.into(), value, unit));
    }

    pub fn table(&self) -> String {
        let mut s = String::from("| measurement | value | unit |\n|---|---:|---|\n");
        for (n, v, u) in &self.rows {
            let v = if v.fract() == 0.0 && v.abs() < 1e12 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            s.push_str(&format!("| {n} | {v} | {u} |\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("\n{n}\n"));
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "rows": self.rows.iter().map(|(n, v, u)| json!({"name": n, "value": v, "unit": u})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// The `p`-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

fn upsert(ns: &str, name: &str, spec: &serde_json::Value) -> UpsertRequest {
    UpsertRequest {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("{ns}-{name}"),
        generation: 1,
        spec_json: spec.to_string(),
        kubernetes: false,
    }
}

/// Committed writes per second for each client count: every client upserts
/// its own schedules one at a time, each call returning once committed.
pub async fn writes(clients: &[usize], duration: Duration) -> anyhow::Result<Report> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let spec = json!({"schedule": "0 0 1 1 *", "action": {"http": {"url": "http://127.0.0.1:9/"}}});
    let mut report = Report::default();
    for &n in clients {
        let endpoints = c.endpoints();
        let mut tasks = Vec::new();
        let spec = Arc::new(spec.clone());
        for t in 0..n {
            let client = Client::new(endpoints.clone(), None);
            let spec = spec.clone();
            // Warm up: find the leader before the clock starts.
            client
                .upsert_batch(vec![upsert(
                    &format!("bench-{n}"),
                    &format!("warm-{t}"),
                    &spec,
                )])
                .await?;
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let end = Instant::now() + duration;
                let mut i = 0u64;
                while Instant::now() < end {
                    let req = upsert(&format!("bench-{n}"), &format!("c{t}-{i}"), &spec);
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
        let rate = all.len() as f64 / duration.as_secs_f64();
        let lat = sorted(all);
        report.add(
            format!("committed writes/s, {n} client(s)"),
            rate.round(),
            "writes/s",
        );
        report.add(
            format!("write latency p50, {n} client(s)"),
            percentile(&lat, 50.0),
            "ms",
        );
        report.add(
            format!("write latency p99, {n} client(s)"),
            percentile(&lat, 99.0),
            "ms",
        );
    }
    report.notes.push("Each write is one schedule upsert through the scheduler API, acknowledged after commit and apply on the leader (fsync on a quorum).".into());
    Ok(report)
}

/// kill -9 of the leader 20 ms before a due instant; the gap is from that
/// instant until the fire reaches the target.
pub async fn failover(trials: usize, node_args: Vec<String>) -> anyhow::Result<Report> {
    let mut c = Cluster::start(ClusterOptions {
        nodes: 3,
        extra_args: node_args.clone(),
        ..Default::default()
    })
    .await;
    let ledger = Ledger::start(c.path()).await;
    let spec = json!({"schedule": "* * * * * *", "action": {"http": {"url": ledger.url("/ok")}}});
    c.client()
        .upsert_batch(vec![upsert("failover", "tick", &spec)])
        .await?;
    let mut gaps = Vec::new();
    let mut elections = Vec::new();
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
        let killed = Instant::now();
        let new = c.wait_new_leader(leader, Duration::from_secs(10)).await;
        let elected = killed.elapsed();
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
            Some(r) => {
                let gap = r.received_ms - instant as f64;
                println!(
                    "trial {trial}: leader {leader} killed, node {new:?} elected after {elected:?}, fire executed {gap:.1} ms after its instant"
                );
                gaps.push(gap);
                elections.push(elected.as_secs_f64() * 1000.0);
            }
            None => println!("trial {trial}: the fire at {want} did not execute within 10 s"),
        }
        c.node(leader).start(false);
    }
    let gaps = sorted(gaps);
    let elections = sorted(elections);
    let mut report = Report::default();
    let label = if node_args.is_empty() {
        "default timeouts".to_string()
    } else {
        node_args.join(" ")
    };
    report.add(
        format!("failover gap p50 ({label})"),
        percentile(&gaps, 50.0),
        "ms",
    );
    report.add(
        format!("failover gap p99 ({label})"),
        percentile(&gaps, 99.0),
        "ms",
    );
    report.add(
        format!("failover gap max ({label})"),
        gaps.last().copied().unwrap_or(f64::NAN),
        "ms",
    );
    report.add(
        format!("new leader seen by a client, p50 ({label})"),
        percentile(&elections, 50.0),
        "ms",
    );
    report.add(
        "trials with the fire executed",
        gaps.len() as f64,
        "of trials",
    );
    report.notes.push(format!("{trials} trials: kill -9 of the leader 20 ms before a due instant; gap = target receive time - instant."));
    Ok(report)
}

/// Lateness of `n` per-second schedules over `duration`: at the node
/// (instant → action start, from the leader's histogram) and at the target
/// (instant → request received).
pub async fn lateness(n: usize, duration: Duration) -> anyhow::Result<Report> {
    let c = Cluster::start(ClusterOptions::default()).await;
    let ledger = Ledger::start(c.path()).await;
    let spec = json!({"schedule": "* * * * * *", "action": {"http": {"url": ledger.url("/ok")}}});
    let items: Vec<_> = (0..n)
        .map(|i| upsert("lateness", &format!("s{i:05}"), &spec))
        .collect();
    for chunk in items.chunks(1000) {
        c.client().upsert_batch(chunk.to_vec()).await?;
    }
    let start = (now_ms() / 1000 + 3) * 1000;
    let end = start + duration.as_millis() as i64;
    tokio::time::sleep(Duration::from_millis((end + 3000 - now_ms()).max(0) as u64)).await;
    let mut late = Vec::new();
    for r in ledger.records() {
        let Some(at) = r.scheduled_time.as_deref().and_then(parse_rfc3339_ms) else {
            continue;
        };
        if at >= start && at < end {
            late.push(r.received_ms - at as f64);
        }
    }
    let expected = n as i64 * (end - start) / 1000;
    let late = sorted(late);
    let mut report = Report::default();
    report.add(
        format!("fires executed ({n} per-second schedules)"),
        late.len() as f64,
        "fires",
    );
    report.add("fires expected", expected as f64, "fires");
    for p in [50.0, 99.0, 99.9] {
        report.add(
            format!("lateness at the target p{p}"),
            percentile(&late, p),
            "ms",
        );
    }
    report.add(
        "lateness at the target max",
        late.last().copied().unwrap_or(f64::NAN),
        "ms",
    );
    let leader = c
        .wait_leader(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let http = &c.nodes[(leader - 1) as usize].http;
    let (_, metrics) = crate::http_get(http, "/metrics").await?;
    let hist = histogram(&metrics, "raftcron_node_fire_lateness_seconds");
    for p in [50.0, 99.0, 99.9] {
        report.add(
            format!("lateness at the node (instant → action start) p{p}, bucket bound"),
            hist_quantile(&hist, p) * 1000.0,
            "ms",
        );
    }
    report.notes.push("Node lateness is read from the leader's raftcron_node_fire_lateness_seconds histogram (upper bound of the bucket holding the quantile).".into());
    Ok(report)
}

/// (upper bound, cumulative count) pairs of a Prometheus histogram.
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

fn hist_quantile(buckets: &[(f64, f64)], p: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let want = total * p / 100.0;
    buckets
        .iter()
        .find(|(_, c)| *c >= want)
        .map_or(f64::NAN, |(le, _)| *le)
}

/// With a real API server: `count` ScheduledJobs created at once, and the
/// time until every one is Ready (registered by the operator).
pub async fn kubernetes_ready(count: usize) -> anyhow::Result<Report> {
    use kube::api::{ListParams, PostParams};
    let kc = crate::kube::kubeconfig().map_err(|e| anyhow::anyhow!(e))?;
    let client = crate::kube::client(&kc).await;
    crate::kube::install_crd(&client).await;
    let ns = crate::kube::TempNamespace::create(&client, "raftcron-bench").await;
    let dir = tempfile::tempdir()?;
    let mut pods = crate::kube::pod_nodes(dir.path(), &kc, 3);
    let endpoints: Vec<String> = pods.iter().map(|p| p.grpc.clone()).collect();
    let mut operator = crate::kube::Operator::new(
        dir.path(),
        &kc,
        &ns.name,
        &endpoints,
        "image: raftcron-node:bench\n",
    );
    for p in &mut pods {
        p.start();
    }
    operator.start();
    let api: kube::Api<raftcron_crds::ScheduledJob> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..count {
        let obj: raftcron_crds::ScheduledJob = serde_json::from_value(json!({
            "apiVersion": "raftcron.dev/v1alpha1", "kind": "ScheduledJob",
            "metadata": {"name": format!("job-{i:05}"), "namespace": ns.name},
            "spec": {"schedule": "0 0 1 1 *", "action": {"http": {"url": "http://10.0.0.1/"}}},
        }))?;
        let api = api.clone();
        creates.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &obj).await.map(|_| ())
        }));
        if creates.len() >= 32 {
            for c in creates.drain(..) {
                c.await??;
            }
        }
    }
    for c in creates {
        c.await??;
    }
    let created = started.elapsed();
    let ready = wait_for(Duration::from_secs(600), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let n = list
                .items
                .iter()
                .filter(|o| {
                    o.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            (n == count).then_some(())
        }
    })
    .await;
    let mut report = Report::default();
    report.add(
        format!("{count} ScheduledJobs created (API calls, 32 in flight)"),
        created.as_secs_f64(),
        "s",
    );
    match ready {
        Some(()) => report.add(
            format!("{count} ScheduledJobs created → all Ready"),
            started.elapsed().as_secs_f64(),
            "s",
        ),
        None => report.notes.push(format!(
            "not all {count} became Ready within 600 s\n{}",
            operator.log_tail()
        )),
    }
    Ok(report)
}
