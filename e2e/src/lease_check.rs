//! Leases for app code under faults: candidates (one per replica, each
//! through its own `raftcron-node sidecar`) compete for one key, renewing
//! every `ttl / 4`, and log every grant as they saw it; a checker then
//! proves from the logs alone:
//!
//! - **no overlap**: no two tenures (one token each) of a key were believed
//!   at the same time by their holders for longer than the skew margin. A
//!   holder believes its tenure from the reply's arrival until the earlier
//!   of `sent + ttl` (its own clock, from when it sent the request) and
//!   `expiresAt`;
//! - **tokens only grow**: ordered by when they began, tenures carry
//!   strictly increasing tokens, a token belongs to one pod, and no pod ever
//!   sees a token lower than one it saw before.
//!
//! ```text
//!  candidate k ──POST /v1/leases/KEY──► sidecar k ──► leader ──► Raft
//!      └── record {pod, token, from, until} ──► check()
//!  faults: kill -9 / SIGSTOP of the holder's sidecar, kill -9 of the
//!          leader, the leader partitioned off (both ways), a slow link
//! ```
//!
//! [`run`] drives it on loopback (kills only) or, with a [`LabTls`], in
//! network namespaces (kills, partitions and slow links; the cluster on
//! mutual TLS, because nodes accept plain-text sidecars from loopback
//! only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::netlab::{NetLab, Slow};
use crate::process::ChildGuard;
use crate::{ClientTlsFiles, Cluster, ClusterOptions, Host, bin, free_port, now_ms};

/// A keep-alive HTTP/1.1 client for a sidecar's local API (one connection,
/// so a latency figure is the sidecar's, not a TCP handshake's).
pub struct LocalApi {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl LocalApi {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            conn: None,
        }
    }

    /// `(status, JSON body)`; `Err` when unreachable or slower than `timeout`.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        match tokio::time::timeout(timeout, self.exchange(method, path, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(format!("{method} {path}: no answer within {timeout:?}"))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Value), String> {
        // A kept connection may have been closed by the server: one retry
        // on a fresh one (every lease call is idempotent).
        for fresh in [self.conn.is_none(), true] {
            if fresh {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                s.set_nodelay(true).ok();
                self.conn = Some(BufReader::new(s));
            }
            match self.once(method, path, body).await {
                Ok(r) => return Ok(r),
                Err(e) if fresh => return Err(e),
                Err(_) => self.conn = None,
            }
        }
        unreachable!("the second try is on a fresh connection")
    }

    async fn once(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let conn = self.conn.as_mut().expect("connected");
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        conn.get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        if conn.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().map_err(|_| format!("bad length {v:?}"))?;
            }
        }
        let mut buf = vec![0; len];
        conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        let v = if buf.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&buf)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&buf).into_owned()))
        };
        Ok((status, v))
    }
}

/// One `raftcron-node sidecar` process (no app behind it: leases only).
pub struct Sidecar {
    pub pod: String,
    /// Its local API, `127.0.0.1:PORT`.
    pub listen: String,
    pub log: PathBuf,
    args: Vec<String>,
    child: ChildGuard,
}

impl Sidecar {
    /// Starts the sidecar of `pod` (app `web`) in `dir`.
    pub fn start(
        dir: &Path,
        cluster: &[String],
        namespace: &str,
        pod: &str,
        extra: &[String],
    ) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = [
            "sidecar",
            "--cluster",
            &cluster.join(","),
            "--namespace",
            namespace,
            "--app",
            "web",
            "--pod",
            pod,
            // Never called: these tests fire no `app` jobs.
            "--app-url",
            "http://127.0.0.1:9",
            "--listen",
            &listen,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut s = Self {
            pod: pod.to_string(),
            listen,
            log: dir.join(format!("sidecar-{pod}.log")),
            args,
            child: ChildGuard::default(),
        };
        s.restart();
        s
    }

    /// Starts it (again) with the same flags and port.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(bin("raftcron-node"));
        cmd.args(&self.args).env(
            "RAFTCRON_LOG",
            std::env::var("RAFTCRON_LOG").unwrap_or_else(|_| "info".into()),
        );
        self.child.spawn_logged(&mut cmd, &self.log, "sidecar");
    }

    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.pid() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// Serving its local API (up to `timeout`).
    pub async fn serving(&self, timeout: Duration) -> bool {
        crate::wait_for(timeout, || async {
            matches!(
                crate::http_get(&self.listen, "/healthz").await,
                Ok((200, _))
            )
            .then_some(())
        })
        .await
        .is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One grant as a holder saw it (Unix milliseconds, the holder's clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderRecord {
    pub key: String,
    pub pod: String,
    pub token: u64,
    /// The request went out.
    pub sent: i64,
    /// The reply arrived: the holder acts from here…
    pub from: i64,
    /// …until here: `min(sent + ttl, expiresAt)`.
    pub until: i64,
}

impl HolderRecord {
    /// From a 200 reply to `POST /v1/leases/{key}` sent at `sent`.
    pub fn from_reply(key: &str, pod: &str, sent: i64, ttl_ms: i64, v: &Value) -> Option<Self> {
        let token = v["token"].as_u64()?;
        let expires = raftcron_crds::names::parse_rfc3339_ms(v["expiresAt"].as_str()?)?;
        Some(Self {
            key: key.to_string(),
            pod: pod.to_string(),
            token,
            sent,
            from: now_ms(),
            until: (sent + ttl_ms).min(expires),
        })
    }
}

/// One token's tenure, from its records.
#[derive(Clone, Debug)]
pub struct Tenure {
    pub key: String,
    pub token: u64,
    pub pod: String,
    pub from: i64,
    pub until: i64,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub records: usize,
    pub tenures: Vec<Tenure>,
    pub violations: Vec<String>,
    /// Between consecutive tenures of a key: the next began this long after
    /// the previous holder's belief ended (negative: an overlap, allowed up
    /// to the skew margin).
    pub handover_gaps_ms: Vec<i64>,
}

impl Verdict {
    pub fn summary(&self) -> String {
        let mut gaps = self.handover_gaps_ms.clone();
        gaps.sort();
        let min = gaps.first().copied().unwrap_or(0);
        let max = gaps.last().copied().unwrap_or(0);
        let mut s = format!(
            "{} grants seen, {} tenures, {} handovers (gap between beliefs {min}..{max} ms), {} violations",
            self.records,
            self.tenures.len(),
            gaps.len(),
            self.violations.len()
        );
        for v in self.violations.iter().take(20) {
            s.push_str(&format!("\n  VIOLATION {v}"));
        }
        s
    }
}

/// Checks the holders' logs (see the module doc); `skew_ms` is the margin
/// an overlap may reach (`--max-clock-skew`; the holders' clocks may differ
/// by that much).
pub fn check(records: &[HolderRecord], skew_ms: i64) -> Verdict {
    let mut v = Verdict {
        records: records.len(),
        ..Default::default()
    };
    // Per pod: tokens seen never go down.
    let mut by_pod: BTreeMap<(&str, &str), Vec<&HolderRecord>> = BTreeMap::new();
    for r in records {
        by_pod.entry((&r.key, &r.pod)).or_default().push(r);
    }
    for ((key, pod), mut rs) in by_pod {
        rs.sort_by_key(|r| r.from);
        for w in rs.windows(2) {
            if w[1].token < w[0].token {
                v.violations.push(format!(
                    "{key}: {pod} saw token {} at {} after token {} at {}",
                    w[1].token, w[1].from, w[0].token, w[0].from
                ));
            }
        }
    }
    // Tenures: one per (key, token), of one pod.
    let mut tenures: BTreeMap<(&str, u64), Tenure> = BTreeMap::new();
    let mut pods: BTreeMap<(&str, u64), BTreeSet<&str>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.from < r.until) {
        pods.entry((&r.key, r.token)).or_default().insert(&r.pod);
        let t = tenures.entry((&r.key, r.token)).or_insert_with(|| Tenure {
            key: r.key.clone(),
            token: r.token,
            pod: r.pod.clone(),
            from: r.from,
            until: r.until,
        });
        t.from = t.from.min(r.from);
        t.until = t.until.max(r.until);
    }
    for ((key, token), p) in &pods {
        if p.len() > 1 {
            v.violations
                .push(format!("{key}: token {token} was granted to {p:?}"));
        }
    }
    let mut by_key: BTreeMap<String, Vec<Tenure>> = BTreeMap::new();
    for t in tenures.into_values() {
        by_key.entry(t.key.clone()).or_default().push(t);
    }
    for (key, mut ts) in by_key {
        ts.sort_by_key(|t| t.from);
        for (i, a) in ts.iter().enumerate() {
            for b in &ts[i + 1..] {
                let overlap = a.until.min(b.until) - a.from.max(b.from);
                if overlap > skew_ms {
                    v.violations.push(format!(
                        "{key}: token {} ({}, {}..{}) and token {} ({}, {}..{}) overlap by {overlap} ms",
                        a.token, a.pod, a.from, a.until, b.token, b.pod, b.from, b.until
                    ));
                }
                if b.token < a.token {
                    v.violations.push(format!(
                        "{key}: token {} ({}) began at {} after token {} ({}) at {}",
                        b.token, b.pod, b.from, a.token, a.pod, a.from
                    ));
                }
            }
        }
        for w in ts.windows(2) {
            v.handover_gaps_ms.push(w[1].from - w[0].until);
        }
        v.tenures.extend(ts);
    }
    v
}

/// A candidate: acquires or renews `key` every `ttl / 4` through its
/// sidecar and logs each grant; a failed or refused call means "not the
/// holder" (the last grant still stands until its `until`).
pub async fn candidate(
    listen: String,
    pod: String,
    key: String,
    ttl_s: u32,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<HolderRecord>>>,
) {
    let ttl_ms = i64::from(ttl_s) * 1000;
    let period = Duration::from_millis(ttl_ms as u64 / 4);
    let body = format!(r#"{{"ttlSeconds": {ttl_s}}}"#);
    let path = format!("/v1/leases/{key}");
    let mut api = LocalApi::new(&listen);
    while !stop.load(Ordering::Relaxed) {
        let sent = now_ms();
        // A reply later than the TTL is useless to the holder anyway.
        if let Ok((200, v)) = api
            .call(
                "POST",
                &path,
                Some(&body),
                Duration::from_millis(ttl_ms as u64),
            )
            .await
            && let Some(r) = HolderRecord::from_reply(&key, &pod, sent, ttl_ms, &v)
        {
            log.lock().unwrap().push(r);
        }
        let spent = Duration::from_millis((now_ms() - sent).max(0) as u64);
        tokio::time::sleep(period.saturating_sub(spent)).await;
    }
}

/// Files for a lab on mutual TLS: the cluster CA, a node certificate valid
/// for the lab addresses, the harness client's, and a sidecar certificate
/// for the candidates' namespace.
#[derive(Clone, Debug)]
pub struct LabTls {
    pub ca: PathBuf,
    pub node: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    pub sidecar: (PathBuf, PathBuf),
}

fn tls_flags(ca: &Path, (cert, key): &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        ca.display().to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

#[derive(Clone, Debug)]
pub struct LeaseCheckOptions {
    pub duration: Duration,
    pub replicas: usize,
    pub ttl_s: u32,
    pub seed: u64,
}

/// The namespace the candidates' app lives in (the sidecar certificate names it).
pub const NAMESPACE: &str = "shop";
const KEY: &str = "leader";
/// `--max-clock-skew` of the nodes (their default).
pub const SKEW_MS: i64 = 50;

#[derive(Debug, Default)]
pub struct LeaseCheckReport {
    pub faults: Vec<(i64, String)>,
    pub verdict: Verdict,
}

fn holder_now(log: &Mutex<Vec<HolderRecord>>) -> Option<String> {
    let now = now_ms();
    log.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.until > now)
        .map(|r| r.pod.clone())
}

/// Runs candidates under a seeded sequence of faults, then checks their
/// logs. With `lab` (3 node namespaces, and certificates for their
/// addresses), partitions and slow links are among the faults.
pub async fn run(
    opts: LeaseCheckOptions,
    lab: Option<(NetLab, LabTls)>,
) -> Result<LeaseCheckReport, String> {
    let (lab, tls) = match lab {
        Some((l, t)) => (Some(l), Some(t)),
        None => (None, None),
    };
    let (hosts, extra_args, client_tls) = match (&lab, &tls) {
        (Some(l), Some(t)) => (
            Some(
                (1..=3)
                    .map(|i| Host {
                        ip: l.ip(i),
                        netns: l.ns(i),
                    })
                    .collect(),
            ),
            tls_flags(&t.ca, &t.node),
            Some(ClientTlsFiles {
                ca: t.ca.clone(),
                cert: Some(t.client.0.clone()),
                key: Some(t.client.1.clone()),
            }),
        ),
        _ => (None, Vec::new(), None),
    };
    let mut c = Cluster::start(ClusterOptions {
        nodes: 3,
        hosts,
        extra_args,
        client_tls,
    })
    .await;
    let sidecar_flags = tls
        .as_ref()
        .map(|t| tls_flags(&t.ca, &t.sidecar))
        .unwrap_or_default();
    let endpoints = c.endpoints();
    let mut sidecars: Vec<Sidecar> = (0..opts.replicas)
        .map(|i| {
            Sidecar::start(
                c.path(),
                &endpoints,
                NAMESPACE,
                &format!("web-{i}"),
                &sidecar_flags,
            )
        })
        .collect();
    for s in &sidecars {
        if !s.serving(Duration::from_secs(10)).await {
            return Err(format!("sidecar {} did not start\n{}", s.pod, s.log_text()));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = sidecars
        .iter()
        .map(|s| {
            tokio::spawn(candidate(
                s.listen.clone(),
                s.pod.clone(),
                KEY.into(),
                opts.ttl_s,
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();
    let mut report = LeaseCheckReport::default();
    let mut rng = raftcron_node::testkit::SplitMix64::new(opts.seed);
    let start = now_ms();
    let end = start + opts.duration.as_millis() as i64;
    let kinds = if lab.is_some() { 5 } else { 3 };
    // Every kind in turn, from a seeded start, so a short run sees each.
    let first = rng.range(0, kinds - 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0.. {
        if now_ms() >= end {
            break;
        }
        let leader = tokio::time::timeout(Duration::from_secs(3), c.leader())
            .await
            .ok()
            .flatten();
        let holder = holder_now(&log)
            .and_then(|p| sidecars.iter().position(|s| s.pod == p))
            .unwrap_or(0);
        let hold = Duration::from_millis(rng.range(1_000, 2_000 + 1_500 * opts.ttl_s as u64));
        let kind = (first + round) % kinds;
        let desc = match (kind, leader) {
            (0, _) => {
                sidecars[holder].kill9();
                format!("kill -9 sidecar {}", sidecars[holder].pod)
            }
            (1, _) => {
                sidecars[holder].signal("STOP");
                format!("SIGSTOP sidecar {}", sidecars[holder].pod)
            }
            (2, Some(l)) => {
                c.node(l).kill9();
                format!("kill -9 leader {l}")
            }
            (3, Some(l)) => {
                let lab = lab.as_ref().expect("lab");
                for j in (1..=3).filter(|j| *j != l as usize) {
                    lab.cut(l as usize, j)?;
                    lab.cut(j, l as usize)?;
                }
                format!("leader {l} partitioned off")
            }
            (4, Some(l)) => {
                let lab = lab.as_ref().expect("lab");
                lab.slow(
                    l as usize,
                    Slow::Tbf {
                        kbit: 64,
                        latency_ms: 400,
                    },
                )?;
                format!("leader {l}'s link slowed to 64 kbit/s")
            }
            _ => "nothing (no leader known)".to_string(),
        };
        report.faults.push((
            now_ms() - start,
            format!("{desc} for {}ms", hold.as_millis()),
        ));
        tokio::time::sleep(hold).await;
        // Heal everything.
        for s in sidecars.iter_mut() {
            s.signal("CONT");
            if !s.is_running() {
                s.restart();
            }
        }
        for n in c.nodes.iter_mut() {
            if !n.is_running() {
                n.kill9();
                n.start(false);
            }
        }
        if let Some(lab) = &lab {
            lab.heal_all();
        }
        tokio::time::sleep(Duration::from_millis(rng.range(1_000, 3_000))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let records = log.lock().unwrap().clone();
    report.verdict = check(&records, SKEW_MS);
    if report.verdict.tenures.len() < 2 {
        report.verdict.violations.push(format!(
            "only {} tenures: the faults never moved the lease\n{}",
            report.verdict.tenures.len(),
            c.logs()
        ));
    }
    drop(sidecars);
    drop(c);
    drop(lab);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pod: &str, token: u64, from: i64, until: i64) -> HolderRecord {
        HolderRecord {
            key: "k".into(),
            pod: pod.into(),
            token,
            sent: from,
            from,
            until,
        }
    }

    #[test]
    fn consecutive_tenures_pass() {
        let v = check(
            &[
                rec("a", 1, 0, 1000),
                rec("a", 1, 500, 1500),
                rec("b", 2, 1550, 3000),
            ],
            50,
        );
        assert!(v.violations.is_empty(), "{v:?}");
        assert_eq!(v.tenures.len(), 2);
        assert_eq!(v.handover_gaps_ms, vec![50]);
    }

    #[test]
    fn an_overlap_beyond_the_margin_is_caught() {
        let v = check(&[rec("a", 1, 0, 1500), rec("b", 2, 1400, 3000)], 50);
        assert_eq!(v.violations.len(), 1, "{v:?}");
        assert!(v.violations[0].contains("overlap by 100 ms"));
        // Within the margin: fine.
        let v = check(&[rec("a", 1, 0, 1500), rec("b", 2, 1460, 3000)], 50);
        assert!(v.violations.is_empty(), "{v:?}");
    }

    #[test]
    fn a_token_that_goes_down_or_is_shared_is_caught() {
        let v = check(&[rec("a", 2, 0, 1000), rec("b", 1, 2000, 3000)], 50);
        assert!(
            v.violations
                .iter()
                .any(|s| s.contains("began at 2000 after token 2"))
        );
        let v = check(&[rec("a", 3, 0, 1000), rec("b", 3, 2000, 3000)], 50);
        assert!(v.violations.iter().any(|s| s.contains("was granted to")));
        let v = check(&[rec("a", 3, 0, 1000), rec("a", 2, 2000, 3000)], 50);
        assert!(v.violations.iter().any(|s| s.contains("a saw token 2")));
    }
}
