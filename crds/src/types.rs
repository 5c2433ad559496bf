//! The `ScheduledJob` resource (`raftcron.dev/v1alpha1`): spec, status and the
//! run summaries the node writes back.
//!
//! The same types are read by `kubectl apply` (through the generated CRD), by
//! `raftcron-node local` (from YAML files) and by the node's gRPC API (as JSON),
//! so defaults live here, in serde, and nowhere else.

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;

/// A schedule plus an action, fired exactly once per scheduled instant by the
/// raftcron scheduler cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Every printcolumn(...) names its own type_; clippy reads the repeats as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "raftcron.dev",
    version = "v1alpha1",
    kind = "ScheduledJob",
    namespaced,
    status = "ScheduledJobStatus",
    shortname = "sj",
    category = "raftcron",
    doc = "A ScheduledJob fires its action at every instant of its schedule, exactly once per instant, from a replicated raftcron scheduler cluster.",
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "The cron expression"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether new runs are suspended"
    ),
    printcolumn(
        name = "Last Result",
        type_ = "string",
        json_path = ".status.lastRun.result",
        description = "Result of the most recent finished run"
    ),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "Scheduled time of the most recent run"
    ),
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "Next instant the schedule fires (RFC 3339)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since the ScheduledJob was created"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
#[x_kube(validation = Rule::new("self.schedule != '' || has(self.dueTime)").message("one of schedule and dueTime must be set"))]
pub struct ScheduledJobSpec {
    /// When to fire. Five fields (minute granularity, `m h dom mon dow`), six
    /// fields (seconds first, `s m h dom mon dow`), a nickname (`@yearly`,
    /// `@monthly`, `@weekly`, `@daily`, `@hourly`) or `@every <duration>`
    /// (for example `@every 30s`, `@every 1h30m`; instants are aligned to the
    /// Unix epoch, so every node computes the same ones). Fields mean what
    /// they mean in a Kubernetes CronJob (`3/9`, `*/1`, `?`, names);
    /// raftcron's docs/cron.md lists the differences. Empty (or left out)
    /// with `dueTime`: a one-shot.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub schedule: String,

    /// Fire first at this instant (RFC 3339, for example
    /// `2026-12-24T18:00:00Z`). Without a `schedule` the job fires once, then
    /// it is complete; with one, the schedule's instants after it follow. A
    /// one-shot created after its dueTime fires at once (subject to
    /// `startingDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub due_time: Option<String>,

    /// Fire at most this many instants; then the job is complete (no next
    /// run; a `Complete` condition in the status). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub repeats: Option<u32>,

    /// IANA time zone the cron fields are read in (for example
    /// `Europe/Berlin`). Default `UTC`. In the spring-forward gap a fixed-time
    /// schedule (one value each in the second, minute and hour fields) fires
    /// at the first instant after the gap; in the repeated fall-back hour it
    /// fires once, at the first pass. Other schedules fire at every real
    /// instant that matches: not in the gap, in both passes of the repeated
    /// hour. `@every` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Suspend new runs. Runs already started continue. Fires that come due
    /// while suspended are skipped, not caught up on resume.
    #[serde(default)]
    pub suspend: bool,

    /// What to do when a fire comes due while a previous run of this job is
    /// still active: `Allow` runs both, `Forbid` records the new fire as
    /// Skipped, `Replace` cancels the active run and starts the new one.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// A fire that has not started this many seconds after its scheduled
    /// instant is recorded as Missed instead of started late. Unset means no
    /// deadline: a late fire always starts (subject to `missedRunPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,

    /// After the cluster was down across scheduled instants: `Skip` drops them,
    /// `RunOnce` runs the latest one once, `RunAll` runs every one of them in
    /// order. There is no hidden cap on how many are counted.
    #[serde(default)]
    pub missed_run_policy: MissedRunPolicy,

    /// An attempt still running after this many seconds is stopped and
    /// recorded as TimedOut. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<i64>,

    /// Retries of a failed, timed-out or lost attempt, with exponential
    /// backoff and jitter. Without it each run has one attempt.
    // Boxed: 48 bytes inline in every spec held in memory, most without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<RetryPolicy>>,

    /// The action to run at each fire: exactly one of `http`, `exec`, `job`.
    pub action: Action,

    /// How many successful runs to keep in `status.recentRuns`. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: Option<u32>,

    /// How many failed (or missed, lost, timed-out) runs to keep in
    /// `status.recentRuns`. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: Option<u32>,
}

/// Default attempt timeout when `timeoutSeconds` is unset.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// Default `successfulRunsHistoryLimit` and `failedRunsHistoryLimit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 3;

impl ScheduledJobSpec {
    /// The attempt timeout in milliseconds, with the default applied.
    pub fn timeout_ms(&self) -> i64 {
        self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS) * 1000
    }

    /// `dueTime` in milliseconds since the epoch, if set and valid.
    pub fn due_ms(&self) -> Option<i64> {
        self.due_time
            .as_deref()
            .and_then(crate::names::parse_rfc3339_ms)
    }

    /// `startingDeadlineSeconds` in milliseconds, if set.
    pub fn starting_deadline_ms(&self) -> Option<i64> {
        self.starting_deadline_seconds.map(|s| s * 1000)
    }

    /// The retry policy with defaults applied (one attempt when unset).
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.as_deref().cloned().unwrap_or(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
    }

    pub fn successful_history_limit(&self) -> u32 {
        self.successful_runs_history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    pub fn failed_history_limit(&self) -> u32 {
        self.failed_runs_history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    }
}

/// What to do with a fire that comes due while a run is active.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConcurrencyPolicy {
    /// Run concurrently with the active run.
    #[default]
    Allow,
    /// Record the new fire as Skipped.
    Forbid,
    /// Cancel the active run and start the new one.
    Replace,
}

/// What to do with instants that passed while no leader could fire them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MissedRunPolicy {
    /// Record them as Missed and wait for the next instant.
    Skip,
    /// Run the most recent one once; record the others as Missed.
    #[default]
    RunOnce,
    /// Run all of them, oldest first.
    RunAll,
}

/// Retry policy for failed, timed-out or lost attempts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts per run, the first included. Default 3.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// Delay before the second attempt, in seconds. Default 1.
    #[serde(default = "default_initial_backoff")]
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub initial_backoff_seconds: f64,
    /// Upper bound of the delay between attempts, in seconds. Default 60.
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub max_backoff_seconds: f64,
    /// Factor the delay grows by after each attempt. Default 2.0.
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub multiplier: f64,
    /// Fraction of the delay added or removed at random (0.1 = ±10 %). Default 0.1.
    #[serde(default = "default_jitter")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub jitter: f64,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> f64 {
    1.0
}
fn default_max_backoff() -> f64 {
    60.0
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.1
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_seconds: default_initial_backoff(),
            max_backoff_seconds: default_max_backoff(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

/// The action of a ScheduledJob: exactly one of `http`, `exec`, `job`, `app`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.http), has(self.exec), has(self.job), has(self.app)].filter(x, x).size() == 1").message("exactly one of action.http, action.exec, action.job, action.app must be set"))]
pub struct Action {
    /// Call an HTTP endpoint.
    // The variants are boxed: a spec carries one of them, and inline all
    // four made every spec in memory 280 bytes larger (1,000,000 schedules
    // are held on every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<HttpAction>>,
    /// Run a command inside the scheduler node's container. Refused unless
    /// the node runs with exec actions enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Box<ExecAction>>,
    /// Create a Kubernetes Job from a template in the ScheduledJob's namespace,
    /// as CronJob does, and follow it to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobAction>,
    /// Call one replica of an app through its raftcron sidecar: each attempt
    /// goes to exactly one attached replica, which calls its app on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Box<AppAction>>,
}

/// Call one replica of an app (pods with a raftcron sidecar, in the
/// ScheduledJob's namespace). The sidecar sends the request to its app on
/// loopback with the `Raftcron-*` headers and `Raftcron-Pod`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppAction {
    /// The app: its sidecars attach with this name (the pods' `raftcron.dev/app`
    /// annotation, or their `app.kubernetes.io/name` label).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Path (and query) on the app, starting with `/`. Default `/`.
    #[serde(default = "default_app_path")]
    #[schemars(length(min = 1, max = 2048))]
    pub path: String,
    /// HTTP method. Default POST.
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// Request headers, literal values only (the app has its own secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub headers: Vec<HttpHeader>,
    /// Request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// Status codes counted as success. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub success_codes: Vec<u16>,
    /// Which replica takes an attempt: `LeastActive` (default; fewest
    /// deliveries in flight) or `RoundRobin`.
    #[serde(default)]
    pub placement: Placement,
    /// When every replica of the app is at capacity, waiting deliveries go
    /// out `High` first, then `Normal` (default), then `Low`, oldest first
    /// within a priority; a delivery that has waited long is promoted, so
    /// `Low` still runs under sustained `High` load.
    #[serde(default)]
    pub priority: Priority,
}

/// The order in which deliveries waiting for a free replica go out.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

fn default_app_path() -> String {
    "/".to_string()
}

/// How an `app` action's attempt picks its replica.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The replica with the fewest deliveries in flight.
    #[default]
    LeastActive,
    /// The replicas in turn.
    RoundRobin,
}

/// Call an HTTP endpoint. The request carries `Raftcron-Run-Id`,
/// `Raftcron-Attempt`, `Raftcron-Scheduled-Time` and `Raftcron-Term` headers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpAction {
    /// Absolute `http://` or `https://` URL.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    pub url: String,
    /// HTTP method. Default POST.
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// Request headers; values may come from a Secret in the job's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub headers: Vec<HttpHeader>,
    /// Request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// Status codes counted as success. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub success_codes: Vec<u16>,
}

fn default_method() -> HttpMethod {
    HttpMethod::POST
}

/// HTTP methods an action may use.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    POST,
    PUT,
    PATCH,
    DELETE,
    HEAD,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::GET => "GET",
            HttpMethod::POST => "POST",
            HttpMethod::PUT => "PUT",
            HttpMethod::PATCH => "PATCH",
            HttpMethod::DELETE => "DELETE",
            HttpMethod::HEAD => "HEAD",
        }
    }
}

/// One request header: a literal `value` or a `valueFrom` Secret reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("exactly one of value and valueFrom must be set"))]
pub struct HttpHeader {
    /// Header name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Literal header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub value: Option<String>,
    /// Read the value from a Secret at execution time; it is never written to
    /// the Raft log or to logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// Source of a header value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the ScheduledJob's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Run a command in the scheduler node's container. The process gets
/// `RAFTCRON_RUN_ID`, `RAFTCRON_ATTEMPT`, `RAFTCRON_SCHEDULED_TIME` and
/// `RAFTCRON_TERM` in its environment and is killed at the timeout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    /// Program and arguments (no shell unless you name one).
    #[schemars(length(min = 1, max = 256))]
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<EnvVar>,
    /// Working directory. Default: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// An environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// Create a Kubernetes Job from a template, as CronJob does.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobAction {
    /// The Job to create at each fire (batch/v1 JobTemplateSpec).
    #[schemars(schema_with = "preserve_unknown_object")]
    // Boxed: the type is kilobytes in size, and every spec would carry that
    // inline even without a job action.
    pub template: Box<JobTemplateSpec>,
}

/// Embedding the whole JobTemplateSpec schema would make the CRD several
/// hundred kilobytes; the API server validates the Job itself when the node
/// creates it, and that error is recorded on the run.
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A batch/v1 JobTemplateSpec: metadata and spec of the Job created at each fire.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Observed state, written by the operator (conditions, observedGeneration)
/// and by the scheduler leader (everything about runs), each under its own
/// server-side-apply field manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_formats)]
pub struct ScheduledJobStatus {
    /// The generation the operator last registered with the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the schedule is valid and registered in the scheduler
    /// cluster. One entry per type (a list map keyed by `type`), at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::STATUS_CONDITIONS_MAX))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Next instant the schedule fires (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_schedule_time: Option<String>,
    /// Scheduled instant of the most recent run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_schedule_time: Option<String>,
    /// Completion time of the most recent successful run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_successful_time: Option<String>,
    /// Runs currently executing or waiting for a retry, at most 1000 (only
    /// `concurrencyPolicy: Allow` has more than one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::STATUS_ACTIVE_MAX))]
    pub active: Vec<RunSummary>,
    /// The most recent finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Recent finished runs, newest first, bounded by the history limits
    /// (`successfulRunsHistoryLimit` plus `failedRunsHistoryLimit`, so at
    /// most 200).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::STATUS_RECENT_RUNS_MAX))]
    pub recent_runs: Vec<RunSummary>,
}

/// The `format`s the Kubernetes API server knows
/// (apiextensions-apiserver, `pkg/apiserver/validation/formats.go`, with
/// its dash-less normalisation: `date-time` is `datetime`). A CRD carrying
/// another one is applied with a warning (`unrecognized format "uint32"`)
/// and the format is ignored.
const KUBERNETES_STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "quantity",
];

/// Whether the API server knows `format` on a value of JSON type `kind`:
/// the rule of its `GetUnrecognizedFormats`.
fn is_kubernetes_format(kind: &str, format: &str) -> bool {
    match kind {
        "string" => KUBERNETES_STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        "integer" => matches!(format, "int32" | "int64"),
        "number" => matches!(format, "float" | "double"),
        _ => false,
    }
}

/// A schemars transform, applied to the spec and status schemas and all
/// they contain: rewrites the formats schemars gives Rust's unsigned and
/// small integers into the ones Kubernetes knows (`uint16` → `int32`,
/// `uint32` → `int64`; their `minimum: 0` stays) and drops any other
/// format the API server does not know.
fn kubernetes_formats(schema: &mut schemars::Schema) {
    schemars::transform::transform_subschemas(&mut kubernetes_formats, schema);
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let Some(format) = object.get("format").and_then(|f| f.as_str()) else {
        return;
    };
    // Optional fields have `type: [integer, "null"]` until kube's
    // AddNullable rewrites them.
    let kind = match object.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(serde_json::Value::Array(kinds)) => kinds
            .iter()
            .filter_map(|k| k.as_str())
            .find(|k| *k != "null")
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    let replacement = match (kind.as_str(), format) {
        (_, format) if is_kubernetes_format(&kind, format) => return,
        ("integer", "int8" | "int16" | "uint8" | "uint16") => Some("int32"),
        ("integer", "uint32") => Some("int64"),
        _ => None,
    };
    match replacement {
        Some(format) => {
            object.insert("format".into(), format.into());
        }
        None => {
            object.remove("format");
        }
    }
}

/// One run as shown in the status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Derived from the schedule uid and the scheduled instant; the same on
    /// every node. Sent to the action as `Raftcron-Run-Id`.
    pub run_id: String,
    /// The instant the run was scheduled for (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub scheduled_time: String,
    /// When the latest attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completion_time: Option<String>,
    /// Succeeded, Failed, TimedOut, Lost, Missed, Skipped, Replaced, or
    /// Running / Pending while active.
    pub result: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The scheduler node that ran the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `app` actions: the pod (replica) that ran the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Milliseconds between the scheduled instant and the start of the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_ms: Option<i64>,
    /// A short reason for a failure, without secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
