//! Validation of a `ScheduledJob`, without IO.
//!
//! ```text
//!  ScheduledJobSpec ──validate_spec──► ValidSpec { schedule, action }   (ready to register)
//!                           └────────► ValidationErrors [spec.schedule: …; spec.timeZone: …]
//! ```
//!
//! The API server refuses what the CRD schema and its CEL rules can express;
//! this module repeats those bounds and adds what a schema cannot say (a cron
//! expression that parses, a known time zone, a URL with a host). It runs in
//! the operator before a schedule is registered, in the node when a schedule
//! arrives over gRPC, and in `raftcron-node local` / `raftcronctl apply`,
//! where no API server stands in between, so every bound of the schema is
//! checked here too. Every error names the field by its JSON path.

use std::fmt;

use crate::names;
use crate::schedule::{Schedule, ScheduleError, parse_time_zone};
use crate::types::{
    Action, AppAction, ExecAction, HttpAction, HttpHeader, JobAction, RetryPolicy, ScheduledJob,
    ScheduledJobSpec,
};

/// Bounds shared with the CRD schema; kept in [`crate::limits`] and
/// re-exported here, where callers have always found them.
pub use crate::limits;

/// One refused field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path with the camelCase names, e.g. `spec.action.http.url` or
    /// `spec.action.http.headers[2].name`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every refused field of one object, in the order of the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The first refused field: what a one-line report names.
    pub fn first(&self) -> Option<&FieldError> {
        self.0.first()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Which of the three actions a valid spec carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Http,
    Exec,
    Job,
    App,
}

impl ActionKind {
    /// The field name: `http`, `exec` or `job`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Http => "http",
            ActionKind::Exec => "exec",
            ActionKind::Job => "job",
            ActionKind::App => "app",
        }
    }
}

/// A spec that passed validation, with what validation had to compute anyway.
#[derive(Clone, Debug)]
pub struct ValidSpec {
    pub schedule: Schedule,
    pub action: ActionKind,
}

/// Validates a whole object: name, namespace (`default` when unset, as
/// `kubectl apply` does) and spec, reporting the errors of all three.
pub fn validate_job(job: &ScheduledJob) -> Result<ValidSpec, ValidationErrors> {
    let mut errors = Vec::new();
    match job.metadata.name.as_deref() {
        Some(name) => check_name(
            crate::names::namespace_or_default(job.metadata.namespace.as_deref()),
            name,
            &mut errors,
        ),
        None => errors.push(FieldError::new("metadata.name", "name is required")),
    }
    match validate_spec(&job.spec) {
        Ok(valid) if errors.is_empty() => Ok(valid),
        Ok(_) => Err(ValidationErrors(errors)),
        Err(ValidationErrors(spec_errors)) => {
            errors.extend(spec_errors);
            Err(ValidationErrors(errors))
        }
    }
}

/// Checks `metadata.namespace` (a DNS-1123 label) and `metadata.name` (a
/// DNS-1123 subdomain), as the API server does.
pub fn validate_name(namespace: &str, name: &str) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    check_name(namespace, name, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Validates a spec; on success returns the parsed schedule and the action kind.
pub fn validate_spec(spec: &ScheduledJobSpec) -> Result<ValidSpec, ValidationErrors> {
    let mut errors = Vec::new();
    let schedule = check_schedule(spec, &mut errors);

    if let Some(deadline) = spec.starting_deadline_seconds
        && deadline <= 0
    {
        errors.push(FieldError::new(
            "spec.startingDeadlineSeconds",
            format!("must be at least 1 second, got {deadline}"),
        ));
    }
    if let Some(timeout) = spec.timeout_seconds
        && !(1..=limits::TIMEOUT_SECONDS_MAX).contains(&timeout)
    {
        errors.push(FieldError::new(
            "spec.timeoutSeconds",
            format!(
                "must be between 1 and {} (7 days), got {timeout}",
                limits::TIMEOUT_SECONDS_MAX
            ),
        ));
    }
    if let Some(retry) = &spec.retry {
        check_retry(retry, &mut errors);
    }
    for (field, limit) in [
        (
            "spec.successfulRunsHistoryLimit",
            spec.successful_runs_history_limit,
        ),
        (
            "spec.failedRunsHistoryLimit",
            spec.failed_runs_history_limit,
        ),
    ] {
        if let Some(limit) = limit
            && limit > limits::HISTORY_LIMIT_MAX
        {
            errors.push(FieldError::new(
                field,
                format!("must be at most {}, got {limit}", limits::HISTORY_LIMIT_MAX),
            ));
        }
    }
    let action = check_action(&spec.action, &mut errors);

    match (schedule, action) {
        (Some(schedule), Some(action)) if errors.is_empty() => Ok(ValidSpec { schedule, action }),
        _ => Err(ValidationErrors(errors)),
    }
}

fn check_schedule(spec: &ScheduledJobSpec, errors: &mut Vec<FieldError>) -> Option<Schedule> {
    let mut zone_ok = true;
    if let Some(zone) = spec.time_zone.as_deref() {
        if zone.len() > limits::TIME_ZONE_MAX_LEN {
            zone_ok = false;
            errors.push(FieldError::new(
                "spec.timeZone",
                over_limit("is ", zone.len(), "characters", limits::TIME_ZONE_MAX_LEN),
            ));
        } else if let Err(error) = parse_time_zone(Some(zone)) {
            zone_ok = false;
            errors.push(FieldError::new("spec.timeZone", error.to_string()));
        }
    }
    if spec.schedule.len() > limits::SCHEDULE_MAX_LEN {
        errors.push(FieldError::new(
            "spec.schedule",
            over_limit(
                "is ",
                spec.schedule.len(),
                "characters",
                limits::SCHEDULE_MAX_LEN,
            ),
        ));
        return None;
    }
    if spec.repeats == Some(0) {
        errors.push(FieldError::new(
            "spec.repeats",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    let due = match spec.due_time.as_deref() {
        None => None,
        Some(text) => {
            match names::parse_rfc3339_ms(text) {
                Some(ms) => Some(ms),
                None => {
                    errors.push(FieldError::new(
                    "spec.dueTime",
                    format!("\"{text}\" is not an RFC 3339 instant (for example 2026-12-24T18:00:00Z)"),
                ));
                    return None;
                }
            }
        }
    };
    // A bad zone is reported once, above; the expression is still checked.
    let zone = if zone_ok {
        spec.time_zone.as_deref()
    } else {
        None
    };
    if spec.schedule.trim().is_empty() && due.is_none() {
        errors.push(FieldError::new(
            "spec.schedule",
            "required, unless spec.dueTime is set (a one-shot)",
        ));
        return None;
    }
    if spec.schedule.trim().is_empty()
        && let Some(due) = due
    {
        // A one-shot: nothing to parse but the zone (checked above).
        return Schedule::for_spec("", zone, Some(due))
            .ok()
            .filter(|_| zone_ok);
    }
    match Schedule::for_spec(&spec.schedule, zone, due) {
        Ok(schedule) if schedule.never_fires() => {
            errors.push(FieldError::new(
                "spec.schedule",
                format!(
                    "cron expression \"{}\" never fires (no date matches it, such as February 30th)",
                    schedule.expression()
                ),
            ));
            None
        }
        Ok(schedule) => zone_ok.then_some(schedule),
        Err(error @ ScheduleError::UnknownTimeZone { .. }) => {
            errors.push(FieldError::new("spec.timeZone", error.to_string()));
            None
        }
        Err(error) => {
            errors.push(FieldError::new("spec.schedule", error.to_string()));
            None
        }
    }
}

fn check_retry(retry: &RetryPolicy, errors: &mut Vec<FieldError>) {
    if !(1..=limits::MAX_ATTEMPTS_MAX).contains(&retry.max_attempts) {
        errors.push(FieldError::new(
            "spec.retry.maxAttempts",
            format!(
                "must be between 1 and {}, got {}",
                limits::MAX_ATTEMPTS_MAX,
                retry.max_attempts
            ),
        ));
    }
    let ranges = [
        (
            "spec.retry.initialBackoffSeconds",
            retry.initial_backoff_seconds,
            0.0,
            limits::BACKOFF_SECONDS_MAX,
        ),
        (
            "spec.retry.maxBackoffSeconds",
            retry.max_backoff_seconds,
            0.0,
            limits::BACKOFF_SECONDS_MAX,
        ),
        (
            "spec.retry.multiplier",
            retry.multiplier,
            1.0,
            limits::MULTIPLIER_MAX,
        ),
        ("spec.retry.jitter", retry.jitter, 0.0, 1.0),
    ];
    let mut all_in_range = true;
    for (field, value, min, max) in ranges {
        // NaN fails the range check, so it needs no case of its own.
        if !(min..=max).contains(&value) {
            all_in_range = false;
            errors.push(FieldError::new(
                field,
                format!("must be a number between {min} and {max}, got {value}"),
            ));
        }
    }
    if all_in_range && retry.initial_backoff_seconds > retry.max_backoff_seconds {
        errors.push(FieldError::new(
            "spec.retry.initialBackoffSeconds",
            format!(
                "{} is greater than maxBackoffSeconds ({})",
                retry.initial_backoff_seconds, retry.max_backoff_seconds
            ),
        ));
    }
}

fn check_action(action: &Action, errors: &mut Vec<FieldError>) -> Option<ActionKind> {
    let present: Vec<ActionKind> = [
        (action.http.is_some(), ActionKind::Http),
        (action.exec.is_some(), ActionKind::Exec),
        (action.job.is_some(), ActionKind::Job),
        (action.app.is_some(), ActionKind::App),
    ]
    .into_iter()
    .filter_map(|(set, kind)| set.then_some(kind))
    .collect();
    if let Some(http) = &action.http {
        check_http(http, errors);
    }
    if let Some(exec) = &action.exec {
        check_exec(exec, errors);
    }
    if let Some(job) = &action.job {
        check_job(job, errors);
    }
    if let Some(app) = &action.app {
        check_app(app, errors);
    }
    match present.as_slice() {
        [kind] => Some(*kind),
        [] => {
            errors.push(FieldError::new(
                "spec.action",
                "exactly one of http, exec, job, app must be set; none is",
            ));
            None
        }
        several => {
            let names: Vec<&str> = several.iter().map(|kind| kind.as_str()).collect();
            errors.push(FieldError::new(
                "spec.action",
                format!(
                    "exactly one of http, exec, job, app must be set; found {}",
                    names.join(" and ")
                ),
            ));
            None
        }
    }
}

fn check_http(http: &HttpAction, errors: &mut Vec<FieldError>) {
    if let Err(message) = check_url(&http.url) {
        errors.push(FieldError::new("spec.action.http.url", message));
    }
    check_request(
        "spec.action.http",
        Request {
            body: http.body.as_deref(),
            headers: &http.headers,
            success_codes: &http.success_codes,
            secret_headers: true,
        },
        errors,
    );
}

fn check_app(app: &AppAction, errors: &mut Vec<FieldError>) {
    if let Err(message) = check_dns_subdomain(&app.name, limits::NAME_MAX_LEN) {
        errors.push(FieldError::new("spec.action.app.name", message));
    }
    if !app.path.starts_with('/') {
        errors.push(FieldError::new(
            "spec.action.app.path",
            format!("\"{}\" must start with /", app.path),
        ));
    } else if app.path.len() > limits::URL_MAX_LEN {
        errors.push(FieldError::new(
            "spec.action.app.path",
            over_limit(
                "path is ",
                app.path.len(),
                "characters",
                limits::URL_MAX_LEN,
            ),
        ));
    } else if let Some(bad) = app.path.chars().find(|c| c.is_control() || *c == ' ') {
        errors.push(FieldError::new(
            "spec.action.app.path",
            format!("path contains {bad:?}; escape it (%xx)"),
        ));
    }
    check_request(
        "spec.action.app",
        Request {
            body: app.body.as_deref(),
            headers: &app.headers,
            success_codes: &app.success_codes,
            // The header would travel to the sidecar in the clear.
            secret_headers: false,
        },
        errors,
    );
}

/// What `http` and `app` actions share: the request's body, headers and
/// the status codes that count as success.
struct Request<'a> {
    body: Option<&'a str>,
    headers: &'a [HttpHeader],
    success_codes: &'a [u16],
    /// Whether headers may take their value from a Secret.
    secret_headers: bool,
}

fn check_request(base: &str, r: Request<'_>, errors: &mut Vec<FieldError>) {
    if let Some(body) = r.body {
        check_count(
            errors,
            &format!("{base}.body"),
            ("body is ", body.len(), "bytes"),
            limits::BODY_MAX_BYTES,
        );
    }
    check_count(
        errors,
        &format!("{base}.headers"),
        ("", r.headers.len(), "headers"),
        limits::HEADERS_MAX,
    );
    for (i, header) in r.headers.iter().enumerate() {
        let path = format!("{base}.headers[{i}]");
        if header.value_from.is_some() && !r.secret_headers {
            errors.push(FieldError::new(
                format!("{path}.valueFrom"),
                "not supported for app actions: the header travels to the sidecar; give the app its own secret",
            ));
        } else {
            check_header(&path, header, errors);
        }
    }
    check_count(
        errors,
        &format!("{base}.successCodes"),
        ("", r.success_codes.len(), "codes"),
        limits::SUCCESS_CODES_MAX,
    );
    for (i, code) in r.success_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            errors.push(FieldError::new(
                format!("{base}.successCodes[{i}]"),
                format!("{code} is not an HTTP status code (100 to 599)"),
            ));
        }
    }
}

fn check_url(text: &str) -> Result<(), String> {
    if text.len() > limits::URL_MAX_LEN {
        return Err(over_limit(
            "URL is ",
            text.len(),
            "characters",
            limits::URL_MAX_LEN,
        ));
    }
    // The same parser the node's HTTP client uses, so what passes here is
    // what the client will accept.
    let url = url::Url::parse(text).map_err(|e| format!("invalid URL \"{text}\": {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "URL \"{text}\" has scheme \"{}\"; only http and https are supported",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL \"{text}\" has no host"));
    }
    if url.password().is_some() {
        // Spec fields are replicated through the Raft log and shown in the
        // status; secrets must not be.
        return Err(
            "URL carries a password; send credentials in a header with valueFrom.secretKeyRef"
                .to_string(),
        );
    }
    Ok(())
}

fn check_header(path: &str, header: &HttpHeader, errors: &mut Vec<FieldError>) {
    let name = &header.name;
    let name_field = format!("{path}.name");
    if let Err(message) = check_length("header name", name, limits::HEADER_NAME_MAX_LEN) {
        errors.push(FieldError::new(name_field, message));
    } else if let Some(bad) = name.chars().find(|&c| !is_token_char(c)) {
        errors.push(FieldError::new(
            name_field,
            format!("header name \"{name}\" contains {bad:?}, which HTTP does not allow in a header name"),
        ));
    } else if name.len() >= names::header::RESERVED_PREFIX.len()
        && name[..names::header::RESERVED_PREFIX.len()]
            .eq_ignore_ascii_case(names::header::RESERVED_PREFIX)
    {
        errors.push(FieldError::new(
            name_field,
            format!(
                "header \"{name}\" is reserved: raftcron sets the {}* headers itself",
                names::header::RESERVED_PREFIX
            ),
        ));
    }

    match (&header.value, &header.value_from) {
        (Some(_), Some(_)) => errors.push(FieldError::new(
            path,
            "exactly one of value and valueFrom must be set; both are",
        )),
        (None, None) => errors.push(FieldError::new(
            path,
            "exactly one of value and valueFrom must be set; neither is",
        )),
        _ => {}
    }
    if let Some(value) = &header.value {
        let field = format!("{path}.value");
        if value.len() > limits::HEADER_VALUE_MAX_LEN {
            errors.push(FieldError::new(
                field,
                over_limit(
                    "header value is ",
                    value.len(),
                    "characters",
                    limits::HEADER_VALUE_MAX_LEN,
                ),
            ));
        } else if let Some(bad) = value.chars().find(|&c| c.is_control() && c != '\t') {
            errors.push(FieldError::new(
                field,
                format!("header value contains the control character {bad:?}; only printable characters and tabs are allowed"),
            ));
        }
    }
    if let Some(from) = &header.value_from {
        let secret = &from.secret_key_ref;
        let base = format!("{path}.valueFrom.secretKeyRef");
        if let Err(message) = check_dns_subdomain(&secret.name, limits::SECRET_NAME_MAX_LEN) {
            errors.push(FieldError::new(format!("{base}.name"), message));
        }
        if let Err(message) = check_secret_key(&secret.key) {
            errors.push(FieldError::new(format!("{base}.key"), message));
        }
    }
}

/// The one wording of a length or count over its limit:
/// `{lead}{len} {unit}; the limit is {limit}`, e.g. "header name is 300
/// characters; the limit is 256" or "70 headers; the limit is 64".
fn over_limit(lead: &str, len: usize, unit: &str, limit: usize) -> String {
    format!("{lead}{len} {unit}; the limit is {limit}")
}

/// Refuses an empty `what` ("header name") or one longer than `limit`.
fn check_length(what: &str, text: &str, limit: usize) -> Result<(), String> {
    if text.is_empty() {
        Err(format!("{what} is empty"))
    } else if text.len() > limit {
        Err(over_limit(
            &format!("{what} is "),
            text.len(),
            "characters",
            limit,
        ))
    } else {
        Ok(())
    }
}

/// Refuses `field` when its `(lead, len, unit)` is over `limit`, in
/// [`over_limit`]'s words.
fn check_count(
    errors: &mut Vec<FieldError>,
    field: &str,
    (lead, len, unit): (&str, usize, &str),
    limit: usize,
) {
    if len > limit {
        errors.push(FieldError::new(field, over_limit(lead, len, unit, limit)));
    }
}

/// RFC 9110 `tchar`: the characters of an HTTP token.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_secret_key(key: &str) -> Result<(), String> {
    check_length("secret key", key, limits::SECRET_NAME_MAX_LEN)?;
    if let Some(bad) = key
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "secret key \"{key}\" contains {bad:?}; a key consists of alphanumeric characters, '-', '_' or '.'"
        ));
    }
    Ok(())
}

fn check_exec(exec: &ExecAction, errors: &mut Vec<FieldError>) {
    match exec.command.first() {
        None => errors.push(FieldError::new(
            "spec.action.exec.command",
            "command is empty; name the program to run, e.g. [\"/bin/sh\", \"-c\", \"…\"]",
        )),
        Some(program) if program.is_empty() => errors.push(FieldError::new(
            "spec.action.exec.command[0]",
            "the program name is empty",
        )),
        Some(_) => {}
    }
    check_count(
        errors,
        "spec.action.exec.command",
        ("", exec.command.len(), "arguments"),
        limits::COMMAND_MAX,
    );
    // The OS takes C strings: a NUL would cut the argument short at spawn.
    for (i, arg) in exec.command.iter().enumerate() {
        if arg.contains('\0') {
            errors.push(FieldError::new(
                format!("spec.action.exec.command[{i}]"),
                "contains a NUL character",
            ));
        }
    }
    check_count(
        errors,
        "spec.action.exec.env",
        ("", exec.env.len(), "variables"),
        limits::ENV_MAX,
    );
    for (i, var) in exec.env.iter().enumerate() {
        let field = format!("spec.action.exec.env[{i}].name");
        let name = &var.name;
        if let Err(message) = check_length("variable name", name, limits::ENV_NAME_MAX_LEN) {
            errors.push(FieldError::new(field, message));
        } else if name.contains('=') || name.contains('\0') {
            errors.push(FieldError::new(
                field,
                format!("variable name {name:?} contains '=' or NUL"),
            ));
        } else if name.starts_with(names::env::RESERVED_PREFIX) {
            errors.push(FieldError::new(
                field,
                format!(
                    "variable \"{name}\" is reserved: raftcron sets the {}* variables itself",
                    names::env::RESERVED_PREFIX
                ),
            ));
        }
        if var.value.contains('\0') {
            errors.push(FieldError::new(
                format!("spec.action.exec.env[{i}].value"),
                "contains a NUL character",
            ));
        }
    }
    if let Some(dir) = &exec.working_dir
        && (dir.is_empty() || dir.contains('\0'))
    {
        errors.push(FieldError::new(
            "spec.action.exec.workingDir",
            "must be a non-empty path without NUL characters; leave it out to use the node's",
        ));
    }
}

fn check_job(job: &JobAction, errors: &mut Vec<FieldError>) {
    let Some(job_spec) = &job.template.spec else {
        errors.push(FieldError::new(
            "spec.action.job.template.spec",
            "the Job template needs a spec (at least template.spec.containers and restartPolicy)",
        ));
        return;
    };
    // The API server would refuse these only when the node creates the Job,
    // at the first fire; saying so now saves a failed run.
    let base = "spec.action.job.template.spec.template.spec";
    let Some(pod) = &job_spec.template.spec else {
        errors.push(FieldError::new(base, "the Job's pod template needs a spec"));
        return;
    };
    if pod.containers.is_empty() {
        errors.push(FieldError::new(
            format!("{base}.containers"),
            "a Job needs at least one container",
        ));
    }
    match pod.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => {}
        other => errors.push(FieldError::new(
            format!("{base}.restartPolicy"),
            format!(
                "must be Never or OnFailure for a Job, got {}",
                other.map_or("nothing (the pod default, Always)".to_string(), |p| {
                    format!("\"{p}\"")
                })
            ),
        )),
    }
}

fn check_name(namespace: &str, name: &str, errors: &mut Vec<FieldError>) {
    if let Err(message) = check_dns_label(namespace) {
        errors.push(FieldError::new("metadata.namespace", message));
    }
    if let Err(message) = check_dns_subdomain(name, limits::NAME_MAX_LEN) {
        errors.push(FieldError::new("metadata.name", message));
    }
}

/// DNS-1123 label, as Kubernetes checks namespaces.
fn check_dns_label(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty".to_string());
    }
    if text.len() > limits::NAMESPACE_MAX_LEN {
        return Err(over_limit(
            &format!("\"{text}\" is "),
            text.len(),
            "characters",
            limits::NAMESPACE_MAX_LEN,
        ));
    }
    if !is_dns_label(text) {
        return Err(format!(
            "\"{text}\" is not a DNS-1123 label: use lower case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// DNS-1123 subdomain, as Kubernetes checks object names.
fn check_dns_subdomain(text: &str, max_len: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty".to_string());
    }
    if text.len() > max_len {
        return Err(over_limit(
            &format!("\"{text}\" is "),
            text.len(),
            "characters",
            max_len,
        ));
    }
    if !text.split('.').all(is_dns_label) {
        return Err(format!(
            "\"{text}\" is not a DNS-1123 subdomain: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without the length limit, which the
/// callers check (a subdomain's parts are not limited to 63 characters).
fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
