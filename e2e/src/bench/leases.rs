//! Benchmarks of leases for app code (`raftcron-bench leases`): acquire and
//! renew latency through a sidecar, holder kill -9 → another replica holds
//! the key, and, in the same run, leader election on a Kubernetes Lease
//! (kube-lease-manager, as the operator uses it) failing over on a real API
//! server. Prints figures; asserts nothing.
//!
//! ```text
//!  this process ──HTTP/1.1 keep-alive──► raftcron-node sidecar ×3 ──gRPC──► 3 nodes (Raft)
//!  this process ──kube-lease-manager ×2──► API server (RAFTCRON_E2E_KUBECONFIG) Lease
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Report, percentile, sorted};
use crate::lease_check::{LocalApi, Sidecar};
use crate::{Cluster, ClusterOptions};
use raftcron_node::pb::sidecar as pb;
use raftcron_node::pb::sidecar::attach_client::AttachClient;

#[derive(Clone, Debug)]
pub struct Options {
    /// Requests per latency figure.
    pub requests: usize,
    /// Holder kill -9 trials.
    pub trials: usize,
    /// The lease TTL of the kill trials, seconds.
    pub ttl_s: u32,
    /// Kubernetes Lease failover trials (with RAFTCRON_E2E_KUBECONFIG).
    pub kube_trials: usize,
}

impl Options {
    pub fn quick() -> Self {
        Self {
            requests: 300,
            trials: 2,
            ttl_s: 2,
            kube_trials: 1,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests: 2000,
            trials: 5,
            ttl_s: 2,
            kube_trials: 3,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const T: Duration = Duration::from_secs(10);

async fn post(api: &mut LocalApi, key: &str, ttl: u32) -> anyhow::Result<(u16, Value)> {
    api.call(
        "POST",
        &format!("/v1/leases/{key}"),
        Some(&format!(r#"{{"ttlSeconds": {ttl}}}"#)),
        T,
    )
    .await
    .map_err(anyhow::Error::msg)
}

fn latency_rows(r: &mut Report, what: &str, mut v: Vec<f64>) {
    v = sorted(v);
    r.add(
        format!("{what} through a sidecar, p50 (target ≤ 2 ms)"),
        percentile(&v, 50.0),
        "ms",
    );
    r.add(
        format!("{what} through a sidecar, p99 (target ≤ 10 ms)"),
        percentile(&v, 99.0),
        "ms",
    );
    r.add(format!("{what}, max"), percentile(&v, 100.0), "ms");
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let c = Cluster::start(ClusterOptions::default()).await;
    let endpoints = c.endpoints();
    let mut sidecars: Vec<Sidecar> = (0..3)
        .map(|i| Sidecar::start(c.path(), &endpoints, "bench", &format!("web-{i}"), &[]))
        .collect();
    for s in &sidecars {
        anyhow::ensure!(
            s.serving(Duration::from_secs(10)).await,
            "sidecar {} did not start",
            s.pod
        );
    }

    // Latency: one request at a time, on one kept connection.
    let mut api = LocalApi::new(&sidecars[0].listen);
    for i in 0..50 {
        post(&mut api, &format!("warm-{i}"), 60).await?;
    }
    let (mut acquire, mut renew) = (Vec::new(), Vec::new());
    for i in 0..opts.requests {
        let t = Instant::now();
        let (code, v) = post(&mut api, &format!("key-{i}"), 60).await?;
        acquire.push(ms(t.elapsed()));
        anyhow::ensure!(code == 200, "acquire: {code} {v}");
    }
    for _ in 0..opts.requests {
        let t = Instant::now();
        let (code, v) = post(&mut api, "renewed", 60).await?;
        renew.push(ms(t.elapsed()));
        anyhow::ensure!(code == 200, "renew: {code} {v}");
    }
    latency_rows(&mut report, "lease acquire (a free key)", acquire);
    latency_rows(&mut report, "lease renew", renew);
    // The same calls straight to the leader's gRPC port: what the sidecar hop adds.
    let leader = c
        .wait_leader(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let addr = c.nodes[leader as usize - 1].grpc.clone();
    let mut direct = AttachClient::connect(format!("http://{addr}")).await?;
    let caller = pb::LeaseCaller {
        namespace: "bench".into(),
        app: "web".into(),
        pod: "direct".into(),
        token: String::new(),
    };
    let mut raw = Vec::new();
    for i in 0..opts.requests {
        let key = if i % 2 == 0 {
            format!("direct-{i}")
        } else {
            "direct".into()
        };
        let t = Instant::now();
        let r = direct
            .acquire_lease(pb::AcquireLeaseRequest {
                caller: Some(caller.clone()),
                key,
                ttl_ms: 60_000,
            })
            .await?
            .into_inner();
        raw.push(ms(t.elapsed()));
        anyhow::ensure!(r.ok, "direct acquire refused");
    }
    let raw = sorted(raw);
    report.add(
        "  for comparison: the same, gRPC straight to the leader (no sidecar), acquire and renew, p50",
        percentile(&raw, 50.0),
        "ms",
    );
    report.add("  same, p99", percentile(&raw, 99.0), "ms");
    report.notes.push(format!(
        "Latency: {} sequential requests each, from this process over one kept HTTP/1.1 connection to a sidecar, \
         relayed to the leader of 3 nodes on loopback (each grant a Raft write: fsync on a quorum).",
        opts.requests
    ));

    // Holder kill -9 right after a renewal → another replica's grant.
    let mut handovers = Vec::new();
    for trial in 0..opts.trials {
        let key = format!("failover-{trial}");
        let h = trial % 3;
        let mut holder = LocalApi::new(&sidecars[h].listen);
        let (code, v) = post(&mut holder, &key, opts.ttl_s).await?;
        anyhow::ensure!(code == 200, "holder: {code} {v}");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut granted) = mpsc::unbounded_channel();
        for s in sidecars.iter().enumerate().filter(|(i, _)| *i != h) {
            tokio::spawn(standby(
                s.1.listen.clone(),
                key.clone(),
                opts.ttl_s,
                stop.clone(),
                tx.clone(),
            ));
        }
        // The standbys settle into their long polls while the holder renews.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            post(&mut holder, &key, opts.ttl_s).await?;
        }
        sidecars[h].kill9();
        let killed = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(u64::from(opts.ttl_s) + 10),
            granted.recv(),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        match got {
            Ok(Some(at)) => handovers.push(ms(at - killed)),
            _ => report
                .notes
                .push(format!("trial {trial}: no new holder within TTL + 10 s")),
        }
        sidecars[h].restart();
        anyhow::ensure!(sidecars[h].serving(Duration::from_secs(10)).await);
    }
    let ttl_ms = f64::from(opts.ttl_s) * 1000.0;
    let hs = sorted(handovers.clone());
    report.add(
        format!(
            "holder's sidecar kill -9 → another replica holds the key, median of {} (TTL {} s; target ≤ TTL + 500 ms = {} ms)",
            hs.len(),
            opts.ttl_s,
            ttl_ms + 500.0
        ),
        percentile(&hs, 50.0),
        "ms",
    );
    report.add("  same, worst trial", percentile(&hs, 100.0), "ms");
    report.notes.push(format!(
        "Kill trials: the holder renews, then its sidecar is killed -9 at once; the standbys wait in \
         `GET ?wait=30s&token=N` and ask (POST) as soon as it returns. The floor is TTL + --max-clock-skew (50 ms). \
         Trials (ms): {:?}",
        handovers.iter().map(|h| h.round()).collect::<Vec<_>>()
    ));
    drop(sidecars);
    drop(c);

    match crate::kube::kubeconfig() {
        Ok(kc) => kube_failover(&kc, opts.kube_trials, &mut report).await?,
        Err(why) => report
            .notes
            .push(format!("Kubernetes Lease failover not measured: {why}")),
    }
    Ok(report)
}

/// A standby: asks; when refused, long-polls for a change and asks again.
/// Sends the instant of its grant.
async fn standby(
    listen: String,
    key: String,
    ttl_s: u32,
    stop: Arc<AtomicBool>,
    granted: mpsc::UnboundedSender<Instant>,
) {
    let mut api = LocalApi::new(&listen);
    let mut poll = LocalApi::new(&listen);
    while !stop.load(Ordering::Relaxed) {
        match post(&mut api, &key, ttl_s).await {
            Ok((200, _)) => {
                let _ = granted.send(Instant::now());
                return;
            }
            Ok((409, v)) => {
                let token = v["token"].as_u64().unwrap_or(0);
                let path = format!("/v1/leases/{key}?wait=30s&token={token}");
                let _ = poll.call("GET", &path, None, Duration::from_secs(35)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Leader election on a Kubernetes Lease with kube-lease-manager, client-go's
/// defaults (15 s lease, renewed every 2 s: `grace` 13 s): the holder stops
/// right after a renewal (its task aborted, nothing released, as a kill -9
/// would), and a standby polling with the same manager takes over.
async fn kube_failover(
    kubeconfig: &std::path::Path,
    trials: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
    let client = crate::kube::client(kubeconfig).await;
    let ns = crate::kube::TempNamespace::create(&client, "raftcron-bench-lease").await;
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), &ns.name);
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let name = format!("bench-{trial}");
        let manager = |id: &str| {
            LeaseManager::new(
                client.clone(),
                &name,
                &ns.name,
                LeaseParams::new(id, 15, 13),
                LeaseCreateMode::AutoCreate,
            )
        };
        let a = manager("a").await?;
        while !a.changed().await? {}
        let a_task = tokio::spawn(async move {
            loop {
                if a.changed().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let b = manager("b").await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b_task = tokio::spawn(async move {
            loop {
                match b.changed().await {
                    Ok(true) => {
                        let _ = tx.send(Instant::now());
                        return;
                    }
                    Ok(false) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        // Wait for a renewal by a (renewTime moves), then stop it at once.
        let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
        let first = renew_time(&leases.get(&name).await?);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if renew_time(&leases.get(&name).await?) != first {
                break;
            }
        }
        a_task.abort();
        let killed = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
        b_task.abort();
        match got {
            Ok(Some(at)) => failovers.push(ms(at - killed)),
            _ => report
                .notes
                .push(format!("Kubernetes trial {trial}: no takeover within 60 s")),
        }
    }
    let f = sorted(failovers.clone());
    report.add(
        format!(
            "Kubernetes Lease (kube-lease-manager, 15 s lease, renew every 2 s) holder stopped → standby leads, median of {}",
            f.len()
        ),
        percentile(&f, 50.0),
        "ms",
    );
    report.add("  same, worst trial", percentile(&f, 100.0), "ms");
    report.notes.push(format!(
        "Kubernetes: the same run, against the API server of RAFTCRON_E2E_KUBECONFIG; the holder's task is \
         aborted right after a renewal (no release). Trials (ms): {:?}",
        failovers.iter().map(|h| h.round()).collect::<Vec<_>>()
    ));
    Ok(())
}
