//! Which node a sidecar talks to: the leader as last learned (from a
//! Welcome, a successful call, or a follower's `raftcron-leader-addr`),
//! else the `--cluster` addresses in turn. The attach loop and the lease
//! relay share one, so each learns the leader from the other.
//!
//! ```text
//!  target() ── leader known? ── yes ──► leader
//!                 └── no ──► cluster[next++ % n]
//!  found(addr) / follow(named) set the leader; failed(addr) forgets it
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::pb::metadata::LEADER_ADDR;
use crate::raft::network::Dialer;

pub struct Follow {
    cluster: Vec<String>,
    dialer: Dialer,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: usize,
    leader: Option<String>,
    /// One channel per address, for unary calls (they multiplex on it).
    channels: HashMap<String, Channel>,
}

/// The leader a refusal names, unless it is the node that refused.
pub fn named_leader(status: &Status, addr: &str) -> Option<String> {
    status
        .metadata()
        .get(LEADER_ADDR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|l| l != addr)
}

impl Follow {
    pub fn new(cluster: Vec<String>, dialer: Dialer) -> Self {
        Self {
            cluster,
            dialer,
            state: Mutex::default(),
        }
    }

    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("follow lock")
    }

    /// The leader if known, else the next address in turn.
    pub fn target(&self) -> String {
        let mut s = self.lock();
        if let Some(l) = &s.leader {
            return l.clone();
        }
        let a = self.cluster[s.next % self.cluster.len()].clone();
        s.next += 1;
        a
    }

    /// `addr` answered as the leader.
    pub fn found(&self, addr: &str) {
        self.lock().leader = Some(addr.to_string());
    }

    /// A node that does not lead named `leader`.
    pub fn follow(&self, leader: String) {
        self.lock().leader = Some(leader);
    }

    /// `addr` failed or does not lead (and named no leader): next time, the
    /// next address.
    pub fn failed(&self, addr: &str) {
        let mut s = self.lock();
        if s.leader.as_deref() == Some(addr) {
            s.leader = None;
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut s = self.lock();
        if let Some(c) = s.channels.get(addr) {
            return Ok(c.clone());
        }
        let c = self
            .dialer
            .channel(addr)
            .map_err(|e| Status::unavailable(format!("--cluster address {addr:?}: {e}")))?;
        if s.channels.len() > 64 {
            s.channels.clear(); // addresses of pods long gone
        }
        s.channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A unary call at the leader: each try gets `per_try`; a refusal naming
    /// the leader is followed at once, an unreachable or leaderless node is
    /// retried elsewhere with backoff until `deadline` has passed. Other
    /// errors are returned as they are. Every lease call is idempotent, so
    /// a retry after a lost reply is safe.
    pub async fn call<T, F, Fut>(
        &self,
        per_try: Duration,
        deadline: Duration,
        f: F,
    ) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut followed = 0;
        loop {
            let addr = self.target();
            let status = match self.channel(&addr) {
                Err(s) => {
                    self.failed(&addr);
                    s
                }
                Ok(ch) => match tokio::time::timeout(per_try, f(ch)).await {
                    Ok(Ok(r)) => {
                        self.found(&addr);
                        return Ok(r.into_inner());
                    }
                    Ok(Err(s)) => s,
                    Err(_) => Status::deadline_exceeded(format!(
                        "{addr} did not answer within {per_try:?}"
                    )),
                },
            };
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {}
                _ => return Err(status),
            }
            match named_leader(&status, &addr) {
                Some(l) if followed < 3 => {
                    followed += 1;
                    self.follow(l);
                    continue;
                }
                Some(l) => self.follow(l),
                None => self.failed(&addr),
            }
            followed = 0;
            if started.elapsed() + backoff > deadline {
                return Err(status);
            }
            let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}
