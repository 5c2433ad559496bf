//! Names shared by node, operator and the actions they run: the finalizer,
//! field managers, condition types and reasons, label keys, run results, the
//! run id and the headers and environment variables an action receives.
//!
//! ```text
//!  (schedule uid, instant ms) ──run_id()──► "<uid>-20261122T013000.000Z"
//!                                              │
//!            HTTP: Raftcron-Run-Id ◄───────────┼──────────► exec: RAFTCRON_RUN_ID
//! ```
//!
//! A string that appears in two crates is defined here, once.

use chrono::{DateTime, SecondsFormat, Utc};

/// `apiVersion` of the ScheduledJob resource (the `#[kube]` attribute in
/// `types.rs` derives the same; a test holds the two together).
pub const API_VERSION: &str = "raftcron.dev/v1alpha1";
/// `kind` of the resource.
pub const KIND: &str = "ScheduledJob";

/// The namespace of a ScheduledJob applied without one (from a file, or a
/// bare `NAME` given to raftcronctl), as kubectl does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `namespace`, or [`DEFAULT_NAMESPACE`] when it is unset or empty.
pub fn namespace_or_default(namespace: Option<&str>) -> &str {
    match namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

/// The operator's finalizer: the schedule leaves the scheduler cluster
/// before the object leaves the API server.
pub const FINALIZER: &str = "raftcron.dev/finalizer";

/// Server-side-apply field manager for what the operator writes
/// (finalizer, `status.conditions`, `status.observedGeneration`).
pub const FIELD_MANAGER_OPERATOR: &str = "raftcron-operator";
/// Server-side-apply field manager for what the scheduler leader writes
/// (every run field of the status).
pub const FIELD_MANAGER_NODE: &str = "raftcron-node";

/// Condition type: the spec is valid and the schedule is registered in the
/// scheduler cluster.
pub const READY: &str = "Ready";
/// Condition type: a one-shot fired, or a bounded schedule used its
/// `repeats`; nothing more will run. Written by the scheduler leader (its
/// own field manager; `conditions` is a list map keyed by type).
pub const COMPLETE: &str = "Complete";

/// `reason` values of the `Ready` condition.
pub mod reason {
    /// Ready=True: the schedule is registered in the scheduler cluster.
    pub const REGISTERED: &str = "Registered";
    /// Ready=False: the spec failed validation; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready=False: the scheduler cluster could not be reached or has no leader.
    pub const SCHEDULER_UNAVAILABLE: &str = "SchedulerUnavailable";
    /// Ready=False: the object is being deleted and the schedule removed.
    pub const DELETING: &str = "Deleting";
    /// Ready=False: an exec action, but the nodes run with exec actions disabled.
    pub const EXEC_DISABLED: &str = "ExecDisabled";
}

/// `reason` values of the Warning Events the scheduler leader emits on a
/// ScheduledJob for each run that ends badly.
pub mod event {
    pub const RUN_FAILED: &str = "RunFailed";
    pub const RUN_TIMED_OUT: &str = "RunTimedOut";
    pub const RUN_LOST: &str = "RunLost";
    pub const RUN_MISSED: &str = "RunMissed";
}

/// Recommended Kubernetes label keys, on everything the operator creates.
pub mod label {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

    /// Value of [`NAME`].
    pub const APP: &str = "raftcron";
    /// Value of [`COMPONENT`] on the scheduler StatefulSet and its Services.
    pub const COMPONENT_NODE: &str = "node";
    /// Value of [`COMPONENT`] on the operator Deployment.
    pub const COMPONENT_OPERATOR: &str = "operator";
    /// Value of [`MANAGED_BY`].
    pub const MANAGER: &str = "raftcron-operator";

    /// On each Job a `job` action creates: the ScheduledJob it was created for.
    pub const SCHEDULEDJOB: &str = "raftcron.dev/scheduledjob";
    /// On each such Job: the attempt it runs.
    pub const ATTEMPT: &str = "raftcron.dev/attempt";

    /// `"true"` on a pod: the operator's webhook injects the sidecar
    /// (`raftcron-node sidecar`) into it when it is created.
    pub const INJECT: &str = "raftcron.dev/inject";
}

/// Annotation keys.
pub mod annotation {
    /// On each Job a `job` action creates: the run id (which need not fit a
    /// label value).
    pub const RUN_ID: &str = "raftcron.dev/run-id";

    /// On an injected pod: the app the sidecar attaches for (default: the
    /// pod's `app.kubernetes.io/name` label).
    pub const APP: &str = "raftcron.dev/app";
    /// On an injected pod: the port the app listens on, on loopback (default 8080).
    pub const APP_PORT: &str = "raftcron.dev/app-port";
    /// On an injected pod: the most deliveries its sidecar takes at once.
    pub const CAPACITY: &str = "raftcron.dev/capacity";
    /// Set by the webhook on every pod labelled for injection:
    /// `injected`, or `skipped: <reason>`.
    pub const INJECT_STATUS: &str = "raftcron.dev/inject-status";
}

/// The audience of the projected ServiceAccount token a sidecar presents
/// when it attaches (the operator's webhook projects it, the leader checks it
/// with a TokenReview).
pub const SIDECAR_TOKEN_AUDIENCE: &str = "raftcron";

/// `result` values of a run (`RunSummary.result`).
pub mod result {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const TIMED_OUT: &str = "TimedOut";
    /// The leader that started it died before recording a result.
    pub const LOST: &str = "Lost";
    /// Not started within `startingDeadlineSeconds`, or skipped after downtime.
    pub const MISSED: &str = "Missed";
    /// Not started because of `concurrencyPolicy: Forbid` or `suspend`.
    pub const SKIPPED: &str = "Skipped";
    /// Cancelled by a newer fire under `concurrencyPolicy: Replace`.
    pub const REPLACED: &str = "Replaced";
}

/// Headers every HTTP action request carries. Header names are reserved:
/// validation refuses a user header starting with [`header::RESERVED_PREFIX`].
pub mod header {
    pub const RUN_ID: &str = "Raftcron-Run-Id";
    pub const ATTEMPT: &str = "Raftcron-Attempt";
    /// RFC 3339, UTC, with milliseconds (see [`super::rfc3339_ms`]).
    pub const SCHEDULED_TIME: &str = "Raftcron-Scheduled-Time";
    /// The Raft term of the leader that started the attempt: a fencing token.
    pub const TERM: &str = "Raftcron-Term";
    /// `app` actions: the pod whose sidecar called the app.
    pub const POD: &str = "Raftcron-Pod";
    /// Compared case-insensitively, as HTTP header names are.
    pub const RESERVED_PREFIX: &str = "Raftcron-";
}

/// Environment variables every exec action process gets, with the same
/// values as the headers in [`header`].
pub mod env {
    pub const RUN_ID: &str = "RAFTCRON_RUN_ID";
    pub const ATTEMPT: &str = "RAFTCRON_ATTEMPT";
    pub const SCHEDULED_TIME: &str = "RAFTCRON_SCHEDULED_TIME";
    pub const TERM: &str = "RAFTCRON_TERM";
    /// Validation refuses user variables with this prefix.
    pub const RESERVED_PREFIX: &str = "RAFTCRON_";
}

/// The run id of a fire: the schedule uid and the scheduled instant in UTC,
/// `<uid>-YYYYMMDDTHHMMSS.mmmZ`, for example
/// `6a1f…-20261122T013000.000Z`.
///
/// Every node derives the same id for the same fire, and distinct fires get
/// distinct ids (the instant part has a fixed width). With a Kubernetes uid
/// (36 characters) the id is 56 characters of `[A-Za-z0-9.-]`, so it also
/// fits a label value. An instant outside the years 0–9999 is written as
/// `<uid>-<ms>ms`, which cannot collide with the usual form.
pub fn run_id(schedule_uid: &str, instant_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(instant_ms) {
        Some(at) if (0..=9999).contains(&chrono::Datelike::year(&at)) => {
            format!("{schedule_uid}-{}", at.format("%Y%m%dT%H%M%S%.3fZ"))
        }
        _ => format!("{schedule_uid}-{instant_ms}ms"),
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T01:30:00.000Z`: the
/// `Raftcron-Scheduled-Time` header and the status time fields.
///
/// An instant chrono cannot represent (beyond ±262,000 years) is written as
/// plain milliseconds rather than as a wrong date.
pub fn rfc3339_ms(instant_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(instant_ms) {
        Some(at) => at.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => instant_ms.to_string(),
    }
}

/// Reads an RFC 3339 time (any offset, any fraction) back as milliseconds
/// since the epoch, truncating below the millisecond: the inverse of
/// [`rfc3339_ms`], for status fields read back by the node and operator.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_version_and_kind_are_those_the_resource_derives() {
        use kube::Resource;
        assert_eq!(super::API_VERSION, crate::ScheduledJob::api_version(&()));
        assert_eq!(super::KIND, crate::ScheduledJob::kind(&()));
    }

    #[test]
    fn an_unset_or_empty_namespace_is_default() {
        assert_eq!(super::namespace_or_default(None), "default");
        assert_eq!(super::namespace_or_default(Some("")), "default");
        assert_eq!(super::namespace_or_default(Some("billing")), "billing");
    }

    use super::*;

    const UID: &str = "6a1f3c2e-9b1d-4f7e-8a2b-0c5d7e9f1a3b";

    #[test]
    fn run_id_names_the_uid_and_the_instant_with_milliseconds() {
        assert_eq!(
            run_id(UID, 1_795_311_000_000),
            format!("{UID}-20261122T013000.000Z")
        );
        assert_eq!(run_id("u", 1_795_311_000_250), "u-20261122T013000.250Z");
    }

    #[test]
    fn run_id_is_the_same_for_the_same_fire_and_differs_between_fires() {
        assert_eq!(run_id(UID, 1_000), run_id(UID, 1_000));
        assert_ne!(run_id(UID, 1_000), run_id(UID, 1_001));
        assert_ne!(run_id(UID, 1_000), run_id("other-uid", 1_000));
    }

    #[test]
    fn run_id_of_a_kubernetes_uid_fits_a_label_value() {
        let id = run_id(UID, 1_795_311_000_000);
        assert!(id.len() <= 63, "{id} is {} characters", id.len());
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        );
        assert!(id.starts_with(|c: char| c.is_ascii_alphanumeric()));
        assert!(id.ends_with(|c: char| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn run_id_of_an_instant_outside_four_digit_years_stays_distinct() {
        let far = run_id(UID, i64::MAX);
        assert_eq!(far, format!("{UID}-{}ms", i64::MAX));
        assert_ne!(run_id(UID, -1), run_id(UID, 1));
        assert_eq!(run_id("u", -1), "u-19691231T235959.999Z");
    }

    #[test]
    fn rfc3339_ms_is_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_795_311_000_000), "2026-11-22T01:30:00.000Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(i64::MIN), i64::MIN.to_string());
    }

    #[test]
    fn parse_rfc3339_ms_reads_back_what_rfc3339_ms_writes() {
        for ms in [0, 1, -1, 1_795_311_000_123, 253_402_300_799_999] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T02:30:00+01:00"),
            Some(1_795_311_000_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn header_and_environment_names_match_the_documented_contract() {
        assert_eq!(
            [
                header::RUN_ID,
                header::ATTEMPT,
                header::SCHEDULED_TIME,
                header::TERM
            ],
            [
                "Raftcron-Run-Id",
                "Raftcron-Attempt",
                "Raftcron-Scheduled-Time",
                "Raftcron-Term"
            ]
        );
        assert_eq!(
            [env::RUN_ID, env::ATTEMPT, env::SCHEDULED_TIME, env::TERM],
            [
                "RAFTCRON_RUN_ID",
                "RAFTCRON_ATTEMPT",
                "RAFTCRON_SCHEDULED_TIME",
                "RAFTCRON_TERM"
            ]
        );
        for name in [
            header::RUN_ID,
            header::ATTEMPT,
            header::SCHEDULED_TIME,
            header::TERM,
        ] {
            assert!(name.starts_with(header::RESERVED_PREFIX));
        }
        for name in [env::RUN_ID, env::ATTEMPT, env::SCHEDULED_TIME, env::TERM] {
            assert!(name.starts_with(env::RESERVED_PREFIX));
        }
    }
}
