//! The scale bench's own attach streams (a minimal sidecar speaking
//! `proto/sidecar.proto` against the real nodes), and the /proc probes of
//! the processes measured.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftcron_node::pb::metadata::LEADER_ADDR;
use raftcron_node::pb::sidecar as pb;
use raftcron_node::pb::sidecar::attach_client::AttachClient;
use tokio::sync::mpsc;

use super::NS;
use crate::now_ms;

/// Counters of every [`BenchReplica`] of a run.
#[derive(Default)]
pub struct StreamCounters {
    /// Streams attached now.
    pub attached: AtomicI64,
    /// Welcomes received in all (re-attachments included).
    pub welcomes: AtomicU64,
    pub prepares: AtomicU64,
    /// Results sent: every Go with its Prepare ends in a Succeeded result.
    pub results: AtomicU64,
    /// Go without a Prepare (answered Refused).
    pub refused: AtomicU64,
}

/// A minimal sidecar inside the bench: one gRPC connection and one attach
/// stream, Hello → Welcome, heartbeats every 250 ms, and every Go answered
/// at once with a Succeeded result (no app behind it), so the figure is the
/// leader's dispatch, not an app's. It follows the leader as the sidecar
/// does (UNAVAILABLE names it), and re-attaches after a leader change.
pub struct BenchReplica {
    pub app: String,
    pub pod: String,
    pub capacity: u32,
}

impl BenchReplica {
    pub async fn run(self, endpoints: Arc<Vec<String>>, counters: Arc<StreamCounters>, seed: u64) {
        let mut next = seed as usize;
        let mut target: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        loop {
            let addr = target.take().unwrap_or_else(|| {
                next += 1;
                endpoints[next % endpoints.len()].clone()
            });
            let t0 = Instant::now();
            if let Some(leader) = self.attach_once(&addr, &counters).await {
                target = Some(leader);
                continue;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let jitter = rng % (backoff.as_millis() as u64 / 2 + 1);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One attachment until it ends; Some(leader address) when a follower named it.
    async fn attach_once(&self, addr: &str, counters: &StreamCounters) -> Option<String> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1));
        let channel = endpoint.connect().await.ok()?;
        let (tx, rx) = mpsc::channel::<pb::FromSidecar>(4096);
        let _ = tx.try_send(pb::FromSidecar {
            msg: Some(pb::from_sidecar::Msg::Hello(pb::Hello {
                namespace: NS.into(),
                app: self.app.clone(),
                pod: self.pod.clone(),
                capacity: self.capacity,
                token: String::new(),
            })),
        });
        let outbound =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let mut client = AttachClient::new(channel);
        let mut inbound =
            match tokio::time::timeout(Duration::from_secs(5), client.attach(outbound)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    return status
                        .metadata()
                        .get(LEADER_ADDR)
                        .and_then(|v| v.to_str().ok())
                        .filter(|l| *l != addr)
                        .map(str::to_string);
                }
                Err(_) => return None,
            };
        let silence = Duration::from_secs(1);
        match tokio::time::timeout(silence, inbound.message()).await {
            Ok(Ok(Some(pb::ToSidecar {
                msg: Some(pb::to_sidecar::Msg::Welcome(_)),
            }))) => {}
            _ => return None,
        }
        counters.welcomes.fetch_add(1, Ordering::Relaxed);
        counters.attached.fetch_add(1, Ordering::Relaxed);
        let mut prepared: HashSet<(String, u32)> = HashSet::new();
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                m = tokio::time::timeout(silence, inbound.message()) => {
                    let Ok(Ok(Some(pb::ToSidecar { msg: Some(msg) }))) = m else { break };
                    let reply = match msg {
                        pb::to_sidecar::Msg::Prepare(p) => {
                            counters.prepares.fetch_add(1, Ordering::Relaxed);
                            prepared.insert((p.run_id, p.attempt));
                            None
                        }
                        pb::to_sidecar::Msg::Go(g) => {
                            let known = prepared.remove(&(g.run_id.clone(), g.attempt));
                            let (outcome, counter) = if known {
                                (pb::Outcome::Succeeded, &counters.results)
                            } else {
                                (pb::Outcome::Refused, &counters.refused)
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            Some(pb::from_sidecar::Msg::Result(pb::Result {
                                run_id: g.run_id,
                                attempt: g.attempt,
                                outcome: outcome as i32,
                                message: "HTTP 200".into(),
                                sent_us: now_ms() * 1000,
                            }))
                        }
                        pb::to_sidecar::Msg::Cancel(x) => {
                            prepared.remove(&(x.run_id, x.attempt));
                            None
                        }
                        _ => None,
                    };
                    if let Some(msg) = reply
                        && tx.send(pb::FromSidecar { msg: Some(msg) }).await.is_err()
                    {
                        break;
                    }
                }
                _ = beat.tick() => {
                    let msg = pb::FromSidecar { msg: Some(pb::from_sidecar::Msg::Heartbeat(pb::Heartbeat {})) };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        counters.attached.fetch_sub(1, Ordering::Relaxed);
        None
    }
}

/// CPU time of a process so far, in seconds (utime + stime of /proc/<pid>/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU used over a window, in % of one core, for each pid.
pub async fn cpu_percent(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| match (b, cpu_seconds(*p)) {
            (Some(b), Some(a)) => (a - b) / secs * 100.0,
            _ => f64::NAN,
        })
        .collect()
}

/// CPU time every core of the machine spent busy so far, in seconds (from
/// the first line of /proc/stat: user, nice, system, irq and softirq; idle,
/// iowait and steal are not busy, and guest time is counted in user already).
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .map(|(_, t)| t)
        .sum();
    busy / clock_ticks()
}
