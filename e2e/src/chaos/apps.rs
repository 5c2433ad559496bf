//! App replicas in the fault lab, and the checker over their ledgers.
//!
//! ```text
//!  app host j (netns rcS-a<j>, 10.S.(100+j).2)          node hosts
//!  ┌───────────────────────────────────────────┐       ┌──────────┐
//!  │ target :7180 ◄─127.0.0.1─ sidecar (mTLS) ─┼──────►│ leader   │
//!  │   └► app-j/ledger.jsonl                   │ cuts  └──────────┘
//!  └───────────────────────────────────────────┘
//! ```
//!
//! Each replica is a ledger target (the app: one JSON line per request) and
//! a `raftcron-node sidecar` in a network namespace of its own, so links
//! between sidecars and nodes can be cut like links between nodes. Faults
//! kill the sidecar only: the target holds the ledger (it buffers up to
//! 100 ms of lines), and what matters is what it received.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raftcron_node::pb::scheduler::UpsertRequest;

use super::ChaosReport;
use super::pki::Pki;
use crate::netlab::NetLab;
use crate::process::ChildGuard;
use crate::{Cluster, LedgerRecord, bin, http_get, wait_for};

/// The namespace and app the replicas attach for (their certificate names
/// only this namespace).
pub const APP_NS: &str = "chaos-app";
pub const APP: &str = "web";
const APP_PORT: u16 = 7180;
/// How long after an outage ends the cluster and the sidecars get to
/// recover before instants count again (an election, a restarted node's
/// start, a sidecar's re-attach backoff of at most 2 s plus jitter).
pub const GRACE_MS: i64 = 5_000;
/// `startingDeadlineSeconds` of the short-deadline app schedules.
pub const SHORT_DEADLINE_S: i64 = 10;
/// `startingDeadlineSeconds` of the others (as for the http schedules).
pub const LONG_DEADLINE_S: i64 = 120;

/// One replica: its app (a ledger target) and its sidecar.
pub struct Replica {
    pub pod: String,
    /// Its host in the lab ([`NetLab::app_host`]).
    pub host: usize,
    ledger: PathBuf,
    sidecar_log: PathBuf,
    sidecar_cmd: Vec<String>,
    _target: ChildGuard,
    sidecar: ChildGuard,
}

impl Replica {
    /// Starts replica `j` (1-based) on its app host; its sidecar attaches
    /// to the nodes at `cluster` with the sidecar certificate of `pki`.
    pub async fn start(
        lab: &NetLab,
        dir: &Path,
        j: usize,
        cluster: &[String],
        pki: &Pki,
    ) -> Result<Self, String> {
        let host = NetLab::app_host(j);
        let pod = format!("{APP}-{j}");
        let home = dir.join(&pod);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let ns = lab.ns(host);
        let netns = |args: &[&str]| {
            let mut v = vec!["ip".to_string(), "netns".into(), "exec".into(), ns.clone()];
            v.push(bin("raftcron-node").display().to_string());
            v.extend(args.iter().map(|a| a.to_string()));
            v
        };
        let ledger = home.join("ledger.jsonl");
        // On every address of its host: the sidecar calls it on loopback,
        // the harness sees it come up from outside.
        let target_cmd = netns(&[
            "target",
            "--listen",
            &format!("0.0.0.0:{APP_PORT}"),
            "--ledger",
            &ledger.display().to_string(),
        ]);
        let mut target = ChildGuard::default();
        target.spawn_logged(
            &mut command(&target_cmd),
            &home.join("target.log"),
            "target",
        );
        let addr = format!("{}:{APP_PORT}", lab.ip(host));
        wait_for(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.ok()
        })
        .await
        .ok_or_else(|| format!("the app of {pod} did not come up on {addr}"))?;
        let (cert, key) = &pki.sidecar;
        let sidecar_cmd = netns(&[
            "sidecar",
            "--cluster",
            &cluster.join(","),
            "--namespace",
            APP_NS,
            "--app",
            APP,
            "--pod",
            &pod,
            "--app-url",
            &format!("http://127.0.0.1:{APP_PORT}"),
            "--listen",
            "127.0.0.1:7090",
            "--tls-ca",
            &pki.ca.display().to_string(),
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ]);
        let mut r = Self {
            pod,
            host,
            ledger,
            sidecar_log: home.join("sidecar.log"),
            sidecar_cmd,
            _target: target,
            sidecar: ChildGuard::default(),
        };
        r.start_sidecar();
        Ok(r)
    }

    pub fn start_sidecar(&mut self) {
        if !self.sidecar.is_started() {
            let mut cmd = command(&self.sidecar_cmd);
            cmd.env(
                "RAFTCRON_LOG",
                std::env::var("RAFTCRON_LOG").unwrap_or_else(|_| "info".into()),
            );
            self.sidecar
                .spawn_logged(&mut cmd, &self.sidecar_log, "sidecar");
        }
    }

    /// SIGKILL of the sidecar (`ip netns exec` execs it in place).
    pub fn kill_sidecar(&mut self) {
        self.sidecar.kill9();
    }

    /// How many times its sidecar has logged its start-up.
    pub fn starts(&self) -> usize {
        std::fs::read_to_string(&self.sidecar_log)
            .unwrap_or_default()
            .matches("sidecar started")
            .count()
    }

    pub fn records(&self) -> Vec<LedgerRecord> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.sidecar_log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// Replicas attached to the current leader (its
/// `raftcron_node_attached_replicas`).
pub async fn attached(c: &Cluster) -> Option<usize> {
    let leader = tokio::time::timeout(Duration::from_secs(2), c.leader())
        .await
        .ok()??;
    let addr = &c.nodes[(leader - 1) as usize].http;
    let (_, body) = tokio::time::timeout(Duration::from_secs(2), http_get(addr, "/metrics"))
        .await
        .ok()?
        .ok()?;
    // `raftcron_node_attached_replicas{node="1"} 3`
    body.lines()
        .filter(|l| l.starts_with("raftcron_node_attached_replicas"))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as usize)
}

/// One `app` schedule of the run.
pub struct AppSchedule {
    pub name: String,
    pub uid: String,
    pub deadline_s: i64,
}

/// `n` per-second app schedules: every third has the short deadline, every
/// second calls a slow path (400 ms, so kills and cuts catch attempts in
/// flight) and places round-robin; all retry and catch up (`RunAll`).
pub fn schedules(n: usize) -> Vec<AppSchedule> {
    (0..n)
        .map(|i| AppSchedule {
            name: format!("a{i:03}"),
            uid: format!("chaos-app-{i:03}"),
            deadline_s: if i % 3 == 2 {
                SHORT_DEADLINE_S
            } else {
                LONG_DEADLINE_S
            },
        })
        .collect()
}

pub fn upserts(schedules: &[AppSchedule]) -> Vec<UpsertRequest> {
    schedules
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (path, placement) = if i % 2 == 1 {
                ("/slow?ms=400", "RoundRobin")
            } else {
                ("/ok", "LeastActive")
            };
            UpsertRequest {
                namespace: APP_NS.into(),
                name: s.name.clone(),
                uid: s.uid.clone(),
                generation: 1,
                spec_json: serde_json::json!({
                    "schedule": "* * * * * *",
                    "timeoutSeconds": 5,
                    "action": {"app": {"name": APP, "path": path, "placement": placement}},
                    "startingDeadlineSeconds": s.deadline_s,
                    "missedRunPolicy": "RunAll",
                    "retry": {"maxAttempts": 5, "initialBackoffSeconds": 1, "maxBackoffSeconds": 4},
                })
                .to_string(),
                kubernetes: false,
            }
        })
        .collect()
}

/// One request an app received: the replica's pod, and when (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub pod: String,
    pub at_ms: f64,
}

/// (run id, attempt) → every delivery of it, over every replica's ledger.
pub type Deliveries = HashMap<(String, u32), Vec<Delivery>>;

pub fn deliveries(replicas: &[Replica]) -> Deliveries {
    let mut m = Deliveries::new();
    for r in replicas {
        for rec in r.records() {
            if let (Some(id), Some(a)) = (rec.run_id, rec.attempt) {
                m.entry((id, a)).or_default().push(Delivery {
                    pod: r.pod.clone(),
                    at_ms: rec.received_ms,
                });
            }
        }
    }
    m
}

/// Whether an instant at `t` with a starting deadline of `deadline_ms` may
/// go undelivered: when every moment of `[t, t + deadline]` lies in an
/// outage or within [`GRACE_MS`] after one. An outage (`outages`, merged
/// or not) is a time without a majority of nodes or without a replica.
pub fn excused(t: i64, deadline_ms: i64, outages: &[(i64, i64)]) -> bool {
    let mut spans: Vec<(i64, i64)> = outages.iter().map(|(a, h)| (*a, h + GRACE_MS)).collect();
    spans.sort();
    let (mut covered_to, end) = (t, t + deadline_ms);
    for (a, b) in spans {
        if a > covered_to {
            break;
        }
        covered_to = covered_to.max(b);
        if covered_to >= end {
            return true;
        }
    }
    false
}

/// The ledger checks of the app schedules:
/// - no (run id, attempt) delivered twice, at one replica or at two;
/// - every instant in `start..=end` delivered at least once (any attempt, any
///   replica) unless [`excused`].
pub fn check_ledgers(
    replicas: &[Replica],
    schedules: &[AppSchedule],
    start: i64,
    end: i64,
    outages: &[(i64, i64)],
    r: &mut ChaosReport,
) {
    check_deliveries(&deliveries(replicas), schedules, start, end, outages, r);
}

/// [`check_ledgers`] over the deliveries of every replica.
fn check_deliveries(
    d: &Deliveries,
    schedules: &[AppSchedule],
    start: i64,
    end: i64,
    outages: &[(i64, i64)],
    r: &mut ChaosReport,
) {
    r.app_deliveries = d.values().map(Vec::len).sum();
    for got in d.values() {
        for g in got {
            *r.app_per_pod.entry(g.pod.clone()).or_default() += 1;
        }
    }
    let mut by_run: HashMap<&str, BTreeMap<u32, &Vec<Delivery>>> = HashMap::new();
    for ((id, a), got) in d {
        by_run.entry(id).or_default().insert(*a, got);
        if got.len() > 1 {
            let pods: Vec<&str> = got.iter().map(|g| g.pod.as_str()).collect();
            r.doubled
                .push(format!("{id} attempt {a}: delivered to {pods:?}"));
        }
    }
    let mut lateness = Vec::new();
    for s in schedules {
        for instant in (start..=end).step_by(1000) {
            r.app_instants_checked += 1;
            let id = raftcron_crds::names::run_id(&s.uid, instant);
            if let Some(attempts) = by_run.get(id.as_str()) {
                let first = attempts
                    .values()
                    .flat_map(|got| got.iter().map(|g| g.at_ms))
                    .fold(f64::INFINITY, f64::min);
                lateness.push((first as i64 - instant, id));
                continue;
            }
            if excused(instant, s.deadline_s * 1000, outages) {
                r.app_excused += 1;
            } else {
                r.missing.push(format!("{}@{instant} (app)", s.uid));
            }
        }
    }
    lateness.sort();
    let at = |q: f64| lateness.get(((lateness.len() as f64 - 1.0) * q) as usize);
    r.app_lateness_ms = [at(0.5), at(0.99), lateness.last()].map(|l| l.map_or(0, |(ms, _)| *ms));
    r.app_latest = lateness
        .last()
        .map(|(_, id)| id.clone())
        .unwrap_or_default();
    for attempts in by_run.values() {
        if attempts.len() > 1 {
            r.app_retried += 1;
            let pods: Vec<&str> = attempts
                .values()
                .flat_map(|got| got.iter().map(|g| g.pod.as_str()))
                .collect();
            if pods.windows(2).any(|w| w[0] != w[1]) {
                r.app_moved += 1;
            }
        }
    }
}

/// After settling: every Succeeded run names a pod whose app received its
/// latest attempt (a success no app saw, or credited to the wrong replica,
/// is a violation).
pub async fn check_runs(
    c: &Cluster,
    replicas: &[Replica],
    schedules: &[AppSchedule],
    r: &mut ChaosReport,
) {
    let d = deliveries(replicas);
    let client = c.client();
    for s in schedules {
        let runs = match client.runs(APP_NS, &s.name).await {
            Ok(runs) => runs.runs,
            Err(e) => {
                r.unconverged.push(format!("runs {APP_NS}/{}: {e}", s.name));
                continue;
            }
        };
        // Why instants were not delivered (for the report; the ledger
        // check already counted them).
        for run in &runs {
            if ["Missed", "Lost", "Failed", "TimedOut"].contains(&run.result.as_str()) {
                *r.app_unsucceeded
                    .entry(format!("{}: {}", run.result, run.message))
                    .or_default() += 1;
            }
        }
        for run in runs.iter().filter(|run| run.result == "Succeeded") {
            let got: Option<Vec<&str>> = d
                .get(&(run.run_id.clone(), run.attempt))
                .map(|got| got.iter().map(|g| g.pod.as_str()).collect());
            if !got
                .as_ref()
                .is_some_and(|pods| pods.contains(&run.pod.as_str()))
            {
                r.misplaced.push(format!(
                    "{} attempt {}: Succeeded at pod {:?}, delivered to {:?}",
                    run.run_id, run.attempt, run.pod, got
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_excused_only_when_its_whole_deadline_lies_in_outages_and_grace() {
        // An outage 10 s..14 s: covered (with grace) to 19 s.
        let o = [(10_000, 14_000)];
        assert!(excused(10_000, 9_000, &o));
        assert!(
            !excused(10_000, 10_000, &o),
            "one moment after the grace is left"
        );
        assert!(!excused(9_000, 5_000, &o), "before the outage began");
        // Two outages whose grace spans touch cover one long deadline.
        let o = [(20_000, 24_000), (10_000, 14_000), (19_000, 20_000)];
        assert!(excused(10_000, 19_000, &o));
        assert!(!excused(10_000, 20_000, &o));
        assert!(!excused(10_000, 1_000, &[]));
    }

    #[test]
    fn an_attempt_at_two_replicas_and_an_unexcused_miss_are_violations() {
        let s = schedules(3); // a002 has the short deadline
        let (start, end) = (1_000_000, 1_010_000);
        let at = |pod: &str, at_ms: i64| Delivery {
            pod: pod.into(),
            at_ms: at_ms as f64,
        };
        let mut d = Deliveries::new();
        for sched in &s {
            for t in (start..=end).step_by(1000) {
                d.insert(
                    (raftcron_crds::names::run_id(&sched.uid, t), 1),
                    vec![at("web-1", t + 5)],
                );
            }
        }
        let id = |i: usize, t: i64| raftcron_crds::names::run_id(&s[i].uid, t);
        // Attempt 1 at two replicas; attempt 2 elsewhere is a retry, not a double.
        d.insert(
            (id(0, start), 1),
            vec![at("web-1", start + 5), at("web-2", start + 6)],
        );
        d.insert((id(0, start + 1000), 2), vec![at("web-3", start + 4000)]);
        // Two misses of the short-deadline schedule: one inside an outage
        // long enough to cover its deadline, one outside.
        d.remove(&(id(2, start + 2000), 1));
        d.remove(&(id(2, start + 9000), 1));
        let outages = [(start + 1500, start + 7500)];
        let mut r = ChaosReport::default();
        check_deliveries(&d, &s, start, end, &outages, &mut r);
        assert_eq!(r.app_instants_checked, 33);
        assert_eq!(r.doubled.len(), 1, "{:?}", r.doubled);
        assert_eq!(r.app_excused, 1);
        assert_eq!(
            r.missing,
            vec![format!("{}@{} (app)", s[2].uid, start + 9000)]
        );
        assert_eq!((r.app_retried, r.app_moved), (1, 1));
        assert_eq!(r.app_lateness_ms, [5, 5, 5], "the first delivery counts");
    }
}
