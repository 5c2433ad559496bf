//! Benchmarks behind `raftcron-bench`: each starts what it measures (real
//! processes on loopback) and returns figures. Nothing here asserts timing.
//!
//! `measure` returns raw data; the functions here turn it into reports, and
//! `all` runs everything, writing JSON, a markdown table and PNG plots.
//! `sidecar` holds the sidecar scheduler's own (the `app` action).

pub mod all;
pub mod jobs;
pub mod leases;
pub mod measure;
pub mod sidecar;
pub mod target;

use std::time::{Duration, Instant};

use raftcron_node::pb::scheduler::UpsertRequest;
use serde_json::json;

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
            s.push_str(&format!("| {n} | {} | {u} |\n", fmt(*v)));
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

/// A figure for a table: integers as such, others with two decimals.
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
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

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

pub(crate) fn upsert(ns: &str, name: &str, spec: &serde_json::Value) -> UpsertRequest {
    UpsertRequest {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("{ns}-{name}"),
        generation: 1,
        spec_json: spec.to_string(),
        kubernetes: false,
    }
}

/// The sum of the samples of metric `name` whose labels contain `label`
/// (the Prometheus text format).
pub(crate) fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (upper bound, cumulative count) pairs of a Prometheus histogram.
pub(crate) fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
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

/// Upper bound of the bucket that holds the `p`-th percentile.
pub(crate) fn hist_quantile(buckets: &[(f64, f64)], p: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let want = total * p / 100.0;
    buckets
        .iter()
        .find(|(_, c)| *c >= want)
        .map_or(f64::NAN, |(le, _)| *le)
}

/// Committed writes; with `etcd`, a 3-member etcd measured the same way
/// right after, in the same run (the anchor of DESIGN.md's write targets).
pub async fn writes(clients: &[usize], duration: Duration, etcd: bool) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut add = |who: &str, runs: Vec<measure::Writes>| {
        for w in runs {
            report.add(
                format!("{who}: committed writes/s, {} client(s)", w.clients),
                w.rate.round(),
                "writes/s",
            );
            report.add(
                format!("{who}: write latency p50, {} client(s)", w.clients),
                percentile(&w.latency_ms, 50.0),
                "ms",
            );
            report.add(
                format!("{who}: write latency p99, {} client(s)", w.clients),
                percentile(&w.latency_ms, 99.0),
                "ms",
            );
        }
    };
    add(
        "raftcron",
        measure::raftcron_writes(clients, duration).await?,
    );
    if etcd {
        add("etcd", measure::etcd_writes(clients, duration).await?);
    }
    report.notes.push("Each raftcron write is one schedule upsert through the scheduler API, acknowledged after commit (fsync on a quorum) and apply on the leader; each etcd write a 256-byte put to a 3-member etcd on the same machine.".into());
    Ok(report)
}

pub async fn failover(trials: usize, node_args: Vec<String>) -> anyhow::Result<Report> {
    let label = if node_args.is_empty() {
        "default timeouts".to_string()
    } else {
        node_args.join(" ")
    };
    let gaps = sorted(measure::raftcron_failover(trials, node_args).await?);
    let mut report = Report::default();
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
        "trials with the fire executed",
        gaps.len() as f64,
        "of trials",
    );
    report.notes.push(format!("{trials} trials: kill -9 of the leader 20 ms before a due instant; gap = target receive time - instant."));
    Ok(report)
}

pub async fn lateness(n: usize, duration: Duration, nginx: bool) -> anyhow::Result<Report> {
    let l = measure::lateness(n, duration, nginx).await?;
    let mut report = Report::default();
    lateness_rows(&mut report, &l);
    Ok(report)
}

/// The floor's figure: the median round.
pub(crate) fn floor_ms(l: &measure::Lateness) -> f64 {
    percentile(&l.floor_ms, 50.0)
}

pub(crate) fn lateness_rows(report: &mut Report, l: &measure::Lateness) {
    let n = l.schedules;
    report.add(
        format!("fires received / expected, {n} schedules"),
        l.target_ms.len() as f64 / l.expected.max(1) as f64,
        "ratio",
    );
    for p in [50.0, 99.0] {
        report.add(
            format!("fire lateness at the node (instant → action start) p{p}, {n} schedules (bucket bound)"),
            hist_quantile(&l.node_histogram, p) * 1000.0,
            "ms",
        );
    }
    for p in [50.0, 99.0, 99.9] {
        report.add(
            format!("fire lateness at {} p{p}, {n} schedules", l.target),
            percentile(&l.target_ms, p),
            "ms",
        );
    }
    report.add(
        format!("fire lateness at {} max, {n} schedules", l.target),
        l.target_ms.last().copied().unwrap_or(f64::NAN),
        "ms",
    );
    report.add(
        format!("floor: {n} requests at once over warm connections, instant → last received (median of {})", l.floor_ms.len()),
        floor_ms(l),
        "ms",
    );
    report.add(
        format!("at-target p99 / floor, {n} schedules"),
        percentile(&l.target_ms, 99.0) / floor_ms(l),
        "ratio",
    );
    report.add(
        format!("leader elections in the window, {n} schedules"),
        l.elections as f64,
        "",
    );
}

pub async fn kubernetes_ready(count: usize) -> anyhow::Result<Report> {
    use kube::api::PostParams;
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
    let requests_before = scheduledjob_writes(&client).await;
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..count {
        let obj: raftcron_crds::ScheduledJob = serde_json::from_value(json!({
            "apiVersion": raftcron_crds::names::API_VERSION, "kind": raftcron_crds::names::KIND,
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
    // Watch rather than list: listing 10,000 objects in a loop would load
    // the API server more than the operator does, and slow what we measure.
    let ready = tokio::time::timeout(Duration::from_secs(600), async {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        let mut ready = std::collections::HashSet::new();
        let mut events = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
        while let Some(e) = events.next().await {
            let obj = match e {
                Ok(Event::Apply(o) | Event::InitApply(o)) => o,
                _ => continue,
            };
            let is_ready = obj.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if is_ready {
                ready.insert(obj.metadata.name.clone().unwrap_or_default());
            }
            if ready.len() == count {
                return;
            }
        }
    })
    .await
    .ok();
    let ready_after = started.elapsed();
    let requests_after = scheduledjob_writes(&client).await;
    let mut report = Report::default();
    report.add(
        format!("{count} ScheduledJobs created (API calls, 32 in flight)"),
        created.as_secs_f64(),
        "s",
    );
    // What the API server had to do for them (the bound of this figure):
    // every write is stored in etcd and sent to every watcher.
    match (requests_before, requests_after) {
        (Some(before), Some(after)) => {
            for (what, n) in &after {
                let n = n - before.get(what).copied().unwrap_or(0.0);
                if n > 0.0 {
                    report.add(
                        format!("API writes to ScheduledJobs before all were Ready: {what}"),
                        n,
                        "requests",
                    );
                }
            }
        }
        _ => report
            .notes
            .push("the API server's /metrics was not readable: no request counts".into()),
    }
    match ready {
        Some(()) => report.add(
            format!("{count} ScheduledJobs created → all Ready"),
            ready_after.as_secs_f64(),
            "s",
        ),
        None => report.notes.push(format!(
            "not all {count} became Ready within 600 s\n{}",
            operator.log_tail()
        )),
    }
    Ok(report)
}

/// Writes the API server has served for ScheduledJobs so far, by verb (and
/// subresource), from its own `apiserver_request_total`; None when its
/// `/metrics` cannot be read with these credentials.
async fn scheduledjob_writes(
    client: &kube::Client,
) -> Option<std::collections::BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ')?;
        if !labels.contains("resource=\"scheduledjobs\"") {
            continue;
        }
        let label = |k: &str| {
            labels
                .split(&format!(",{k}=\""))
                .nth(1)
                .or_else(|| labels.split(&format!("{{{k}=\"")).nth(1))
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
        };
        let verb = label("verb");
        if matches!(verb, "GET" | "LIST" | "WATCH") {
            continue;
        }
        let what = match label("subresource") {
            "" => verb.to_string(),
            sub => format!("{verb} {sub}"),
        };
        *out.entry(what).or_insert(0.0) += value.parse::<f64>().ok()?;
    }
    Some(out)
}
