//! Prometheus metrics of a node, one registry per node (several nodes share a
//! process in `raftcron-node local` and in tests). Names follow
//! `raftcron_node_<what>_<unit>`; labels are bounded, never object names.
//!
//! Every labelled series is created at start with every value its label can
//! take, so `rate()` and `increase()` see the first event of each (a series
//! that appears at 1 has no earlier sample to rise from).

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Totals: `GET /v1/attachments` on the HTTP port lists them per app and
    /// pod (pod names change with every rollout, too many for labels).
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
    /// Jobs of app code in the replicated state, by namespace and app;
    /// refreshed at each scrape ([`Metrics::count_app_jobs`]).
    pub app_jobs: IntGaugeVec,
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
            app_jobs: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "raftcron_node_app_jobs",
                        "Jobs of app code (created through a sidecar) in this node's replicated state, by namespace and app",
                    ),
                    &["namespace", "app"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
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
    /// Sets `raftcron_node_app_jobs` from the state: one series per app
    /// that has jobs (an app's series goes when its last job does). The
    /// label set is bounded by the apps, as a Deployment's metrics are.
    pub fn count_app_jobs<'a>(&self, schedules: impl Iterator<Item = &'a ScheduleRecord>) {
        let mut counts: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        for s in schedules.filter(|s| s.app_job.is_some()) {
            if let Some(app) = &s.spec.action.app {
                *counts
                    .entry((s.namespace.as_str(), app.name.as_str()))
                    .or_default() += 1;
            }
        }
        self.app_jobs.reset();
        for ((namespace, app), n) in counts {
            self.app_jobs.with_label_values(&[namespace, app]).set(n);
        }
    }

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
mod tests;
