//! Prometheus metrics of a node, one registry per node (several nodes share a
//! process in `raftcron-node local` and in tests). Names follow
//! `raftcron_node_<what>_<unit>`; labels are bounded, never object names.
//!
//! Every labelled series is created at start with every value its label can
//! take, so `rate()` and `increase()` see the first event of each (a series
//! that appears at 1 has no earlier sample to rise from).

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::raft::types::RaftMetrics;
use crate::sm::runs::{self, Effect, FinalResult, RunRecord};
use crate::sm::{RunEvent, ScheduleRecord};

/// Every run result, the `result` values of `raftcron_node_runs_total`.
pub const RUN_RESULTS: [FinalResult; 7] = [
    FinalResult::Succeeded,
    FinalResult::Failed,
    FinalResult::TimedOut,
    FinalResult::Lost,
    FinalResult::Missed,
    FinalResult::Skipped,
    FinalResult::Replaced,
];

/// How an attempt can end, the `result` values of `raftcron_node_attempts_total`.
pub const ATTEMPT_RESULTS: [FinalResult; 4] = [
    FinalResult::Succeeded,
    FinalResult::Failed,
    FinalResult::TimedOut,
    FinalResult::Lost,
];

/// The `method` values of the gRPC metrics: every method of the scheduler
/// API (`api/mod.rs`; a test checks the list against it).
pub const GRPC_METHODS: [&str; 11] = [
    "Upsert",
    "UpsertBatch",
    "Delete",
    "List",
    "SetSuspend",
    "Trigger",
    "Runs",
    "Status",
    "AddMember",
    "RemoveMember",
    "TransferLeader",
];

/// Every gRPC status code, the `code` values of the request counter.
const GRPC_CODES: [tonic::Code; 17] = {
    use tonic::Code::*;
    [
        Ok,
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ]
};

/// What one run event adds to the run and attempt counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The attempt's result, when the event ends an attempt that ran.
    pub attempt: Option<FinalResult>,
    /// The run's final result, when the event ends the run.
    pub run: Option<FinalResult>,
}

/// What `e` will count once applied, given the schedule as applied before it.
///
/// Whether a failed attempt ends its run or goes on to a retry is the state
/// machine's decision, so it is made here by the state machine's own
/// transition ([`runs::finish_attempt`]) on a copy of the run: a run counts
/// once, by its final result, however many attempts it took. A `Finished`
/// for an attempt whose `Started` is not applied yet (the recorder submits
/// both in order, the result can come back first) is judged as if that
/// `Started` had applied. An event the state machine will refuse counts no run.
pub fn tally(s: Option<&ScheduleRecord>, e: &RunEvent) -> Tally {
    let run = s.and_then(|s| s.active.iter().find(|r| r.run_id == e.run().run_id));
    let ended = |result| Tally {
        attempt: None,
        run: run.map(|_| result),
    };
    match e {
        RunEvent::Started { .. } | RunEvent::Lost { started: false, .. } => Tally::default(),
        RunEvent::Finished {
            attempt,
            outcome,
            at,
            ..
        } => Tally {
            attempt: Some(FinalResult::from_outcome(*outcome)),
            run: s
                .zip(run)
                .and_then(|(s, r)| attempt_end(s, r, *attempt, Some(*outcome), *at)),
        },
        RunEvent::Lost { attempt, at, .. } => match s.zip(run) {
            Some((s, r)) if r.phase == runs::Phase::Running && r.attempt == *attempt => Tally {
                attempt: Some(FinalResult::Lost),
                run: attempt_end(s, r, *attempt, None, *at),
            },
            _ => Tally::default(),
        },
        RunEvent::Missed { .. } => ended(FinalResult::Missed),
        RunEvent::Skipped { .. } => ended(FinalResult::Skipped),
        RunEvent::Replaced { .. } => ended(FinalResult::Replaced),
    }
}

/// The run's final result if the end of `attempt` ends it; `None` when it
/// retries or the state machine would refuse the event.
fn attempt_end(
    s: &ScheduleRecord,
    run: &RunRecord,
    attempt: u32,
    outcome: Option<crate::sm::AttemptOutcome>,
    at: crate::sm::Millis,
) -> Option<FinalResult> {
    let mut r = run.clone();
    if r.attempt < attempt {
        runs::start(&mut r, attempt, at, 0, 0, None).ok()?;
    }
    match runs::finish_attempt(&mut r, attempt, outcome, at, None, &s.spec.retry_policy()) {
        Ok(Effect::Finished(result)) => Some(result),
        _ => None,
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub term: IntGauge,
    pub is_leader: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub last_log_index: IntGauge,
    pub schedules: IntGauge,
    pub grpc_requests: IntCounterVec,
    pub grpc_latency: HistogramVec,
    /// Instant → action start, seconds.
    pub fire_lateness: Histogram,
    /// Runs by their final result, counted once each.
    pub runs: IntCounterVec,
    /// Attempts by their result: a run that succeeds at attempt 3 adds two
    /// `Failed` (or `TimedOut`, `Lost`) and one `Succeeded`.
    pub attempts: IntCounterVec,
    pub active_runs: IntGauge,
    pub retries: IntCounter,
    /// Claim passes that held a schedule back because it was behind.
    pub claims_held: IntCounter,
    /// Status writes to ScheduledJobs, by result (ok | error | gone).
    pub status_patches: IntCounterVec,
    /// Schedules whose status waits to be written (queued or backing off).
    pub status_pending: IntGauge,
    /// App replicas attached to this node (the leader), and apps they are of.
    /// Totals, not per app: an app name is an object name, unbounded as a
    /// label; `GET /v1/attachments` on the HTTP port lists them per app.
    pub attached_replicas: IntGauge,
    pub attached_apps: IntGauge,
    /// `app` attempts by how they ended at the replica.
    pub dispatches: IntCounterVec,
    /// Instant → request sent to the app by its sidecar (the sidecar's clock).
    pub app_lateness: Histogram,
    /// How long `app` deliveries waited for a free replica (all busy).
    pub app_wait: Histogram,
    /// Leases of app code in the replicated state (`sm::leases`).
    pub leases_held: IntGauge,
    /// Lease grants by this node as leader, by [`LEASE_GRANTS`] kind.
    pub lease_grants: IntCounterVec,
    /// Lease requests refused because another pod held the key (409).
    pub lease_refusals: IntCounter,
    /// Tenures ended, by [`LEASE_ENDS`] reason.
    pub lease_ends: IntCounterVec,
}

/// Values of `raftcron_node_lease_grants_total{kind}`: a free key, a key
/// whose previous grant had expired, a renewal by the holder.
pub const LEASE_GRANTS: [&str; 3] = ["new", "takeover", "renewal"];
/// Values of `raftcron_node_lease_ends_total{reason}`: released by the
/// holder, expired (taken over or swept), the holder's sidecar shut down.
pub const LEASE_ENDS: [&str; 3] = ["released", "expired", "shutdown"];

/// Values of `raftcron_node_dispatches_total{result}`.
pub const DISPATCH_RESULTS: [&str; 5] = ["SUCCEEDED", "FAILED", "TIMED_OUT", "REFUSED", "LOST"];

/// Bucket bounds of the lateness histogram, seconds: fine around the
/// millisecond scale the 5 ms p99 target is judged at (a bound at exactly
/// 5 ms), coarse beyond, up to a minute (failovers, catch-up).
const LATENESS_BUCKETS: [f64; 32] = [
    0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.050, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0, 30.0, 60.0,
];

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// A counter with one label, every value of it present from the start.
fn counter_vec<const N: usize>(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    pub fn new(node_id: u64) -> Self {
        let registry = Registry::new_custom(
            None,
            Some([("node".to_string(), node_id.to_string())].into()),
        )
        .expect("valid registry");
        let r = &registry;
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "raftcron_node_grpc_requests_total",
                "gRPC requests served, by method and status code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        r.register(Box::new(grpc_requests.clone()))
            .expect("unique metric");
        let grpc_latency = HistogramVec::new(
            HistogramOpts::new(
                "raftcron_node_grpc_request_duration_seconds",
                "gRPC request latency, by method",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["method"],
        )
        .expect("valid metric");
        r.register(Box::new(grpc_latency.clone()))
            .expect("unique metric");
        let fire_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "raftcron_node_fire_lateness_seconds",
                "Time from a fire's scheduled instant to the start of its first attempt",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(fire_lateness.clone()))
            .expect("unique metric");
        let runs = counter_vec(
            r,
            "raftcron_node_runs_total",
            "Runs ended while this node led, once each, by final result (a run that succeeds on a retry is Succeeded)",
            "result",
            RUN_RESULTS.map(FinalResult::as_str),
        );
        let attempts = counter_vec(
            r,
            "raftcron_node_attempts_total",
            "Attempts ended while this node led, by result (Succeeded, Failed, TimedOut, Lost)",
            "result",
            ATTEMPT_RESULTS.map(FinalResult::as_str),
        );
        let retries = counter(
            r,
            "raftcron_node_retries_total",
            "Attempts started as retries",
        );
        let claims_held = counter(
            r,
            "raftcron_node_claims_held_total",
            "Claim passes that held a schedule back because runs of it already due were still waiting to start or for their result to be applied (the leader is overloaded)",
        );
        let status_patches = counter_vec(
            r,
            "raftcron_node_status_patches_total",
            "ScheduledJob status writes by the leader, by result (ok, error, gone)",
            "result",
            ["ok", "error", "gone"],
        );
        let dispatches = counter_vec(
            r,
            "raftcron_node_dispatches_total",
            "app attempts dispatched to attached replicas, by how they ended (LOST: the replica detached first)",
            "result",
            DISPATCH_RESULTS,
        );
        let app_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "raftcron_node_app_lateness_seconds",
                "Time from an app attempt's scheduled instant to its request leaving the replica's sidecar for the app",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(app_lateness.clone()))
            .expect("unique metric");
        let app_wait = Histogram::with_opts(
            HistogramOpts::new(
                "raftcron_node_app_wait_seconds",
                "Time app deliveries waited for a free replica (every replica of the app at capacity), for those that had to wait",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(app_wait.clone()))
            .expect("unique metric");
        let lease_grants = counter_vec(
            r,
            "raftcron_node_lease_grants_total",
            "Leases of app code granted by this node as leader, by kind (new, takeover: the previous grant had expired, renewal)",
            "kind",
            LEASE_GRANTS,
        );
        let lease_ends = counter_vec(
            r,
            "raftcron_node_lease_ends_total",
            "Lease tenures ended while this node led, by reason (released, expired, shutdown: the holder's sidecar stopped)",
            "reason",
            LEASE_ENDS,
        );
        for method in GRPC_METHODS {
            grpc_latency.with_label_values(&[method]);
            for code in GRPC_CODES {
                grpc_requests.with_label_values(&[method, code_name(code)]);
            }
        }
        Self {
            term: gauge(r, "raftcron_node_raft_term", "Current Raft term"),
            is_leader: gauge(
                r,
                "raftcron_node_raft_is_leader",
                "1 when this node is the leader",
            ),
            commit_index: gauge(
                r,
                "raftcron_node_raft_commit_index",
                "Highest committed log index",
            ),
            applied_index: gauge(
                r,
                "raftcron_node_raft_applied_index",
                "Highest applied log index",
            ),
            last_log_index: gauge(
                r,
                "raftcron_node_raft_last_log_index",
                "Last log index stored",
            ),
            schedules: gauge(
                r,
                "raftcron_node_schedules",
                "Schedules in the replicated state",
            ),
            active_runs: gauge(
                r,
                "raftcron_node_active_runs",
                "Attempts executing on this node",
            ),
            status_pending: gauge(
                r,
                "raftcron_node_status_pending",
                "ScheduledJob statuses waiting to be written (queued or backing off)",
            ),
            attached_replicas: gauge(
                r,
                "raftcron_node_attached_replicas",
                "App replicas (sidecars) attached to this node",
            ),
            attached_apps: gauge(
                r,
                "raftcron_node_attached_apps",
                "Apps with at least one replica attached to this node",
            ),
            dispatches,
            app_lateness,
            app_wait,
            leases_held: gauge(
                r,
                "raftcron_node_leases",
                "Leases of app code held (in this node's replicated state)",
            ),
            lease_grants,
            lease_refusals: counter(
                r,
                "raftcron_node_lease_refusals_total",
                "Lease acquisitions refused by this node as leader because another pod held the key",
            ),
            lease_ends,
            status_patches,
            grpc_requests,
            grpc_latency,
            fire_lateness,
            runs,
            attempts,
            retries,
            claims_held,
            registry,
        }
    }

    /// Updates the attachment gauges.
    pub fn attached(&self, registry: &crate::attach::Registry) {
        let counts = registry.counts();
        self.attached_apps.set(counts.len() as i64);
        self.attached_replicas
            .set(counts.iter().map(|(_, n)| *n as i64).sum());
    }

    /// Counts one dispatched attempt's end (a [`DISPATCH_RESULTS`] value).
    pub fn dispatched(&self, result: &str) {
        self.dispatches.with_label_values(&[result]).inc();
    }

    pub fn lease_granted(&self, how: crate::sm::leases::Grant) {
        use crate::sm::leases::Grant;
        let kind = match how {
            Grant::New => "new",
            Grant::TakenOver => "takeover",
            Grant::Renewed => "renewal",
        };
        self.lease_grants.with_label_values(&[kind]).inc();
    }

    pub fn lease_refused(&self) {
        self.lease_refusals.inc();
    }

    /// Counts `n` tenures ended for `reason` (a [`LEASE_ENDS`] value).
    pub fn lease_ended(&self, reason: &str, n: u64) {
        self.lease_ends.with_label_values(&[reason]).inc_by(n);
    }

    /// Updates the Raft gauges from openraft's metrics.
    pub fn observe_raft(&self, m: &RaftMetrics) {
        self.term.set(m.current_term as i64);
        self.is_leader
            .set(i64::from(m.current_leader == Some(m.id)));
        self.commit_index
            .set(m.local_committed.as_ref().map_or(0, |l| l.index as i64));
        self.applied_index
            .set(m.last_applied.as_ref().map_or(0, |l| l.index as i64));
        self.last_log_index
            .set(m.last_log_index.map_or(0, |i| i as i64));
    }

    /// Counts what one run event did (see [`tally`]).
    pub fn count(&self, t: Tally) {
        if let Some(r) = t.attempt {
            self.attempts.with_label_values(&[r.as_str()]).inc();
        }
        if let Some(r) = t.run {
            self.runs.with_label_values(&[r.as_str()]).inc();
        }
    }

    /// Counts the tallies of a `Record` entry's events that applied, by its
    /// response (`Response::Record`: per event, whether it changed the run).
    pub fn count_applied(&self, tallies: &[Tally], applied: &[bool]) {
        for (t, ok) in tallies.iter().zip(applied) {
            if *ok {
                self.count(*t);
            }
        }
    }

    /// Records one gRPC request.
    pub fn observe_grpc(&self, method: &'static str, started: Instant, code: tonic::Code) {
        self.grpc_requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.grpc_latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::{
        AttemptOutcome, Command, Disposition, FireClaim, Millis, Response, RunRef, State,
        UpsertSchedule,
    };

    const T0: Millis = 1_800_000_000_000;
    const UID: &str = "u1";

    fn state(max_attempts: u32) -> State {
        let spec = serde_json::from_value(serde_json::json!({
            "schedule": "* * * * * *",
            "action": {"http": {"url": "http://127.0.0.1:9/"}},
            "startingDeadlineSeconds": 600,
            "retry": {"maxAttempts": max_attempts, "initialBackoffSeconds": 0, "jitter": 0.0},
            "successfulRunsHistoryLimit": 100000,
            "failedRunsHistoryLimit": 100000,
        }))
        .unwrap();
        let mut st = State::default();
        st.apply(&Command::Upsert {
            items: vec![UpsertSchedule {
                namespace: "ns".into(),
                name: "job".into(),
                uid: UID.into(),
                generation: 1,
                spec,
                kubernetes: false,
                app_job: None,
            }],
            now: T0 - 10_000,
        });
        st
    }

    fn claim(st: &mut State, instant: Millis) -> RunRef {
        let r = st.apply(&Command::Claim {
            term: 1,
            node: 1,
            now: instant - 100,
            fires: vec![FireClaim {
                uid: UID.into(),
                instant,
                disposition: Disposition::Run,
            }],
        });
        assert_eq!(r, Response::Claim(vec![crate::sm::ClaimOutcome::Claimed]));
        RunRef {
            uid: UID.into(),
            run_id: raftcron_crds::names::run_id(UID, instant),
        }
    }

    fn active(st: &State, run: &RunRef) -> bool {
        let s = st.get_by_uid(UID).unwrap();
        s.active.iter().any(|r| r.run_id == run.run_id)
    }

    fn final_phase(st: &State, run: &RunRef) -> Option<FinalResult> {
        st.get_by_uid(UID)
            .unwrap()
            .history
            .iter()
            .find(|r| r.run_id == run.run_id)
            .and_then(|r| match r.phase {
                runs::Phase::Done(res) => Some(res),
                _ => None,
            })
    }

    /// Tallies `e` against the state before it, applies it, and checks the
    /// tally said exactly what the state machine did to the run.
    fn apply(st: &mut State, m: &Metrics, term: u64, e: RunEvent) {
        let t = tally(st.get_by_uid(UID), &e);
        apply_tallied(st, m, term, e, t);
    }

    fn apply_tallied(st: &mut State, m: &Metrics, term: u64, e: RunEvent, t: Tally) {
        let run = e.run().clone();
        let was_active = active(st, &run);
        let r = st.apply(&Command::Record {
            term,
            node: 1,
            events: vec![e.clone()],
        });
        assert_eq!(r, Response::Record(vec![true]), "{e:?} refused");
        let ended = was_active && !active(st, &run);
        assert_eq!(
            t.run,
            ended.then(|| final_phase(st, &run).unwrap()),
            "{e:?}"
        );
        m.count(t);
    }

    fn get(v: &IntCounterVec, label: &str) -> u64 {
        v.with_label_values(&[label]).get()
    }

    fn started(run: &RunRef, attempt: u32, at: Millis) -> RunEvent {
        RunEvent::Started {
            run: run.clone(),
            attempt,
            at,
            pod: None,
        }
    }

    fn finished(run: &RunRef, attempt: u32, outcome: AttemptOutcome, at: Millis) -> RunEvent {
        RunEvent::Finished {
            run: run.clone(),
            attempt,
            outcome,
            at,
            message: None,
        }
    }

    #[test]
    fn a_run_that_succeeds_at_attempt_3_counts_once_as_succeeded() {
        let m = Metrics::new(1);
        for n in 0..4 {
            let mut st = state(3);
            let at = T0 + n * 1000;
            let run = claim(&mut st, at);
            for (attempt, outcome) in [
                (1, AttemptOutcome::Failed),
                (2, AttemptOutcome::Failed),
                (3, AttemptOutcome::Succeeded),
            ] {
                apply(&mut st, &m, 1, started(&run, attempt, at));
                apply(&mut st, &m, 1, finished(&run, attempt, outcome, at + 5));
            }
        }
        // The case: 4 runs, each Succeeded at attempt 3, showed Failed 8.
        assert_eq!(get(&m.runs, "Succeeded"), 4);
        assert_eq!(get(&m.runs, "Failed"), 0);
        assert_eq!(get(&m.attempts, "Failed"), 8);
        assert_eq!(get(&m.attempts, "Succeeded"), 4);
    }

    #[test]
    fn a_result_that_arrives_before_its_start_is_applied_is_judged_after_that_start() {
        // The leader tallies a Finished when the action returns; its Started
        // may still be in flight. Attempt 2 of 2 failing ends the run Failed.
        let m = Metrics::new(1);
        let mut st = state(2);
        let run = claim(&mut st, T0);
        let s1 = started(&run, 1, T0);
        let f1 = finished(&run, 1, AttemptOutcome::TimedOut, T0 + 5);
        let t = tally(st.get_by_uid(UID), &f1);
        apply(&mut st, &m, 1, s1);
        apply_tallied(&mut st, &m, 1, f1, t);
        let f2 = finished(&run, 2, AttemptOutcome::Failed, T0 + 10);
        let t = tally(st.get_by_uid(UID), &f2);
        assert_eq!(t.run, Some(FinalResult::Failed));
        apply(&mut st, &m, 1, started(&run, 2, T0 + 6));
        apply_tallied(&mut st, &m, 1, f2, t);
        assert_eq!(get(&m.runs, "Failed"), 1);
        assert_eq!(get(&m.runs, "TimedOut"), 0);
        assert_eq!(get(&m.attempts, "TimedOut"), 1);
        assert_eq!(get(&m.attempts, "Failed"), 1);
    }

    #[test]
    fn last_attempts_end_runs_timed_out_or_lost_and_earlier_ones_retry() {
        let m = Metrics::new(1);
        let mut st = state(2);
        let a = claim(&mut st, T0);
        apply(&mut st, &m, 1, started(&a, 1, T0));
        apply(
            &mut st,
            &m,
            1,
            finished(&a, 1, AttemptOutcome::TimedOut, T0 + 5),
        );
        apply(&mut st, &m, 1, started(&a, 2, T0 + 6));
        apply(
            &mut st,
            &m,
            1,
            finished(&a, 2, AttemptOutcome::TimedOut, T0 + 9),
        );
        // Lost twice: by a leader that died mid-attempt, and again.
        let b = claim(&mut st, T0 + 1000);
        for (term, attempt) in [(2, 1), (3, 2)] {
            apply(&mut st, &m, term - 1, started(&b, attempt, T0 + 1000));
            let lost = RunEvent::Lost {
                run: b.clone(),
                attempt,
                at: T0 + 1500,
                started: true,
            };
            apply(&mut st, &m, term, lost);
        }
        // Written off (its start never recorded): no attempt, no run counted.
        let c = claim(&mut st, T0 + 2000);
        let off = RunEvent::Lost {
            run: c.clone(),
            attempt: 1,
            at: T0 + 2500,
            started: false,
        };
        assert_eq!(tally(st.get_by_uid(UID), &off), Tally::default());
        apply(&mut st, &m, 2, off);
        apply(
            &mut st,
            &m,
            2,
            RunEvent::Replaced {
                run: c,
                at: T0 + 2600,
            },
        );
        assert_eq!(get(&m.runs, "TimedOut"), 1);
        assert_eq!(get(&m.runs, "Lost"), 1);
        assert_eq!(get(&m.runs, "Replaced"), 1);
        assert_eq!(get(&m.attempts, "TimedOut"), 2);
        assert_eq!(get(&m.attempts, "Lost"), 2);
        let total: u64 = RUN_RESULTS.iter().map(|r| get(&m.runs, r.as_str())).sum();
        assert_eq!(total, 3);
    }

    #[test]
    fn an_event_the_state_machine_will_refuse_counts_no_run() {
        let st = state(3);
        let ghost = RunRef {
            uid: UID.into(),
            run_id: "never-claimed".into(),
        };
        let t = tally(
            st.get_by_uid(UID),
            &finished(&ghost, 1, AttemptOutcome::Failed, T0),
        );
        // The attempt ran (its action returned), the run is not this state's.
        assert_eq!(t.attempt, Some(FinalResult::Failed));
        assert_eq!(t.run, None);
        assert_eq!(tally(None, &missed(&ghost, T0)), Tally::default());
    }

    /// `Missed` through serde: its fields other than run and time default.
    fn missed(run: &RunRef, at: Millis) -> RunEvent {
        serde_json::from_value(serde_json::json!({"Missed": {"run": run, "at": at}})).unwrap()
    }

    /// splitmix64: a seed names one history.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    #[test]
    fn seeded_histories_count_every_run_once_by_the_result_the_state_machine_gives_it() {
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let max_attempts = 1 + rng.below(4) as u32;
            let mut st = state(max_attempts);
            let m = Metrics::new(1);
            let runs = 1 + rng.below(12) as i64;
            let mut term = 1;
            for k in 0..runs {
                let at = T0 + k * 1000;
                let run = claim(&mut st, at);
                match rng.below(10) {
                    0 => apply(&mut st, &m, term, missed(&run, at + 1)),
                    1 => {
                        let skip = RunEvent::Skipped {
                            run: run.clone(),
                            at,
                            reason: crate::sm::SkipReason::ConcurrencyForbid,
                        };
                        apply(&mut st, &m, term, skip)
                    }
                    _ => {}
                }
                let mut attempt = 1;
                while active(&st, &run) {
                    if rng.below(12) == 0 {
                        apply(
                            &mut st,
                            &m,
                            term,
                            RunEvent::Replaced {
                                run: run.clone(),
                                at,
                            },
                        );
                        break;
                    }
                    let s = started(&run, attempt, at);
                    let end = match rng.below(4) {
                        0 => {
                            term += 1;
                            RunEvent::Lost {
                                run: run.clone(),
                                attempt,
                                at,
                                started: true,
                            }
                        }
                        o => {
                            let outcome = [
                                AttemptOutcome::Succeeded,
                                AttemptOutcome::Failed,
                                AttemptOutcome::TimedOut,
                            ][o as usize - 1];
                            finished(&run, attempt, outcome, at + 1)
                        }
                    };
                    let early = matches!(end, RunEvent::Finished { .. }) && rng.below(2) == 0;
                    if early {
                        // The action returned before its Started applied.
                        let t = tally(st.get_by_uid(UID), &end);
                        apply(&mut st, &m, term, s);
                        apply_tallied(&mut st, &m, term, end, t);
                    } else {
                        apply(&mut st, &m, term, s);
                        apply(&mut st, &m, term, end);
                    }
                    attempt += 1;
                }
            }
            let sched = st.get_by_uid(UID).unwrap();
            assert!(sched.active.is_empty());
            for r in RUN_RESULTS {
                let ended = sched
                    .history
                    .iter()
                    .filter(|h| h.phase == runs::Phase::Done(r))
                    .count() as u64;
                assert_eq!(get(&m.runs, r.as_str()), ended, "seed {seed}: {r:?}");
            }
            let c = &sched.counters;
            assert_eq!(get(&m.runs, "Succeeded"), c.succeeded, "seed {seed}");
            assert_eq!(get(&m.runs, "Failed"), c.failed, "seed {seed}");
            assert_eq!(get(&m.runs, "TimedOut"), c.timed_out, "seed {seed}");
            // The state machine's lost counter counts attempts.
            assert_eq!(get(&m.attempts, "Lost"), c.lost, "seed {seed}");
            let attempts: u64 = ATTEMPT_RESULTS
                .iter()
                .map(|r| get(&m.attempts, r.as_str()))
                .sum();
            let by_attempt: u64 = ATTEMPT_RESULTS
                .iter()
                .map(|r| get(&m.runs, r.as_str()))
                .sum();
            assert_eq!(attempts - by_attempt, c.retries, "seed {seed}");
        }
    }

    /// Fails to compile when a result is added and not listed.
    fn listed(r: FinalResult) -> bool {
        use FinalResult::*;
        match r {
            Succeeded | Failed | TimedOut | Lost | Missed | Skipped | Replaced => {
                RUN_RESULTS.contains(&r)
            }
        }
    }

    #[test]
    fn a_fresh_registry_shows_every_label_value_at_zero() {
        let text = Metrics::new(7).render();
        // name → label sets (sorted "k=\"v\"" pairs) of the samples at 0.
        let mut zeros: std::collections::BTreeSet<(String, Vec<String>)> = Default::default();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let mut labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            labels.sort();
            if value == "0" {
                zeros.insert((name.to_string(), labels));
            }
        }
        let zero = |name: &str, labels: &[(&str, &str)]| {
            let mut want: Vec<String> = labels
                .iter()
                .chain([&("node", "7")])
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            want.sort();
            assert!(
                zeros.contains(&(name.to_string(), want.clone())),
                "{name}{want:?} missing or not 0 in\n{text}"
            );
        };
        for r in RUN_RESULTS {
            assert!(listed(r));
            zero("raftcron_node_runs_total", &[("result", r.as_str())]);
        }
        for r in ATTEMPT_RESULTS {
            zero("raftcron_node_attempts_total", &[("result", r.as_str())]);
        }
        for r in ["ok", "error", "gone"] {
            zero("raftcron_node_status_patches_total", &[("result", r)]);
        }
        for r in DISPATCH_RESULTS {
            zero("raftcron_node_dispatches_total", &[("result", r)]);
        }
        for k in LEASE_GRANTS {
            zero("raftcron_node_lease_grants_total", &[("kind", k)]);
        }
        for r in LEASE_ENDS {
            zero("raftcron_node_lease_ends_total", &[("reason", r)]);
        }
        for method in GRPC_METHODS {
            for code in GRPC_CODES {
                zero(
                    "raftcron_node_grpc_requests_total",
                    &[("method", method), ("code", code_name(code))],
                );
            }
            zero(
                "raftcron_node_grpc_request_duration_seconds_count",
                &[("method", method)],
            );
        }
        // No other labelled counter: each one needs its values listed above.
        let labelled: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(','))
            .filter_map(|l| l.split('{').next())
            .filter(|n| n.ends_with("_total"))
            .collect();
        assert_eq!(
            labelled.into_iter().collect::<Vec<_>>(),
            [
                "raftcron_node_attempts_total",
                "raftcron_node_dispatches_total",
                "raftcron_node_grpc_requests_total",
                "raftcron_node_lease_ends_total",
                "raftcron_node_lease_grants_total",
                "raftcron_node_runs_total",
                "raftcron_node_status_patches_total",
            ]
        );
    }

    #[test]
    fn the_grpc_method_list_is_every_method_the_api_observes() {
        let src = include_str!("api/mod.rs");
        let used: std::collections::BTreeSet<&str> = src
            .split("self.observe(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        let listed: std::collections::BTreeSet<&str> = GRPC_METHODS.into_iter().collect();
        assert_eq!(used, listed);
    }
}
