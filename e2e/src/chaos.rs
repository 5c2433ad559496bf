//! The fault harness: nodes in their own network namespaces, a seeded random
//! sequence of kill -9 / restart, minority and majority partitions, one-way
//! cuts and slow links, while schedules fire into the ledger target and a
//! writer upserts schedules. With app replicas ([`apps`]: a ledger target and
//! a sidecar each, on hosts of their own, the cluster on mutual TLS), `app`
//! schedules fire into them too, and the faults also kill sidecars, cut them
//! from nodes (both ways or one way) and take every replica but one away.
//! A checker then reads the ledgers, the writes that were acknowledged and
//! the run records:
//!
//! - no (run id, attempt) executed twice: no fire decided twice (for `app`
//!   schedules, counted across every replica's ledger);
//! - every instant of every http schedule executed (the faults are shorter
//!   than the schedules' `startingDeadlineSeconds`, and `RunAll` catches
//!   up); every instant of every app schedule delivered to some replica,
//!   unless its whole starting deadline fell in outages (no majority of
//!   nodes, or no replica) and the [`apps::GRACE_MS`] after them;
//! - every acknowledged write is listed afterwards;
//! - after healing, every node has applied the same log, no run is left
//!   claimed, running or pending, and every Succeeded app run names the
//!   replica that received its attempt.
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
use crate::{ClientTlsFiles, Cluster, ClusterOptions, Ledger, now_ms, wait_for};

pub mod apps;
mod pki;

use apps::Replica;

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub nodes: usize,
    pub seed: u64,
    pub duration: Duration,
    /// Schedules firing every second into the ledger.
    pub schedules: usize,
    /// App replicas (each a ledger target and a sidecar); 0: none, and no
    /// TLS, as before the sidecar scheduler.
    pub replicas: usize,
    /// `app` schedules firing every second into the replicas.
    pub app_schedules: usize,
    /// Longest a fault holds (at least 1 s; quorum losses at most 4 s).
    pub max_hold: Duration,
    /// Inject only this fault kind (0-9, with replicas 0-16, see `run`), to
    /// chase one bug.
    pub only: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub nodes: usize,
    /// The first instant checked (ms since the epoch): "start" below.
    pub start_ms: i64,
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
    /// App instants checked, and those excused (see [`apps::excused`]).
    pub app_instants_checked: usize,
    pub app_excused: usize,
    /// Requests the replicas' apps received, in all and by pod.
    pub app_deliveries: usize,
    pub app_per_pod: BTreeMap<String, usize>,
    /// App runs with more than one attempt delivered, and those whose
    /// attempts went to more than one replica.
    pub app_retried: usize,
    pub app_moved: usize,
    /// Instant → first delivery of app instants: p50, p99, max (ms), and
    /// the run delivered latest.
    pub app_lateness_ms: [i64; 3],
    pub app_latest: String,
    /// App runs that ended other than Succeeded, by result and message.
    pub app_unsucceeded: BTreeMap<String, usize>,
    /// Every restart after a kill: (what, ms from spawn until up, came up
    /// within 60 s).
    pub restarts: Vec<(String, i64, bool)>,
    /// Outages (ms since start, ms): no majority of nodes, or no replica.
    pub outages: Vec<(i64, i64)>,
    /// Succeeded app runs whose pod did not receive the attempt.
    pub misplaced: Vec<String>,
}

impl ChaosReport {
    pub fn violations(&self) -> usize {
        self.missing.len()
            + self.doubled.len()
            + self.lost_writes.len()
            + self.unconverged.len()
            + self.misplaced.len()
    }

    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, f) in &self.faults {
            *kinds.entry(f.split(' ').next().unwrap_or("")).or_default() += 1;
        }
        let sample = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>();
        // Missing instants as runs of consecutive seconds: `uid@first..last (n)`.
        let mut spans: Vec<(String, i64, i64)> = Vec::new();
        for m in &self.missing {
            let Some((uid, rest)) = m.split_once('@') else {
                continue;
            };
            let t: i64 = rest
                .split(' ')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            match spans.last_mut() {
                Some((u, _, last)) if u == uid && *last + 1000 == t => *last = t,
                _ => spans.push((uid.to_string(), t, t)),
            }
        }
        let missing_spans: Vec<String> = spans
            .iter()
            .map(|(u, a, b)| {
                let (from, to) = ((a - self.start_ms) / 1000, (b - self.start_ms) / 1000);
                format!("{u}@+{from}s..+{to}s ({})", to - from + 1)
            })
            .collect();
        let apps = if self.app_instants_checked > 0 {
            format!(
                "\napp: {} instants checked ({} excused by {} outages), {} deliveries {:?}, \
                 first delivery late by p50 {} / p99 {} / max {} ms ({}), \
                 {} runs retried ({} on another replica), {} misplaced {:?}, \
                 runs not Succeeded {:?}",
                self.app_instants_checked,
                self.app_excused,
                self.outages.len(),
                self.app_deliveries,
                self.app_per_pod,
                self.app_lateness_ms[0],
                self.app_lateness_ms[1],
                self.app_lateness_ms[2],
                self.app_latest,
                self.app_retried,
                self.app_moved,
                self.misplaced.len(),
                sample(&self.misplaced),
                self.app_unsucceeded,
            )
        } else {
            String::new()
        };
        let slow: Vec<String> = self
            .restarts
            .iter()
            .filter(|(_, ms, ok)| *ms > 5_000 || !ok)
            .map(|(what, ms, ok)| format!("{what} {ms} ms{}", if *ok { "" } else { " (not up)" }))
            .collect();
        let restarts = format!(
            "\nrestarts: {}, longest {} ms, over 5 s: {slow:?}",
            self.restarts.len(),
            self.restarts.iter().map(|r| r.1).max().unwrap_or(0)
        );
        format!(
            "seed {} on {} nodes: {} faults {kinds:?}\n\
             {} fire instants checked, {} ledger records, {} runs retried, {} writes acknowledged\n\
             violations: {} missing {:?}, {} doubled {:?}, {} lost writes {:?}, {} unconverged {:?}{apps}{restarts}",
            self.seed,
            self.nodes,
            self.faults.len(),
            self.instants_checked,
            self.ledger_records,
            self.retried_runs,
            self.acked_writes,
            self.missing.len(),
            sample(&missing_spans),
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
    /// kill -9 of these replicas' sidecars (1-based), restarted at heal.
    KillSidecars(Vec<usize>),
    /// Packets between these replicas and these nodes dropped: from the
    /// replicas to the nodes (`up`), from the nodes to the replicas (`down`).
    Cut {
        replicas: Vec<usize>,
        nodes: Vec<usize>,
        up: bool,
        down: bool,
    },
}

impl Fault {
    /// Replicas this fault leaves unable to take attempts.
    fn replicas_out(&self) -> usize {
        match self {
            // Cut from the leader only, a replica still reaches a follower,
            // which sends it to the leader it cannot reach: out all the same.
            Fault::KillSidecars(r) | Fault::Cut { replicas: r, .. } => r.len(),
            _ => 0,
        }
    }
}

const FIRE_NS: &str = "chaos";
const WRITE_NS: &str = "chaos-writes";

/// Fault kinds: 0-9 on nodes (see [`ChaosOptions::only`]), 10-16 on replicas.
const NODE_KINDS: u64 = 9;
const ALL_KINDS: u64 = 16;

pub async fn run(opts: ChaosOptions) -> Result<ChaosReport, String> {
    NetLab::available()?;
    let lab = NetLab::create_with(opts.nodes, opts.replicas)?;
    let hosts: Vec<Host> = (1..=opts.nodes)
        .map(|i| Host {
            ip: lab.ip(i),
            netns: lab.ns(i),
        })
        .collect();
    // Sidecars attach from other hosts: the cluster needs TLS for that.
    let pki_dir = tempfile::Builder::new()
        .prefix("raftcron-chaos-pki-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let pki = if opts.replicas > 0 {
        let ips: Vec<String> = hosts.iter().map(|h| h.ip.clone()).collect();
        Some(pki::make(pki_dir.path(), &ips, apps::APP_NS)?)
    } else {
        None
    };
    let (extra_args, client_tls) = match &pki {
        Some(p) => (
            vec![
                "--tls-cert".to_string(),
                p.node.0.display().to_string(),
                "--tls-key".into(),
                p.node.1.display().to_string(),
                "--tls-ca".into(),
                p.ca.display().to_string(),
            ],
            Some(ClientTlsFiles {
                ca: p.ca.clone(),
                cert: Some(p.client.0.clone()),
                key: Some(p.client.1.clone()),
            }),
        ),
        None => (Vec::new(), None),
    };
    let mut c = Cluster::start(ClusterOptions {
        nodes: opts.nodes as u64,
        hosts: Some(hosts),
        extra_args,
        client_tls,
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

    let mut replicas: Vec<Replica> = Vec::new();
    let app_schedules = match &pki {
        Some(_) => apps::schedules(opts.app_schedules),
        None => Vec::new(),
    };
    if let Some(pki) = &pki {
        for j in 1..=opts.replicas {
            replicas.push(Replica::start(&lab, c.path(), j, &c.endpoints(), pki).await?);
        }
        let all = wait_for(Duration::from_secs(30), || async {
            (apps::attached(&c).await? == opts.replicas).then_some(())
        })
        .await;
        if all.is_none() {
            let logs: Vec<String> = replicas
                .iter()
                .map(|r| format!("--- sidecar {} ---\n{}", r.pod, r.log_tail(20)))
                .collect();
            return Err(format!(
                "the sidecars did not attach\n{}\n{}",
                logs.join("\n"),
                c.logs()
            ));
        }
        c.client()
            .upsert_batch(apps::upserts(&app_schedules))
            .await
            .map_err(|e| e.to_string())?;
    }

    let start = (now_ms() / 1000 + 2) * 1000;
    report.start_ms = start;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_loop(c.client(), stop.clone(), acked.clone()));

    // A seed means the same faults on every machine (splitmix64).
    let mut rng = SplitMix64::new(opts.seed);
    let minority = (opts.nodes - 1) / 2;
    let t_end = start + opts.duration.as_millis() as i64;
    // Absolute outage spans, for the app checker.
    let mut outages: Vec<(i64, i64)> = Vec::new();
    tokio::time::sleep(Duration::from_millis((start - now_ms()).max(0) as u64)).await;
    while now_ms() < t_end {
        let leader = leader_of(&c).await;
        let n = opts.nodes;
        let k = rng.range(1, minority as u64) as usize;
        let kinds = if replicas.is_empty() {
            NODE_KINDS
        } else {
            ALL_KINDS
        };
        let mut kind = rng.range(0, kinds);
        if let Some(only) = opts.only {
            kind = only;
        }
        let rn = replicas.len();
        let all_nodes: Vec<usize> = (1..=n).collect();
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
            9 => Fault::Slow(leader.unwrap_or_else(|| rng.range(1, n as u64) as usize)),
            10 => Fault::KillSidecars(pick(&mut rng, rn, 1)),
            // A replica outage: every sidecar but one killed.
            11 => Fault::KillSidecars(pick(&mut rng, rn, rn - 1)),
            // One replica cut from the leader, both ways.
            12 => Fault::Cut {
                replicas: pick(&mut rng, rn, 1),
                nodes: vec![leader.unwrap_or(1)],
                up: true,
                down: true,
            },
            // One way: the replica's packets to the leader dropped, or the
            // leader's to the replica.
            13 | 14 => Fault::Cut {
                replicas: pick(&mut rng, rn, 1),
                nodes: vec![leader.unwrap_or(1)],
                up: kind == 13,
                down: kind == 14,
            },
            // A replica outage on the network: every replica but one cut
            // from every node.
            15 => Fault::Cut {
                replicas: pick(&mut rng, rn, rn - 1),
                nodes: all_nodes,
                up: true,
                down: true,
            },
            // Every sidecar killed: attempts wait for a replica until their
            // starting deadline (an outage for the checker).
            _ => Fault::KillSidecars((1..=rn).collect()),
        };
        let max_hold = opts.max_hold.as_millis().max(1_000) as u64;
        let hold = Duration::from_millis(rng.range(1_000, max_hold));
        let quorum_loss = matches!(&fault, Fault::Kill(k) if k.len() > minority);
        let hold = if quorum_loss {
            hold.min(Duration::from_secs(4))
        } else {
            hold
        };
        let no_replica = rn > 0 && fault.replicas_out() >= rn;
        let applied_at = now_ms();
        let desc = apply(&lab, &mut c, &mut replicas, &fault)?;
        let desc = format!("{desc} for {}ms", hold.as_millis());
        // As it happens, so a run that hangs shows where.
        eprintln!("chaos +{:>6} ms {desc}", applied_at - start);
        report.faults.push((applied_at - start, desc));
        tokio::time::sleep(hold).await;
        let healed_at = now_ms();
        let mut up = heal(&lab, &mut c, &mut replicas, &fault, &mut report).await;
        up.sort();
        // The outage ends when enough is back: a majority of nodes, one replica.
        let back = if quorum_loss {
            let needed = (n / 2 + 1).saturating_sub(n - up.len()).max(1);
            up.get(needed - 1).copied()
        } else if no_replica {
            up.first().copied()
        } else {
            None
        };
        if quorum_loss || no_replica {
            outages.push((applied_at, back.unwrap_or(healed_at)));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(1_000, 4_000))).await;
    }
    let end = now_ms() / 1000 * 1000 - 1000;
    stop.store(true, Ordering::SeqCst);
    let _ = writer.await;

    // Settle: retries and catch-up runs finish, then firing stops.
    eprintln!("chaos: faults over, settling");
    let leader = wait_for(Duration::from_secs(20), || leader_of(&c)).await;
    if leader.is_none() {
        report.unconverged.push(format!(
            "no leader 20 s after the last fault healed\n{}",
            c.logs()
        ));
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    check_ledger(&ledger, opts.schedules, start, end, &mut report);
    apps::check_ledgers(&replicas, &app_schedules, start, end, &outages, &mut report);
    report.outages = outages.iter().map(|(a, h)| (a - start, h - a)).collect();
    eprintln!("chaos: ledgers checked, checking writes and convergence");
    let acked = acked.lock().unwrap().clone();
    // Each check is bounded: a wedged cluster fails the run, it does not hang it.
    let bounded = Duration::from_secs(90);
    if tokio::time::timeout(bounded, check_writes(&c, &acked, &mut report))
        .await
        .is_err()
    {
        report
            .lost_writes
            .push(format!("cannot list within {bounded:?}"));
    }
    let mut fired: Vec<(&str, String)> = (0..opts.schedules)
        .map(|i| (FIRE_NS, format!("s{i:03}")))
        .collect();
    fired.extend(app_schedules.iter().map(|s| (apps::APP_NS, s.name.clone())));
    let converged = tokio::time::timeout(bounded, check_converged(&c, &fired, &mut report)).await;
    if converged.is_err() {
        report.unconverged.push(format!(
            "the convergence check did not finish within {bounded:?}"
        ));
    }
    let runs = apps::check_runs(&c, &replicas, &app_schedules, &mut report);
    if tokio::time::timeout(bounded, runs).await.is_err() {
        report.unconverged.push(format!(
            "the app runs check did not finish within {bounded:?}"
        ));
    }
    drop(replicas);
    drop(c);
    drop(lab);
    Ok(report)
}

/// A node's status, bounded: a node that accepts connections but does not
/// serve them (one still starting) would hold the call forever.
async fn status(c: &Cluster, id: usize) -> Option<raftcron_node::pb::scheduler::StatusReply> {
    tokio::time::timeout(Duration::from_secs(2), c.status(id as u64))
        .await
        .ok()
        .flatten()
}

async fn leader_of(c: &Cluster) -> Option<usize> {
    tokio::time::timeout(Duration::from_secs(2), c.leader())
        .await
        .ok()
        .flatten()
        .map(|l| l as usize)
}

fn apply(
    lab: &NetLab,
    c: &mut Cluster,
    replicas: &mut [Replica],
    f: &Fault,
) -> Result<String, String> {
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
        Fault::KillSidecars(ids) => {
            for j in ids {
                replicas[j - 1].kill_sidecar();
            }
            format!("sidecar-kill replicas {ids:?}")
        }
        Fault::Cut {
            replicas: ids,
            nodes,
            up,
            down,
        } => {
            for j in ids {
                let host = replicas[j - 1].host;
                for node in nodes {
                    if *up {
                        lab.cut(host, *node)?;
                    }
                    if *down {
                        lab.cut(*node, host)?;
                    }
                }
            }
            let (kind, arrow) = match (up, down) {
                (true, true) => ("sidecar-cut", "<->"),
                (true, false) => ("sidecar-oneway", "->"),
                _ => ("sidecar-oneway", "<-"),
            };
            format!("{kind} replicas {ids:?} {arrow} nodes {nodes:?}")
        }
    })
}

/// Heals `f`, and waits (bounded) for what it restarts to be up again: a
/// node answering its status, a sidecar past its start-up. Returns when
/// each came up (ms since the epoch), in the order of the fault's victims:
/// a restart can take much longer than the fault held (seen: 40 s on a
/// loaded machine), and the checker's outages must say so.
async fn heal(
    lab: &NetLab,
    c: &mut Cluster,
    replicas: &mut [Replica],
    f: &Fault,
    report: &mut ChaosReport,
) -> Vec<i64> {
    lab.heal_all();
    let limit = Duration::from_secs(60);
    let spawned = now_ms();
    let mut up = Vec::new();
    match f {
        Fault::Kill(ids) => {
            for i in ids {
                c.node(*i as u64).start(false);
            }
            for i in ids {
                let c = &*c;
                let ok = wait_for(limit, || status(c, *i)).await.is_some();
                up.push(now_ms());
                report
                    .restarts
                    .push((format!("node {i}"), now_ms() - spawned, ok));
                if !ok {
                    report.unconverged.push(format!(
                        "node {i} not serving {limit:?} after its restart:\n{}",
                        c.nodes[i - 1].log_tail(5)
                    ));
                }
            }
        }
        Fault::KillSidecars(ids) => {
            let before: Vec<usize> = ids.iter().map(|j| replicas[j - 1].starts()).collect();
            for j in ids {
                replicas[j - 1].start_sidecar();
            }
            for (j, b) in ids.iter().zip(before) {
                let r = &replicas[j - 1];
                let ok = wait_for(limit, || async { (r.starts() > b).then_some(()) })
                    .await
                    .is_some();
                up.push(now_ms());
                report
                    .restarts
                    .push((r.pod.clone(), now_ms() - spawned, ok));
                if !ok {
                    report.unconverged.push(format!(
                        "sidecar {} not started {limit:?} after its restart",
                        r.pod
                    ));
                }
            }
        }
        _ => {}
    }
    up
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
/// run of `schedules` (namespace, name) to be left active.
async fn check_converged(c: &Cluster, schedules: &[(&str, String)], r: &mut ChaosReport) {
    let client = c.client();
    for (ns, name) in schedules {
        if let Err(e) = client.set_suspend(ns, name, true).await {
            r.unconverged.push(format!("suspend {ns}/{name}: {e}"));
        }
    }
    let same = wait_for(Duration::from_secs(30), || async {
        let mut applied = HashSet::new();
        for n in &c.nodes {
            applied.insert(status(c, n.id as usize).await?.applied_index);
        }
        (applied.len() == 1).then_some(())
    })
    .await;
    if same.is_none() {
        let mut v = Vec::new();
        for n in &c.nodes {
            v.push((
                n.id,
                status(c, n.id as usize).await.map(|s| s.applied_index),
            ));
        }
        r.unconverged.push(format!("applied index differs: {v:?}"));
    }
    let active = ["Claimed", "Running", "RetryPending"];
    let settled = wait_for(Duration::from_secs(30), || async {
        for (ns, name) in schedules {
            let runs = client.runs(ns, name).await.ok()?;
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
        let mut still = Vec::new();
        for (ns, name) in schedules {
            if let Ok(runs) = client.runs(ns, name).await {
                still.extend(
                    runs.runs
                        .iter()
                        .filter(|run| active.contains(&run.result.as_str()))
                        .map(|run| {
                            format!("{} {} attempt {}", run.run_id, run.result, run.attempt)
                        }),
                );
            }
        }
        r.unconverged.push(format!(
            "runs still active 30 s after firing stopped: {still:?}"
        ));
    }
}
