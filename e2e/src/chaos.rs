//! The fault harness: nodes in their own network namespaces, a seeded random
//! sequence of kill -9 / restart, minority and majority partitions, one-way
//! cuts and slow links, while schedules fire into the ledger target and a
//! writer upserts schedules. A checker then reads the ledger, the writes that
//! were acknowledged and the run records:
//!
//! - no (run id, attempt) executed twice: no fire decided twice;
//! - every instant of every schedule executed (the faults are shorter than
//!   the schedules' `startingDeadlineSeconds`, and `RunAll` catches up);
//! - every acknowledged write is listed afterwards;
//! - after healing, every node has applied the same log and no run is left
//!   claimed, running or pending.
//!
//! The same seed gives the same fault sequence (timing on a busy machine
//! still varies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftcron_node::pb::scheduler::UpsertRequest;
use raftcron_node::testkit::SplitMix64;

use crate::cluster::Host;
use crate::netlab::{NetLab, Slow};
use crate::{Cluster, ClusterOptions, Ledger, now_ms, wait_for};

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub nodes: usize,
    pub seed: u64,
    pub duration: Duration,
    /// Schedules firing every second into the ledger.
    pub schedules: usize,
    /// Inject only this fault kind (0-9, see `run`), to chase one bug.
    pub only: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub nodes: usize,
    /// (ms since start, fault) for every fault injected.
    pub faults: Vec<(i64, String)>,
    pub instants_checked: usize,
    pub ledger_records: usize,
    pub retried_runs: usize,
    pub acked_writes: usize,
    pub missing: Vec<String>,
    pub doubled: Vec<String>,
    pub lost_writes: Vec<String>,
    pub unconverged: Vec<String>,
}

impl ChaosReport {
    pub fn violations(&self) -> usize {
        self.missing.len() + self.doubled.len() + self.lost_writes.len() + self.unconverged.len()
    }

    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, f) in &self.faults {
            *kinds.entry(f.split(' ').next().unwrap_or("")).or_default() += 1;
        }
        let sample = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>();
        format!(
            "seed {} on {} nodes: {} faults {kinds:?}\n\
             {} fire instants checked, {} ledger records, {} runs retried, {} writes acknowledged\n\
             violations: {} missing {:?}, {} doubled {:?}, {} lost writes {:?}, {} unconverged {:?}",
            self.seed,
            self.nodes,
            self.faults.len(),
            self.instants_checked,
            self.ledger_records,
            self.retried_runs,
            self.acked_writes,
            self.missing.len(),
            sample(&self.missing),
            self.doubled.len(),
            sample(&self.doubled),
            self.lost_writes.len(),
            sample(&self.lost_writes),
            self.unconverged.len(),
            sample(&self.unconverged),
        )
    }
}

/// `k` distinct node ids of `1..=n`.
fn pick(rng: &mut SplitMix64, n: usize, k: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (1..=n).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.range(0, i as u64) as usize);
    }
    ids.truncate(k);
    ids.sort();
    ids
}

/// What is broken until the fault heals.
enum Fault {
    Kill(Vec<usize>),
    Partition(Vec<usize>),
    OneWay(usize, Vec<usize>),
    Slow(usize),
}

const FIRE_NS: &str = "chaos";
const WRITE_NS: &str = "chaos-writes";

pub async fn run(opts: ChaosOptions) -> Result<ChaosReport, String> {
    NetLab::available()?;
    let lab = NetLab::create(opts.nodes)?;
    let hosts = (1..=opts.nodes)
        .map(|i| Host {
            ip: lab.ip(i),
            netns: lab.ns(i),
        })
        .collect();
    let mut c = Cluster::start(ClusterOptions {
        nodes: opts.nodes as u64,
        hosts: Some(hosts),
        ..Default::default()
    })
    .await;
    let ledger = Ledger::start_on(c.path(), &lab.host_ip()).await;
    let mut report = ChaosReport {
        seed: opts.seed,
        nodes: opts.nodes,
        ..Default::default()
    };
    let url = ledger.url("/ok");
    let items = (0..opts.schedules)
        .map(|i| UpsertRequest {
            namespace: FIRE_NS.into(),
            name: format!("s{i:03}"),
            uid: format!("chaos-{i:03}"),
            generation: 1,
            spec_json: serde_json::json!({
                "schedule": "* * * * * *",
                "action": {"http": {"url": url, "timeoutSeconds": 5}},
                "startingDeadlineSeconds": 120,
                "missedRunPolicy": "RunAll",
                "retry": {"maxAttempts": 5, "initialBackoffSeconds": 1, "maxBackoffSeconds": 4},
            })
            .to_string(),
            kubernetes: false,
        })
        .collect();
    c.client()
        .upsert_batch(items)
        .await
        .map_err(|e| e.to_string())?;

    let start = (now_ms() / 1000 + 2) * 1000;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_loop(c.client(), stop.clone(), acked.clone()));

    // A seed means the same faults on every machine (splitmix64).
    let mut rng = SplitMix64::new(opts.seed);
    let minority = (opts.nodes - 1) / 2;
    let t_end = start + opts.duration.as_millis() as i64;
    tokio::time::sleep(Duration::from_millis((start - now_ms()).max(0) as u64)).await;
    while now_ms() < t_end {
        let leader = leader_of(&c).await;
        let n = opts.nodes;
        let k = rng.range(1, minority as u64) as usize;
        let mut kind = rng.range(0, 9);
        if let Some(only) = opts.only {
            kind = only;
        }
        let fault = match kind {
            0 | 1 => Fault::Kill(
                leader
                    .map(|l| vec![l])
                    .unwrap_or_else(|| pick(&mut rng, n, 1)),
            ),
            2 => Fault::Kill(pick(&mut rng, n, k)),
            3 => Fault::Kill(pick(&mut rng, n, minority + 1)), // the quorum is gone for a while
            4 => Fault::Partition(pick(&mut rng, n, k)),
            5 | 6 => {
                // The leader on the minority side.
                let l = leader.unwrap_or(1);
                let mut side = vec![l];
                side.extend(pick(&mut rng, n, minority).into_iter().filter(|i| *i != l));
                side.truncate(k);
                Fault::Partition(side)
            }
            7 => {
                // The leader's packets to every other node dropped, theirs
                // still arrive: a one-way partition.
                let l = leader.unwrap_or(1);
                Fault::OneWay(l, (1..=n).filter(|i| *i != l).collect())
            }
            8 => {
                let from = rng.range(1, n as u64) as usize;
                let to = (1..=n).filter(|i| *i != from).collect::<Vec<_>>();
                Fault::OneWay(from, vec![to[rng.range(0, to.len() as u64 - 1) as usize]])
            }
            _ => Fault::Slow(leader.unwrap_or_else(|| rng.range(1, n as u64) as usize)),
        };
        let hold = Duration::from_millis(rng.range(1_000, 6_000));
        let quorum_loss = matches!(&fault, Fault::Kill(k) if k.len() > minority);
        let hold = if quorum_loss {
            hold.min(Duration::from_secs(4))
        } else {
            hold
        };
        let desc = apply(&lab, &mut c, &fault)?;
        report.faults.push((
            now_ms() - start,
            format!("{desc} for {}ms", hold.as_millis()),
        ));
        tokio::time::sleep(hold).await;
        heal(&lab, &mut c, &fault);
        tokio::time::sleep(Duration::from_millis(rng.range(1_000, 4_000))).await;
    }
    let end = now_ms() / 1000 * 1000 - 1000;
    stop.store(true, Ordering::SeqCst);
    let _ = writer.await;

    // Settle: retries and catch-up runs finish, then firing stops.
    c.wait_leader(Duration::from_secs(20))
        .await
        .ok_or_else(|| format!("no leader after healing\n{}", c.logs()))?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    check_ledger(&ledger, opts.schedules, start, end, &mut report);
    let acked = acked.lock().unwrap().clone();
    check_writes(&c, &acked, &mut report).await;
    check_converged(&c, opts.schedules, &mut report).await;
    drop(c);
    drop(lab);
    Ok(report)
}

async fn leader_of(c: &Cluster) -> Option<usize> {
    tokio::time::timeout(Duration::from_secs(2), c.leader())
        .await
        .ok()
        .flatten()
        .map(|l| l as usize)
}

fn apply(lab: &NetLab, c: &mut Cluster, f: &Fault) -> Result<String, String> {
    let n = c.nodes.len();
    Ok(match f {
        Fault::Kill(ids) => {
            for i in ids {
                c.node(*i as u64).kill9();
            }
            format!("kill {ids:?}")
        }
        Fault::Partition(side) => {
            for a in side {
                for b in (1..=n).filter(|b| !side.contains(b)) {
                    lab.cut(*a, b)?;
                    lab.cut(b, *a)?;
                }
            }
            format!("partition {side:?}")
        }
        Fault::OneWay(from, to) => {
            for t in to {
                lab.cut(*from, *t)?;
            }
            format!("oneway {from}->{to:?}")
        }
        Fault::Slow(i) => {
            let how = if lab.netem {
                Slow::Netem {
                    delay_ms: 100,
                    loss_pct: 5,
                }
            } else {
                Slow::Tbf {
                    kbit: 64,
                    latency_ms: 200,
                }
            };
            lab.slow(*i, how)?;
            format!("slow {i} {how:?}")
        }
    })
}

fn heal(lab: &NetLab, c: &mut Cluster, f: &Fault) {
    lab.heal_all();
    if let Fault::Kill(ids) = f {
        for i in ids {
            c.node(*i as u64).start(false);
        }
    }
}

/// Upserts suspended schedules one after another; records each one the
/// cluster acknowledged. Failed or timed-out writes have an unknown outcome
/// and are not checked.
async fn write_loop(
    client: raftcron_node::client::Client,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let client = client.with_deadline(Duration::from_secs(3));
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let name = format!("w{n:06}");
        let item = UpsertRequest {
            namespace: WRITE_NS.into(),
            name: name.clone(),
            uid: format!("write-{n}"),
            generation: 1,
            spec_json: serde_json::json!({
                "schedule": "0 0 1 1 *", "suspend": true,
                "action": {"http": {"url": "http://example.invalid/"}},
            })
            .to_string(),
            kubernetes: false,
        };
        match client.upsert_batch(vec![item]).await {
            Ok(_) => acked.lock().unwrap().push(name),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn check_ledger(ledger: &Ledger, schedules: usize, start: i64, end: i64, r: &mut ChaosReport) {
    let records = ledger.records();
    r.ledger_records = records.len();
    let mut by_run: HashMap<String, Vec<u32>> = HashMap::new();
    for rec in &records {
        if let (Some(id), Some(a)) = (&rec.run_id, rec.attempt) {
            by_run.entry(id.clone()).or_default().push(a);
        }
    }
    for i in 0..schedules {
        let uid = format!("chaos-{i:03}");
        for instant in (start..=end).step_by(1000) {
            r.instants_checked += 1;
            if !by_run.contains_key(&raftcron_crds::names::run_id(&uid, instant)) {
                r.missing.push(format!("{uid}@{instant}"));
            }
        }
    }
    for (id, attempts) in &by_run {
        let mut sorted = attempts.clone();
        sorted.sort();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            r.doubled.push(format!("{id}: attempts {sorted:?}"));
        }
        if sorted.iter().any(|a| *a > 1) {
            r.retried_runs += 1;
        }
    }
}

async fn check_writes(c: &Cluster, acked: &[String], r: &mut ChaosReport) {
    r.acked_writes = acked.len();
    let listed: HashSet<String> = match c.client().list(WRITE_NS).await {
        Ok(l) => l.schedules.into_iter().map(|s| s.name).collect(),
        Err(e) => {
            r.lost_writes.push(format!("cannot list: {e}"));
            return;
        }
    };
    r.lost_writes
        .extend(acked.iter().filter(|n| !listed.contains(*n)).cloned());
}

/// Stops firing, then waits for every node to apply the same log and for no
/// run to be left active.
async fn check_converged(c: &Cluster, schedules: usize, r: &mut ChaosReport) {
    let client = c.client();
    for i in 0..schedules {
        if let Err(e) = client.set_suspend(FIRE_NS, &format!("s{i:03}"), true).await {
            r.unconverged.push(format!("suspend s{i:03}: {e}"));
        }
    }
    let same = wait_for(Duration::from_secs(30), || async {
        let mut applied = HashSet::new();
        for n in &c.nodes {
            applied.insert(c.status(n.id).await?.applied_index);
        }
        (applied.len() == 1).then_some(())
    })
    .await;
    if same.is_none() {
        let mut v = Vec::new();
        for n in &c.nodes {
            v.push((n.id, c.status(n.id).await.map(|s| s.applied_index)));
        }
        r.unconverged.push(format!("applied index differs: {v:?}"));
    }
    let settled = wait_for(Duration::from_secs(30), || async {
        for i in 0..schedules {
            let runs = client.runs(FIRE_NS, &format!("s{i:03}")).await.ok()?;
            let active = ["Claimed", "Running", "RetryPending"];
            if runs
                .runs
                .iter()
                .any(|run| active.contains(&run.result.as_str()))
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    if settled.is_none() {
        r.unconverged
            .push("runs still active 30 s after firing stopped".into());
    }
}
