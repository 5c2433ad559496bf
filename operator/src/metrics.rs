//! Operator metrics: reconcile duration and errors by category, and the
//! sidecar injection webhook's admissions and certificate.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub is_leader: IntGauge,
    pub cluster_reconciles: IntCounterVec,
    /// Pod admissions by outcome: injected, skipped, untouched, invalid.
    pub webhook_admissions: IntCounterVec,
    /// Unix time the serving certificate this replica serves expires.
    pub webhook_cert_expiry: IntGauge,
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
        let webhook_admissions = IntCounterVec::new(
            Opts::new(
                "raftcron_operator_webhook_admissions_total",
                "Pod admissions seen by the sidecar injection webhook, by outcome",
            ),
            &["outcome"],
        )
        .expect("metric");
        for outcome in ["injected", "skipped", "untouched", "invalid"] {
            webhook_admissions.with_label_values(&[outcome]);
        }
        let webhook_cert_expiry = IntGauge::new(
            "raftcron_operator_webhook_certificate_expiry_timestamp_seconds",
            "When the webhook serving certificate of this replica expires (Unix seconds; 0: none loaded)",
        )
        .expect("metric");
        for m in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(is_leader.clone()),
            Box::new(cluster_reconciles.clone()),
            Box::new(webhook_admissions.clone()),
            Box::new(webhook_cert_expiry.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            cluster_reconciles,
            webhook_admissions,
            webhook_cert_expiry,
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
