//! The firer: launches the attempts the fire loop armed, at their instants,
//! after one lease check per instant. A task of its own, so that work in
//! the fire loop (refreshing after a large apply, planning claims) never
//! delays a start.
//!
//! ```text
//!  fire loop ──Armed{at, starts}──► Firer ──at the instant, lease ok──► StartTask::launch ──► executors
//!      ▲                                  └──no lease──► Aborted ──────────────────────────┐
//!      └──────────────────── Done (attempt finished) ◄── executors ◄──────────────────────┘ (requeued)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use raftcron_crds::ScheduledJobSpec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::recorder::Recorder;
use crate::clock::{now_ms, now_us};
use crate::ctx::NodeCtx;
use crate::exec::{Attempt, Executors, Outcome, Prepared};
use crate::sm::{Millis, RunEvent, RunRef};

/// Wake this long before a start instant and spin the rest: tokio's timer
/// alone wakes up to a millisecond late.
const SPIN_US: i64 = 1_500;

/// Attempts prepared for one instant.
pub(super) struct Armed {
    pub at: Millis,
    pub starts: Vec<StartTask>,
}

/// One prepared attempt: everything decided, waiting to be launched.
pub(super) struct StartTask {
    pub ctx: Arc<NodeCtx>,
    pub executors: Arc<Executors>,
    pub recorder: Recorder,
    pub done_tx: mpsc::UnboundedSender<Done>,
    /// The run's first attempt: its start is what the lateness metric measures.
    pub first: bool,
    pub attempt: Attempt,
    pub uid: String,
    pub spec: Arc<ScheduledJobSpec>,
    pub token: CancellationToken,
    /// What the attempt was got ready with when armed (an `app` attempt's replica).
    pub prepared: Prepared,
}

impl StartTask {
    /// Records the start and spawns the action. This is the moment the
    /// attempt starts, and what the lateness metric measures.
    fn launch(self) {
        let started_us = now_us();
        if self.first {
            let late = (started_us - self.attempt.scheduled_ms * 1000).max(0) as f64 / 1e6;
            self.ctx.metrics.fire_lateness.observe(late);
        } else {
            self.ctx.metrics.retries.inc();
        }
        self.recorder.record(RunEvent::Started {
            run: RunRef {
                uid: self.uid.clone(),
                run_id: self.attempt.run_id.clone(),
            },
            attempt: self.attempt.attempt,
            at: started_us / 1000,
            pod: self.prepared.pod().map(str::to_string),
        });
        let sends_at_once = self.prepared.sends_at_once();
        let attempt = async move {
            let outcome = self
                .executors
                .run(&self.spec, &self.attempt, self.prepared, self.token.clone())
                .await;
            if self.token.is_cancelled() {
                return; // replaced, deleted or leadership moved: not ours to record
            }
            let _ = self.done_tx.send(Done {
                uid: self.uid,
                run_id: self.attempt.run_id,
                attempt: self.attempt.attempt,
                outcome,
                at: now_ms(),
            });
        };
        spawn_sent(attempt, sends_at_once);
    }

    /// Not started: handed back to the fire loop to requeue.
    fn abort(self, aborted: &mpsc::UnboundedSender<Aborted>) {
        let _ = aborted.send(Aborted {
            uid: self.uid,
            run_id: self.attempt.run_id,
            attempt: self.attempt.attempt,
        });
    }
}

/// Instants with fewer starts than this are launched by the firer alone.
const SPREAD_FROM: usize = 64;

/// Launches an instant's starts from every worker of the runtime at once:
/// a send on loopback costs its sender the receiver's side too (~10-20 µs
/// on this kind of machine), so one thread gets a thousand requests out in
/// ~20 ms where two take half that. The firer takes one share; the others
/// go to tasks for the other workers to take (the first spawned sits in
/// this worker's LIFO slot, which others cannot steal, until the next spawn
/// pushes it to the stealable queue). Shares are dealt in turn, so each
/// starts with the instant's earliest-armed attempts.
///
/// Launching takes time at scale (a write per prepared attempt; 10,000
/// take longer than the lease), so a share that reaches the lease's
/// deadline reads the lease again, which heartbeats keep renewing, and
/// aborts what is left only once it has lapsed: no start risks running
/// beside a successor.
fn launch_spread(
    starts: Vec<StartTask>,
    until: Option<i64>,
    lease: &LeaseCheck,
    aborted: &mpsc::UnboundedSender<Aborted>,
) {
    let ways = tokio::runtime::Handle::current().metrics().num_workers();
    if ways < 2 || starts.len() < SPREAD_FROM || until.is_none() {
        launch_share(starts, until, lease, aborted);
        return;
    }
    let mut shares: Vec<Vec<StartTask>> = (0..ways)
        .map(|_| Vec::with_capacity(starts.len() / ways + 1))
        .collect();
    for (i, start) in starts.into_iter().enumerate() {
        shares[i % ways].push(start);
    }
    let mine = shares.swap_remove(0);
    for share in shares {
        let (lease, aborted) = (lease.clone(), aborted.clone());
        tokio::spawn(async move { launch_share(share, until, &lease, &aborted) });
    }
    launch_share(mine, until, lease, aborted);
}

/// A start cancelled meanwhile (replaced, deleted) is neither launched nor
/// handed back.
fn launch_share(
    share: Vec<StartTask>,
    until: Option<i64>,
    lease: &LeaseCheck,
    aborted: &mpsc::UnboundedSender<Aborted>,
) {
    within_lease(
        share,
        until,
        || lease.until(),
        now_us,
        |start| {
            if !start.token.is_cancelled() {
                start.launch()
            }
        },
        |start| {
            if !start.token.is_cancelled() {
                start.abort(aborted)
            }
        },
    );
}

/// Hands each item to `go` while the lease holds, reading it again
/// (`reread`) whenever its deadline `until` is reached, and every item from
/// the first one found past a lapsed lease on to `stop`.
fn within_lease<T>(
    items: Vec<T>,
    mut until: Option<i64>,
    reread: impl Fn() -> Option<i64>,
    now: impl Fn() -> i64,
    mut go: impl FnMut(T),
    mut stop: impl FnMut(T),
) {
    for item in items {
        if until.is_some_and(|u| now() >= u) {
            until = reread();
        }
        match until {
            Some(_) => go(item),
            None => stop(item),
        }
    }
}

/// Spawns an attempt; a prepared one is polled here once first, which
/// writes its request (or the app's go) right away, in the firer's loop.
///
/// Spawned only, the sends of an instant's attempts waited for a worker to
/// get to each task, behind the responses of the ones already sent (a woken
/// task runs before the queue) and beside Raft: at 1,000 fires, requests
/// reached nginx spread over 40 ms. The poll here uses a waker that does
/// nothing; the spawned task polls the future again at once, and that poll
/// registers the task's own waker for the response.
///
/// Only that first poll is unconstrained: tokio's cooperative budget
/// belongs to the polling task, and the firer's would run out after ~128
/// sends, leaving the rest to their tasks again. A panic in it is caught
/// here, as tokio would have in the attempt's task, so the firer goes on.
fn spawn_sent(attempt: impl Future<Output = ()> + Send + 'static, sends_at_once: bool) {
    let mut attempt = Box::pin(attempt);
    if sends_at_once {
        let mut cx = Context::from_waker(Waker::noop());
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::pin!(tokio::task::unconstrained(attempt.as_mut())).poll(&mut cx)
        }));
        match first {
            Ok(std::task::Poll::Ready(())) => return,
            Ok(std::task::Poll::Pending) => {}
            Err(_) => {
                tracing::error!("an attempt panicked when it was sent; its result is not recorded");
                return;
            }
        }
    }
    tokio::spawn(attempt);
}

/// Launches armed attempts at their instants.
pub(super) struct Firer {
    pub ctx: Arc<NodeCtx>,
    pub term: u64,
    pub lease: Duration,
    pub aborted: mpsc::UnboundedSender<Aborted>,
}

impl Firer {
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Armed>, cancel: CancellationToken) {
        let mut armed: BTreeMap<Millis, Vec<StartTask>> = BTreeMap::new();
        loop {
            let wake = armed.keys().next().map(|at| {
                let wait_us = at * 1000 - SPIN_US - now_us();
                tokio::time::Instant::now() + Duration::from_micros(wait_us.max(0) as u64)
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                a = rx.recv() => match a {
                    Some(a) => { armed.entry(a.at).or_default().extend(a.starts); continue }
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
            }
            let Some(&first) = armed.keys().next() else {
                continue;
            };
            // The timer wakes up to a millisecond late; spin the rest of the way.
            while now_us() < first * 1000 {
                std::hint::spin_loop();
            }
            let lease = LeaseCheck {
                ctx: self.ctx.clone(),
                term: self.term,
                lease: self.lease,
            };
            // With no quorum contact within the lease another node may be
            // taking over, so nothing starts: the main loop requeues, and the
            // term ends if leadership is lost.
            let until = lease.until();
            let now = now_ms();
            let mut due = Vec::new();
            while let Some(entry) = armed.first_entry() {
                if *entry.key() > now {
                    break;
                }
                due.extend(entry.remove());
            }
            launch_spread(due, until, &lease, &self.aborted);
        }
    }
}

/// The fire lease of one term, read from openraft's leader state.
#[derive(Clone)]
struct LeaseCheck {
    ctx: Arc<NodeCtx>,
    term: u64,
    lease: Duration,
}

impl LeaseCheck {
    /// Until when (µs since the epoch) this term may start attempts: the
    /// fire lease counted from the last quorum acknowledgement; `None` when
    /// it has lapsed or the term is over.
    fn until(&self) -> Option<i64> {
        use openraft::Instant as _;
        let l = self.ctx.raft.as_leader().ok()?;
        if l.leader_id().term != self.term {
            return None;
        }
        let left = l
            .last_quorum_acked()
            .and_then(|t| self.lease.checked_sub(t.elapsed()))
            .filter(|left| !left.is_zero());
        match left {
            Some(left) => Some(now_us() + left.as_micros() as i64),
            None if self.sole_voter() => Some(i64::MAX),
            None => None,
        }
    }

    /// openraft refreshes the quorum-acknowledged time only when a follower
    /// answers, so a one-voter cluster's lease would lapse right after its
    /// election; with no other voter, no other leader can exist.
    fn sole_voter(&self) -> bool {
        let m = crate::raft::metrics(&self.ctx.raft);
        let mut voters = m.membership_config.membership().voter_ids();
        voters.next() == Some(self.ctx.identity.id) && voters.next().is_none()
    }
}

/// How long after a quorum acknowledged it the leader may still start
/// attempts.
///
/// A successor is elected only after some voter that acknowledged us let its
/// election timer run out: at least `election_min` after our acknowledged
/// send. The successor writes off claimed fires before its takeover less
/// `max_skew` (`plan::takeover`) and assumes later ones never started. So
/// every start of ours must fall before `send + election_min - max_skew`;
/// the lease ends 50 ms earlier still, for scheduling delays between the
/// lease check and the start. (80 % of `election_min` was used before; with
/// a 250 ms timeout and 50 ms skew that left no margin, and the fault
/// harness saw an attempt run twice.)
pub fn fire_lease(election_min: Duration, max_skew: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(50);
    election_min.saturating_sub(max_skew + MARGIN)
}

/// An attempt that finished here, for the fire loop to record.
pub(super) struct Done {
    pub uid: String,
    pub run_id: String,
    pub attempt: u32,
    pub outcome: Outcome,
    pub at: Millis,
}

/// A start the firer did not open (no lease at the instant), to requeue.
pub(super) struct Aborted {
    pub uid: String,
    pub run_id: String,
    pub attempt: u32,
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::within_lease;

    /// Five starts, the clock moving 10 µs per look; the lease's deadline
    /// at 25 µs. Returns (started, aborted).
    fn share(reread: impl Fn() -> Option<i64>) -> (Vec<u32>, Vec<u32>) {
        let clock = Cell::new(0);
        let now = || {
            let t = clock.get();
            clock.set(t + 10);
            t
        };
        let (mut went, mut stopped) = (vec![], vec![]);
        within_lease(
            (0..5).collect(),
            Some(25),
            reread,
            now,
            |i| went.push(i),
            |i| stopped.push(i),
        );
        (went, stopped)
    }

    #[test]
    fn starts_past_a_lapsed_lease_are_aborted_not_launched() {
        assert_eq!(share(|| None), (vec![0, 1, 2], vec![3, 4]));
    }

    #[test]
    fn a_lease_renewed_meanwhile_lets_the_share_go_on() {
        assert_eq!(share(|| Some(1_000)), (vec![0, 1, 2, 3, 4], vec![]));
    }
}
