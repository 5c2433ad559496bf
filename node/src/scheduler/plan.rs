//! Pure scheduling decisions: which fires to claim, what to do at a start
//! instant, and what a new leader does with runs left by the previous one.
//! No clock, no IO: the fire loop passes `now` in and executes the result.

use raftcron_crds::schedule::Schedule;
use raftcron_crds::{ConcurrencyPolicy, MissedRunPolicy};

use crate::sm::runs::{Phase, RunRecord};
use crate::sm::{Disposition, FireClaim, Millis, RunEvent, RunRef, ScheduleRecord, SkipReason};

/// Knobs of the planner.
#[derive(Clone, Copy, Debug)]
pub struct PlanSettings {
    /// Claim fires this far ahead of their instant.
    pub lookahead_ms: Millis,
    /// A fire later than this when first claimed was missed during downtime
    /// and follows `missedRunPolicy`; a less late one simply runs late.
    pub catch_up_ms: Millis,
    /// Most instants considered per schedule per planning pass (RunAll after
    /// a long outage continues on the next pass; nothing is dropped).
    pub max_instants: usize,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            lookahead_ms: 1000,
            catch_up_ms: 30_000,
            max_instants: 10_000,
        }
    }
}

/// The fires to claim for one schedule, in instant order: every instant in
/// `(claimed_through, now + lookahead]`, each to run or, compressed into
/// ranges, recorded as missed.
pub fn claims(
    s: &ScheduleRecord,
    schedule: &Schedule,
    now: Millis,
    set: &PlanSettings,
) -> Vec<FireClaim> {
    if s.spec.suspend {
        return Vec::new();
    }
    let horizon = now + set.lookahead_ms;
    let instants = schedule.fires_between(s.claimed_through, horizon, set.max_instants);
    let deadline = s.spec.starting_deadline_ms();
    // Instants missed during downtime (too late to run as merely late).
    let downtime: Vec<bool> = instants
        .iter()
        .map(|&i| now - i > set.catch_up_ms)
        .collect();
    let last_downtime = downtime.iter().rposition(|d| *d);
    let mut out: Vec<FireClaim> = Vec::new();
    let mut missed_run: u64 = 0;
    for (idx, &instant) in instants.iter().enumerate() {
        let past_deadline = deadline.is_some_and(|d| now - instant > d);
        let run = if past_deadline {
            false
        } else if downtime[idx] {
            match s.spec.missed_run_policy {
                MissedRunPolicy::Skip => false,
                MissedRunPolicy::RunAll => true,
                MissedRunPolicy::RunOnce => Some(idx) == last_downtime,
            }
        } else {
            true
        };
        if run {
            if missed_run > 0 {
                let prev = instants[idx - 1];
                out.push(FireClaim {
                    uid: s.uid.clone(),
                    instant: prev,
                    disposition: Disposition::Missed { count: missed_run },
                });
                missed_run = 0;
            }
            out.push(FireClaim {
                uid: s.uid.clone(),
                instant,
                disposition: Disposition::Run,
            });
        } else {
            missed_run += 1;
        }
    }
    if missed_run > 0 {
        let last = *instants.last().expect("non-empty when a range is open");
        out.push(FireClaim {
            uid: s.uid.clone(),
            instant: last,
            disposition: Disposition::Missed { count: missed_run },
        });
    }
    out
}

/// The first instant this schedule could still claim, for the due index.
pub fn next_claimable(s: &ScheduleRecord, schedule: &Schedule) -> Option<Millis> {
    if s.spec.suspend {
        return None;
    }
    schedule.next_after(s.claimed_through)
}

/// Runs of one schedule that may be due to start but not started, or
/// finished here without the result applied yet, before the leader stops
/// claiming more of its instants.
pub const MAX_BEHIND: usize = 3;

/// Whether `s` is behind: at least [`MAX_BEHIND`] of its runs came due
/// before `now` and are still waiting for their start or for their result
/// to be applied (`running_here` says which running attempts execute on this
/// leader; the others have finished and their result is in flight).
///
/// The leader does not claim such a schedule's next instants until it
/// catches up. Under a load the nodes cannot keep up with, claiming on time
/// anyway would only lengthen the schedule's run list, and every change to
/// it costs the leader a scan of that list: the backlog would grow and slow
/// everything. Held back, the instants are claimed late and run late, and
/// past `catch_up_ms` follow `missedRunPolicy` like any other outage.
pub fn behind(s: &ScheduleRecord, now: Millis, running_here: impl Fn(&str) -> bool) -> bool {
    s.active
        .iter()
        .filter(|r| {
            r.instant < now
                && match r.phase {
                    Phase::Claimed => true,
                    Phase::Running => !running_here(&r.run_id),
                    Phase::RetryPending { .. } | Phase::Done(_) => false,
                }
        })
        .nth(MAX_BEHIND - 1)
        .is_some()
}

/// What a run waiting in the start queue needs next, if anything.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    pub at: Millis,
    pub attempt: u32,
}

/// When and as which attempt the leader starts `run`. Valid once the
/// leader's [`takeover`] events are applied: the claimed runs left then are
/// certainly unstarted, whoever claimed them.
pub fn pending_start(run: &RunRecord) -> Option<Pending> {
    match run.phase {
        Phase::Claimed => Some(Pending {
            at: run.instant,
            attempt: run.attempt + 1,
        }),
        Phase::RetryPending { at } => Some(Pending {
            at,
            attempt: run.attempt + 1,
        }),
        _ => None,
    }
}

/// What to do at a run's start instant.
#[derive(Debug, PartialEq)]
pub enum StartDecision {
    Start,
    /// Record these events instead of (or, for Replace, before) starting.
    Events(Vec<RunEvent>, bool),
}

/// Decides, at `now`, whether attempt `attempt` of `run` starts, given the
/// schedule's current spec and its other runs.
pub fn at_start(s: &ScheduleRecord, run: &RunRecord, now: Millis) -> StartDecision {
    let r = RunRef {
        uid: s.uid.clone(),
        run_id: run.run_id.clone(),
    };
    let first = run.phase == Phase::Claimed;
    if first && s.spec.suspend {
        return StartDecision::Events(
            vec![RunEvent::Skipped {
                run: r,
                at: now,
                reason: SkipReason::Suspended,
            }],
            false,
        );
    }
    if first
        && s.spec
            .starting_deadline_ms()
            .is_some_and(|d| now - run.instant > d)
    {
        return StartDecision::Events(vec![RunEvent::Missed { run: r, at: now }], false);
    }
    if !first {
        return StartDecision::Start;
    }
    let others: Vec<&RunRecord> = s
        .active
        .iter()
        .filter(|o| o.run_id != run.run_id && o.phase.is_active())
        .collect();
    if others.is_empty() {
        return StartDecision::Start;
    }
    match s.spec.concurrency_policy {
        ConcurrencyPolicy::Allow => StartDecision::Start,
        ConcurrencyPolicy::Forbid => StartDecision::Events(
            vec![RunEvent::Skipped {
                run: r,
                at: now,
                reason: SkipReason::ConcurrencyForbid,
            }],
            false,
        ),
        ConcurrencyPolicy::Replace => StartDecision::Events(
            others
                .iter()
                .map(|o| RunEvent::Replaced {
                    run: RunRef {
                        uid: s.uid.clone(),
                        run_id: o.run_id.clone(),
                    },
                    at: now,
                })
                .collect(),
            true,
        ),
    }
}

/// A new leader's decisions about runs the previous leaders left behind.
///
/// The old leader starts a fire only while its lease holds, and a new leader
/// is elected only after that lease ran out, so a claimed fire whose instant
/// is at or after `takeover - max_skew` was certainly not started. An
/// earlier one may have been started without the start reaching the log:
/// its attempt is written off (`Lost`, not counted against `maxAttempts`)
/// and it runs again as the next attempt. A recorded start without a result
/// is `Lost` and retried per policy.
pub fn takeover(
    s: &ScheduleRecord,
    term: u64,
    takeover: Millis,
    max_skew: Millis,
) -> Vec<RunEvent> {
    let mut events = Vec::new();
    for run in &s.active {
        let r = RunRef {
            uid: s.uid.clone(),
            run_id: run.run_id.clone(),
        };
        match run.phase {
            Phase::Running if run.term < term => {
                events.push(RunEvent::Lost {
                    run: r,
                    attempt: run.attempt,
                    at: takeover,
                    started: true,
                });
            }
            Phase::Claimed if run.claimed_term < term && run.instant < takeover - max_skew => {
                events.push(RunEvent::Lost {
                    run: r,
                    attempt: run.attempt + 1,
                    at: takeover,
                    started: false,
                });
            }
            // A retry due before the takeover may have been started by the old leader too.
            Phase::RetryPending { at } if at < takeover - max_skew && run.term < term => {
                events.push(RunEvent::Lost {
                    run: r,
                    attempt: run.attempt + 1,
                    at: takeover,
                    started: false,
                });
            }
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests;
