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
//!
//! Right after a leader dies the followers still name it until their
//! election timers run out (~0.3 s). A named leader that failed within
//! [`DOWN_FOR`] is not followed, and `target()` passes over addresses that
//! did: bouncing between a follower and the dead leader doubled the backoff
//! on each bounce, and sidecars re-attached 2-5 s after a 0.6 s election.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// When each address last failed.
    failed_at: HashMap<String, Instant>,
}

/// How long an address that failed is passed over (and not followed when a
/// follower names it): about an election timeout, after which the
/// followers have noticed a dead leader.
pub const DOWN_FOR: Duration = Duration::from_secs(1);

impl State {
    fn down(&self, addr: &str) -> bool {
        self.failed_at
            .get(addr)
            .is_some_and(|at| at.elapsed() < DOWN_FOR)
    }
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

    /// The leader if known, else the next address in turn that has not
    /// just failed (any, if all have).
    pub fn target(&self) -> String {
        let mut s = self.lock();
        if let Some(l) = &s.leader {
            return l.clone();
        }
        let n = self.cluster.len();
        let pick = (0..n)
            .map(|k| (s.next + k) % n)
            .find(|&i| !s.down(&self.cluster[i]))
            .unwrap_or(s.next % n);
        s.next = pick + 1;
        self.cluster[pick].clone()
    }

    /// `addr` answered as the leader.
    pub fn found(&self, addr: &str) {
        self.lock().leader = Some(addr.to_string());
    }

    /// A node that does not lead named `leader`: followed unless it failed
    /// within [`DOWN_FOR`] (the naming node has not noticed it is gone;
    /// ask again shortly). Returns whether it is followed.
    pub fn follow(&self, leader: String) -> bool {
        let mut s = self.lock();
        if s.down(&leader) {
            return false;
        }
        s.leader = Some(leader);
        true
    }

    /// `addr` failed or does not lead (and named no leader): next time, the
    /// next address.
    pub fn failed(&self, addr: &str) {
        let mut s = self.lock();
        if s.leader.as_deref() == Some(addr) {
            s.leader = None;
        }
        s.failed_at.insert(addr.to_string(), Instant::now());
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
            s.failed_at.clear();
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
                Some(l) if followed < 3 && self.follow(l.clone()) => {
                    followed += 1;
                    continue;
                }
                Some(l) => {
                    self.follow(l);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn follow() -> Follow {
        let cluster = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        Follow::new(cluster, Dialer::new(None, Duration::from_secs(1)))
    }

    #[test]
    fn a_dead_leader_still_named_by_a_follower_is_not_followed_and_is_passed_over() {
        let f = follow();
        f.found("a:1");
        assert_eq!(f.target(), "a:1");
        // The leader's stream broke and it cannot be reached.
        f.failed("a:1");
        let next: Vec<String> = (0..4).map(|_| f.target()).collect();
        assert!(!next.contains(&"a:1".to_string()), "{next:?}");
        // A follower that has not noticed names it: not followed.
        assert!(!f.follow("a:1".into()));
        assert_ne!(f.target(), "a:1");
        // The new leader is.
        assert!(f.follow("c:1".into()));
        assert_eq!(f.target(), "c:1");
    }

    #[test]
    fn when_every_address_failed_each_is_still_tried_in_turn() {
        let f = follow();
        for a in ["a:1", "b:1", "c:1"] {
            f.failed(a);
        }
        let mut seen: Vec<String> = (0..3).map(|_| f.target()).collect();
        seen.sort();
        assert_eq!(seen, ["a:1", "b:1", "c:1"]);
    }
}
