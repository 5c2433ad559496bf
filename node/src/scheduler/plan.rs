//! Pure scheduling decisions: which fires to claim, what to do at a start
//! instant, and what a new leader does with runs left by the previous one.
//! No clock, no IO: the fire loop passes `now` in and executes the result.

use raftcron_crds::schedule::Schedule;
use raftcron_crds::{ConcurrencyPolicy, MissedRunPolicy};

use crate::sm::runs::{Phase, RunKind, RunRecord};
use crate::sm::{
    Disposition, FireClaim, Millis, MissReason, RunEvent, RunRef, ScheduleRecord, SkipReason,
};

/// Knobs of the planner.
#[derive(Clone, Copy, Debug)]
pub struct PlanSettings {
    /// Claim fires this far ahead of their instant.
    pub lookahead_ms: Millis,
    /// The catch-up window: a takeover that ends an outage longer than this
    /// treats the fires due during it as missed ([`outage_evidence`]), and a
    /// fire claimed later than this after its instant (held back under
    /// overload) counts as missed too; both follow `missedRunPolicy`.
    pub catch_up_ms: Millis,
    /// Most instants considered per schedule per planning pass (RunAll after
    /// a long outage continues on the next pass; nothing is dropped).
    pub max_instants: usize,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            lookahead_ms: 1000,
            catch_up_ms: 5_000,
            max_instants: 10_000,
        }
    }
}

/// The fires to claim for one schedule, in instant order: every instant in
/// `(claimed_through, now + lookahead]`, each to run or, compressed into
/// ranges, recorded as missed.
///
/// An instant was missed during downtime (and follows `missedRunPolicy`)
/// when it came due before `downtime_until`, the takeover that ended an
/// outage longer than the catch-up window (see [`outage_evidence`]), or when
/// it is claimed more than the catch-up window late (claims held back under
/// overload).
pub fn claims(
    s: &ScheduleRecord,
    schedule: &Schedule,
    now: Millis,
    set: &PlanSettings,
    downtime_until: Option<Millis>,
) -> Vec<FireClaim> {
    if s.spec.suspend {
        return Vec::new();
    }
    let horizon = match s.app_job.as_ref().and_then(|j| j.expires) {
        // Nothing after a job's ttl.
        Some(expires) => (now + set.lookahead_ms).min(expires),
        None => now + set.lookahead_ms,
    };
    let instants = schedule.fires_between(s.claimed_through, horizon, set.max_instants);
    // `repeats`: instants claimed to run; misses do not use them up.
    let mut runs_left = s.spec.repeats.map(|r| u64::from(r).saturating_sub(s.fired));
    let deadline = s.spec.starting_deadline_ms();
    let downtime: Vec<bool> = instants
        .iter()
        .map(|&i| downtime_until.is_some_and(|t| i < t) || now - i > set.catch_up_ms)
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
        if run && runs_left == Some(0) {
            break; // complete: this instant and the later ones stay unclaimed
        }
        if run {
            if let Some(left) = runs_left.as_mut() {
                *left -= 1;
            }
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
    next_instant(s, schedule, s.claimed_through)
}

/// The schedule's next instant after `after` it has left to fire,
/// suspended or not: none once its repeats are used up, past its ttl, or
/// when it never fires again.
pub fn next_instant(s: &ScheduleRecord, schedule: &Schedule, after: Millis) -> Option<Millis> {
    if s.spec.repeats.is_some_and(|r| s.fired >= u64::from(r)) {
        return None;
    }
    let next = schedule.next_after(after)?;
    match s.app_job.as_ref().and_then(|j| j.expires) {
        Some(expires) if next > expires => None,
        _ => Some(next),
    }
}

/// Why a schedule is complete, or `None` while it has more to do: no
/// instant left to fire (repeats used up, its one dueTime fired, past its
/// ttl, or an expression that never fires again) and no run still going.
pub fn completion(s: &ScheduleRecord, schedule: &Schedule, now: Millis) -> Option<&'static str> {
    if !s.active.is_empty() || next_instant(s, schedule, s.claimed_through).is_some() {
        return None;
    }
    // Past the ttl, or nothing left to fire before it.
    let expired = s.app_job.as_ref().and_then(|j| j.expires).is_some_and(|e| {
        now >= e
            || schedule
                .next_after(s.claimed_through)
                .is_some_and(|n| n > e)
    });
    Some(if s.spec.repeats.is_some_and(|r| s.fired >= u64::from(r)) {
        "its repeats are used up"
    } else if expired {
        "its ttl passed"
    } else if s.spec.schedule.trim().is_empty() {
        "its dueTime fired"
    } else {
        "its schedule fires no more"
    })
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
    // Not only a claimed run: one written off at a takeover (maybe started
    // by the old leader, but never recorded as started) has not started
    // either, and its deadline holds.
    if run.first_start.is_none()
        && s.spec
            .starting_deadline_ms()
            .is_some_and(|d| now - run.instant > d)
    {
        return StartDecision::Events(
            vec![RunEvent::Missed {
                run: r,
                at: now,
                reason: MissReason::Deadline,
            }],
            false,
        );
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

/// What a new leader knows when it settles its predecessors' runs.
#[derive(Clone, Copy, Debug)]
pub struct Takeover {
    /// The new leader's term.
    pub term: u64,
    /// When it took over (its clock).
    pub at: Millis,
    /// `--max-clock-skew`.
    pub max_skew: Millis,
    /// Set when the takeover ends an outage longer than the catch-up
    /// window ([`outage_evidence`]): fires due before it were missed during
    /// downtime. `None` after an ordinary failover.
    pub downtime_until: Option<Millis>,
}

/// How long, at least, no leader could claim `s`'s fires before a takeover
/// at `at`: the time since its first unclaimed instant.
///
/// A live leader claims every instant a look-ahead before it comes due, so
/// an instant still unclaimed at the takeover came due while no leader
/// could write (a failover: well under a second; a whole-cluster stop: its
/// whole length). The longest such gap over all schedules is the outage the
/// new leader ends. Claimed fires are no evidence (a leader was alive when
/// it claimed them), nor are suspended schedules (nothing is claimed for
/// them) or schedules held back under overload ([`behind`]: their claims
/// were late on purpose).
pub fn outage_evidence(s: &ScheduleRecord, next_unclaimed: Option<Millis>, at: Millis) -> Millis {
    if s.spec.suspend || behind(s, at, |_| false) {
        return 0;
    }
    next_unclaimed.filter(|n| *n < at).map_or(0, |n| at - n)
}

/// A new leader's decisions about runs the previous leaders left behind.
///
/// The old leader starts a fire only while its lease holds, and a new leader
/// is elected only after that lease ran out, so a claimed fire whose instant
/// is at or after `at - max_skew` was certainly not started. An earlier one
/// may have been started without the start reaching the log: its attempt is
/// written off (`Lost`, not counted against `maxAttempts`) and it runs again
/// as the next attempt. A recorded start without a result is `Lost` and
/// retried per policy.
///
/// A claimed fire that never started obeys the same rules as a fire claimed
/// late: past `startingDeadlineSeconds` it is `Missed`; due during an outage
/// (`downtime_until`) it follows `missedRunPolicy` (a whole-cluster stop
/// right after a claim left such fires behind, and they ran late whatever
/// the policy or deadline said). `next_unclaimed` is the schedule's first
/// instant after `claimed_through`: under `RunOnce`, the one run after
/// downtime is the newest missed instant, whether claimed before the stop or
/// not.
pub fn takeover(s: &ScheduleRecord, next_unclaimed: Option<Millis>, t: &Takeover) -> Vec<RunEvent> {
    let mut events = Vec::new();
    let deadline = s.spec.starting_deadline_ms();
    let downtime = |instant: Millis| t.downtime_until.is_some_and(|until| instant < until);
    // The newest unstarted scheduled fire missed during downtime, unless the
    // claims that follow will run a newer one (RunOnce).
    let run_once = match s.spec.missed_run_policy {
        MissedRunPolicy::RunOnce if !next_unclaimed.is_some_and(downtime) => s
            .active
            .iter()
            .filter(|r| {
                r.phase == Phase::Claimed && r.kind == RunKind::Scheduled && downtime(r.instant)
            })
            .map(|r| r.instant)
            .max(),
        _ => None,
    };
    for run in &s.active {
        let r = RunRef {
            uid: s.uid.clone(),
            run_id: run.run_id.clone(),
        };
        match run.phase {
            Phase::Running if run.term < t.term => {
                events.push(RunEvent::Lost {
                    run: r,
                    attempt: run.attempt,
                    at: t.at,
                    started: true,
                });
            }
            Phase::Claimed if run.claimed_term < t.term && run.instant < t.at - t.max_skew => {
                let past_deadline = deadline.is_some_and(|d| t.at - run.instant > d);
                let missed_in_downtime = run.kind == RunKind::Scheduled
                    && downtime(run.instant)
                    && match s.spec.missed_run_policy {
                        MissedRunPolicy::RunAll => false,
                        MissedRunPolicy::Skip => true,
                        MissedRunPolicy::RunOnce => run_once != Some(run.instant),
                    };
                events.push(if past_deadline {
                    RunEvent::Missed {
                        run: r,
                        at: t.at,
                        reason: MissReason::Deadline,
                    }
                } else if missed_in_downtime {
                    RunEvent::Missed {
                        run: r,
                        at: t.at,
                        reason: MissReason::Downtime,
                    }
                } else {
                    RunEvent::Lost {
                        run: r,
                        attempt: run.attempt + 1,
                        at: t.at,
                        started: false,
                    }
                });
            }
            // A retry due before the takeover may have been started by the old leader too.
            Phase::RetryPending { at } if at < t.at - t.max_skew && run.term < t.term => {
                events.push(RunEvent::Lost {
                    run: r,
                    attempt: run.attempt + 1,
                    at: t.at,
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
