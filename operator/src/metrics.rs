//! Operator metrics: reconcile duration and errors by category.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub is_leader: IntGauge,
    pub cluster_reconciles: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "raftcron_operator_reconcile_duration_seconds",
                "ScheduledJob reconcile duration",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("buckets")),
        )
        .expect("metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "raftcron_operator_reconcile_errors_total",
                "Failed ScheduledJob reconciles, by category",
            ),
            &["category"],
        )
        .expect("metric");
        let is_leader = IntGauge::new(
            "raftcron_operator_is_leader",
            "1 while this replica holds the Lease",
        )
        .expect("metric");
        let cluster_reconciles = IntCounterVec::new(
            Opts::new(
                "raftcron_operator_cluster_reconciles_total",
                "Node cluster reconciles, by result",
            ),
            &["result"],
        )
        .expect("metric");
        for m in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(is_leader.clone()),
            Box::new(cluster_reconciles.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            cluster_reconciles,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}
