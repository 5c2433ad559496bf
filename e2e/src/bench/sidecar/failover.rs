//! (b) A replica's death mid-attempt, and the leader's: real sidecar
//! processes, killed with SIGKILL (or frozen with SIGSTOP), the arrival of
//! the retry (or of the next instant) read from the apps' ledgers.

use std::collections::HashMap;
use std::time::Duration;

use raftcron_crds::names::run_id;
use serde_json::{Value, json};

use super::{
    APP, CAPACITY, Figure, NS, Replica, all_attached, fig, job, sleep_until, start_replicas, uid,
};
use crate::bench::{percentile, sorted};
use crate::{Cluster, ClusterOptions, http_get, now_ms, wait_for};

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
    /// … → a survivor reports itself leader; → all 3 sidecars attached to it.
    pub leader_elected_ms: Vec<f64>,
    pub leader_reattached_ms: Vec<f64>,
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
    let leader = leader_trials(&mut c, &mut replicas, trials).await?;
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
        leader_app_ms: sorted(leader.app),
        leader_http_ms: sorted(leader.http),
        leader_elected_ms: sorted(leader.elected),
        leader_reattached_ms: sorted(leader.reattached),
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
        respawn(c, replicas, &format!("{name} trial {trial}")).await?;
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
/// Per trial, ms after the instant (the kill is 20 ms before it).
#[derive(Default)]
struct LeaderTrials {
    app: Vec<f64>,
    http: Vec<f64>,
    /// A surviving node reports itself leader (polled every 20 ms).
    elected: Vec<f64>,
    /// The last of the 3 sidecars reports itself attached in the new term.
    reattached: Vec<f64>,
}

/// The term a sidecar's /readyz reports it is attached in, if attached.
async fn attached_term(r: &Replica) -> Option<u64> {
    let (code, body) = http_get(&r.listen, "/readyz").await.ok()?;
    if code != 200 {
        return None;
    }
    body.split("(term ").nth(1)?.split(')').next()?.parse().ok()
}

async fn leader_trials(
    c: &mut Cluster,
    replicas: &mut [Replica],
    trials: usize,
) -> anyhow::Result<LeaderTrials> {
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
    let mut out = LeaderTrials::default();
    for trial in 0..trials {
        tokio::time::sleep(Duration::from_secs(3)).await;
        respawn(c, replicas, &format!("leader trial {trial}")).await?;
        let leader = c
            .wait_leader(Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let old_term = c.status(leader).await.map_or(0, |s| s.term);
        let instant = (now_ms() / 1000 + 2) * 1000;
        sleep_until(instant - 20).await;
        c.node(leader).kill9();
        let (want_app, want_http) = (run_id(&app_uid, instant), run_id(&http_uid, instant));
        let shared: &[Replica] = replicas;
        let cluster: &Cluster = c;
        let elected = async {
            cluster
                .wait_new_leader(leader, Duration::from_secs(10))
                .await?;
            Some(now_ms() as f64)
        };
        let reattached = async {
            wait_for(Duration::from_secs(10), || async {
                for r in shared {
                    if attached_term(r).await.is_none_or(|t| t <= old_term) {
                        return None;
                    }
                }
                Some(now_ms() as f64)
            })
            .await
        };
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
        let (a, h, e, r) = tokio::join!(arrived(want_app), arrived(want_http), elected, reattached);
        if a.is_none() {
            eprintln!("leader trial {trial}: the app fire did not arrive within 10 s");
        }
        for (v, into) in [
            (a, &mut out.app),
            (h, &mut out.http),
            (e, &mut out.elected),
            (r, &mut out.reattached),
        ] {
            if let Some(at) = v {
                into.push(at - instant as f64);
            }
        }
        c.node(leader).start(false);
    }
    Ok(out)
}

pub fn failover_figures(f: &Failover) -> Vec<Figure> {
    let max = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
    let mut out = Vec::new();
    let rows: [(&str, &Vec<f64>, &'static str, f64); 7] = [
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
        (
            "leader kill -9 → a survivor leads (status polled every 20 ms)",
            &f.leader_elected_ms,
            "",
            f64::NAN,
        ),
        (
            "leader kill -9 → all 3 sidecars attached to the new leader",
            &f.leader_reattached_ms,
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

/// Starts the sidecars a trial killed again and waits until every replica
/// is attached; `what` names the trial in the error.
async fn respawn(c: &Cluster, replicas: &mut [Replica], what: &str) -> anyhow::Result<()> {
    let endpoints = c.endpoints();
    for r in replicas.iter_mut() {
        if !r.sidecar.is_started() {
            r.spawn(&endpoints);
        }
    }
    if !all_attached(replicas, Duration::from_secs(20)).await {
        anyhow::bail!("{what}: sidecars did not re-attach\n{}", c.logs());
    }
    Ok(())
}
