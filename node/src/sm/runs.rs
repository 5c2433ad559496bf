//! Runs: one per claimed fire, moved through its phases by [`RunEvent`]s.
//!
//! ```text
//!   Claimed ──Started──► Running ──Finished(ok)──────────────► Succeeded
//!      │                  │  ▲  └─Finished(fail)/Lost ─► RetryPending ─Started─┐
//!      │                  │  └──────────────────────────────────────────────────┘
//!      ├─Missed/Skipped   └─Finished(fail)/Lost, no attempts left ──► Failed / TimedOut / Lost
//!      └─Replaced (also from Running / RetryPending)
//! ```

use serde::{Deserialize, Serialize};

use super::command::{AttemptOutcome, Millis, MissReason, SkipReason};

/// How a run came to be.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    Scheduled,
    Manual,
}

/// Where a run is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Claimed, waiting for its instant (or for a leader to start it).
    Claimed,
    /// The latest attempt is executing.
    Running,
    /// The latest attempt failed; the next starts at `at`.
    RetryPending { at: Millis },
    /// Finished.
    Done(FinalResult),
}

/// The end of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalResult {
    Succeeded,
    Failed,
    TimedOut,
    Lost,
    Missed,
    Skipped,
    Replaced,
}

impl FinalResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalResult::Succeeded => "Succeeded",
            FinalResult::Failed => "Failed",
            FinalResult::TimedOut => "TimedOut",
            FinalResult::Lost => "Lost",
            FinalResult::Missed => "Missed",
            FinalResult::Skipped => "Skipped",
            FinalResult::Replaced => "Replaced",
        }
    }

    /// Which history list keeps it (`successfulRunsHistoryLimit` or the failed one).
    pub fn is_success(self) -> bool {
        self == FinalResult::Succeeded
    }

    pub fn from_outcome(outcome: AttemptOutcome) -> Self {
        match outcome {
            AttemptOutcome::Succeeded => FinalResult::Succeeded,
            AttemptOutcome::Failed => FinalResult::Failed,
            AttemptOutcome::TimedOut => FinalResult::TimedOut,
            AttemptOutcome::Lost => FinalResult::Lost,
        }
    }
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Claimed => "Claimed",
            Phase::Running => "Running",
            Phase::RetryPending { .. } => "RetryPending",
            Phase::Done(r) => r.as_str(),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Phase::Done(_))
    }

    /// Counts for `concurrencyPolicy`: an attempt is executing or will be retried.
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Running | Phase::RetryPending { .. })
    }
}

/// One run of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    /// The scheduled instant (the trigger time for manual runs).
    pub instant: Millis,
    pub kind: RunKind,
    pub phase: Phase,
    /// Number of the latest attempt; 0 before the first. Attempt numbers are
    /// never reused, so (run id, attempt) identifies one execution.
    pub attempt: u32,
    /// Attempts that count against `maxAttempts`: those whose start was
    /// recorded. An attempt lost before its start was recorded may never have
    /// run and does not count.
    pub counted_attempts: u32,
    /// Term of the leader that claimed the fire.
    pub claimed_term: u64,
    /// Term and node of the latest attempt.
    pub term: u64,
    pub node: u64,
    /// `app` actions: the pod that ran the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub first_start: Option<Millis>,
    pub start: Option<Millis>,
    pub end: Option<Millis>,
    pub message: Option<String>,
}

impl RunRecord {
    pub fn new(run_id: String, instant: Millis, kind: RunKind, term: u64) -> Self {
        Self {
            run_id,
            instant,
            kind,
            phase: Phase::Claimed,
            attempt: 0,
            counted_attempts: 0,
            claimed_term: term,
            term: 0,
            node: 0,
            pod: None,
            first_start: None,
            start: None,
            end: None,
            message: None,
        }
    }

    /// Milliseconds from the instant to the start of the first attempt.
    pub fn lateness_ms(&self) -> Option<i64> {
        self.first_start.map(|s| s - self.instant)
    }

    pub fn finish(&mut self, result: FinalResult, at: Millis, message: Option<String>) {
        self.phase = Phase::Done(result);
        self.end = Some(at);
        if message.is_some() {
            self.message = message;
        }
    }
}

/// Why an event did not apply; kept for tests and debug logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    AlreadyDone,
    StaleAttempt,
    WrongPhase,
}

/// What a run transition changed, for counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    Started,
    Retry,
    Finished(FinalResult),
    /// An unrecorded attempt was written off; the run waits for a new attempt.
    WrittenOff,
}

/// The delay before attempt `next_attempt` (2, 3, …) of a run.
///
/// Jitter is derived from the run id and attempt, not drawn from a random
/// source, so every replica computes the same retry time from the same log.
pub fn retry_delay_ms(
    policy: &raftcron_crds::RetryPolicy,
    run_id: &str,
    next_attempt: u32,
) -> Millis {
    let exponent = next_attempt.saturating_sub(2).min(64) as i32;
    let base = policy.initial_backoff_seconds * policy.multiplier.powi(exponent);
    let capped = base.min(policy.max_backoff_seconds).max(0.0);
    let unit = (stable_hash(run_id, next_attempt) as f64 / u64::MAX as f64) * 2.0 - 1.0; // [-1, 1]
    let jittered = capped * (1.0 + policy.jitter * unit);
    (jittered.max(0.0) * 1000.0).round() as Millis
}

/// FNV-1a: stable across platforms and releases, unlike `DefaultHasher`.
fn stable_hash(s: &str, n: u32) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes().iter().chain(n.to_le_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Applies `Started`.
pub fn start(
    run: &mut RunRecord,
    attempt: u32,
    at: Millis,
    term: u64,
    node: u64,
    pod: Option<String>,
) -> Result<Effect, Refused> {
    match run.phase {
        Phase::Done(_) => return Err(Refused::AlreadyDone),
        Phase::Claimed | Phase::RetryPending { .. } | Phase::Running => {}
    }
    if attempt <= run.attempt {
        return Err(Refused::StaleAttempt);
    }
    run.phase = Phase::Running;
    run.attempt = attempt;
    run.counted_attempts += 1;
    run.term = term;
    run.node = node;
    run.pod = pod;
    run.start = Some(at);
    run.first_start.get_or_insert(at);
    Ok(Effect::Started)
}

/// Applies `Finished` (or a recorded-start `Lost`, as `outcome = None`).
pub fn finish_attempt(
    run: &mut RunRecord,
    attempt: u32,
    outcome: Option<AttemptOutcome>,
    at: Millis,
    message: Option<String>,
    policy: &raftcron_crds::RetryPolicy,
) -> Result<Effect, Refused> {
    if run.phase.is_done() {
        return Err(Refused::AlreadyDone);
    }
    if run.phase != Phase::Running {
        return Err(Refused::WrongPhase);
    }
    if attempt != run.attempt {
        return Err(Refused::StaleAttempt);
    }
    let result = match outcome {
        Some(o) => FinalResult::from_outcome(o),
        None => FinalResult::Lost,
    };
    run.message = message;
    if result == FinalResult::Succeeded {
        run.finish(result, at, None);
        return Ok(Effect::Finished(result));
    }
    if run.counted_attempts < policy.max_attempts {
        let delay = retry_delay_ms(policy, &run.run_id, run.attempt + 1);
        run.phase = Phase::RetryPending { at: at + delay };
        run.end = None;
        return Ok(Effect::Retry);
    }
    run.finish(result, at, None);
    Ok(Effect::Finished(result))
}

/// Applies a `Lost` whose start was never recorded: the attempt number is
/// burned and the run waits for its next attempt, now.
pub fn write_off(run: &mut RunRecord, attempt: u32, at: Millis) -> Result<Effect, Refused> {
    match run.phase {
        Phase::Done(_) => return Err(Refused::AlreadyDone),
        Phase::Running => return Err(Refused::WrongPhase),
        Phase::Claimed | Phase::RetryPending { .. } => {}
    }
    if attempt <= run.attempt {
        return Err(Refused::StaleAttempt);
    }
    run.attempt = attempt;
    run.phase = Phase::RetryPending { at };
    run.message = Some(format!(
        "attempt {attempt} may have started on a leader that lost leadership before recording it"
    ));
    Ok(Effect::WrittenOff)
}

/// Why a run ends without (another) attempt, for its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrun {
    Missed(MissReason),
    Skipped(SkipReason),
    Replaced,
}

/// Applies `Missed`, `Skipped` or `Replaced`.
pub fn end_unrun(run: &mut RunRecord, why: Unrun, at: Millis) -> Result<Effect, Refused> {
    if run.phase.is_done() {
        return Err(Refused::AlreadyDone);
    }
    let allowed = match why {
        Unrun::Missed(_) => matches!(run.phase, Phase::Claimed | Phase::RetryPending { .. }),
        Unrun::Skipped(_) => run.phase == Phase::Claimed,
        Unrun::Replaced => true,
    };
    if !allowed {
        return Err(Refused::WrongPhase);
    }
    let (result, message) = match why {
        Unrun::Skipped(SkipReason::ConcurrencyForbid) => (
            FinalResult::Skipped,
            "a previous run was active (concurrencyPolicy: Forbid)",
        ),
        Unrun::Skipped(SkipReason::Suspended) => {
            (FinalResult::Skipped, "the schedule was suspended")
        }
        Unrun::Missed(MissReason::Deadline) => (
            FinalResult::Missed,
            "not started within startingDeadlineSeconds",
        ),
        Unrun::Missed(MissReason::Downtime) => (
            FinalResult::Missed,
            "due while the cluster was down; missedRunPolicy says not to run it",
        ),
        Unrun::Missed(MissReason::NoReplica { ref app }) => {
            let message = format!(
                "no replica of app {app} was attached (or had room) within the starting deadline"
            );
            run.finish(FinalResult::Missed, at, Some(message));
            return Ok(Effect::Finished(FinalResult::Missed));
        }
        Unrun::Replaced => (
            FinalResult::Replaced,
            "replaced by a newer run (concurrencyPolicy: Replace)",
        ),
    };
    run.finish(result, at, Some(message.to_string()));
    Ok(Effect::Finished(result))
}
