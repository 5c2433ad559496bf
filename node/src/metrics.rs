//! Prometheus metrics of a node, one registry per node (several nodes share a
//! process in `raftcron-node local` and in tests). Names follow
//! `raftcron_node_<what>_<unit>`; labels are bounded, never object names.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::raft::types::RaftMetrics;

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
    pub runs: IntCounterVec,
    pub active_runs: IntGauge,
    pub retries: IntCounter,
    /// Claim passes that held a schedule back because it was behind.
    pub claims_held: IntCounter,
    /// Status writes to ScheduledJobs, by result (ok | error | gone).
    pub status_patches: IntCounterVec,
    /// Schedules whose status waits to be written (queued or backing off).
    pub status_pending: IntGauge,
}

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
        let runs = IntCounterVec::new(
            Opts::new(
                "raftcron_node_runs_total",
                "Runs finished on this node while leader, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(runs.clone())).expect("unique metric");
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
        let status_patches = IntCounterVec::new(
            Opts::new(
                "raftcron_node_status_patches_total",
                "ScheduledJob status writes by the leader, by result (ok, error, gone)",
            ),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(status_patches.clone()))
            .expect("unique metric");
        // Present from the start, so dashboards and alerts see zeros rather than nothing.
        for result in ["ok", "error", "gone"] {
            status_patches.with_label_values(&[result]);
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
            status_patches,
            grpc_requests,
            grpc_latency,
            fire_lateness,
            runs,
            retries,
            claims_held,
            registry,
        }
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
