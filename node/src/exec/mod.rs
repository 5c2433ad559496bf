//! Executors: run one attempt of a ScheduledJob's action.
//!
//! ```text
//!  fire loop ──Attempt──► Executors::run ──► http │ process (exec) │ job (Kubernetes) │ app
//!            (armed: Executors::prepare ─► app: placed on an attached replica, called on go;
//!                                          http: request built, connection picked)
//!                              │ timeout / cancel → TimedOut / Failed("cancelled")
//!                              └──► Outcome { outcome, message } ──► recorder
//! ```
//!
//! Every action gets the run id, attempt, scheduled time and the leader's
//! term (the fencing token) as `Raftcron-*` headers or `RAFTCRON_*`
//! environment variables. Messages kept in the run are short and never
//! contain secret values.

pub mod http;
pub mod job;
pub mod policy;
pub mod process;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use raftcron_crds::{AppAction, JobAction, ScheduledJobSpec};
use tokio_util::sync::CancellationToken;

use crate::sm::{AttemptOutcome, Millis};

/// Longest message kept in a run record (response snippet, output tail, error).
pub const MAX_MESSAGE: usize = 512;

/// One attempt to execute.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub namespace: String,
    pub name: String,
    /// The schedule's uid: the Kubernetes object's uid when `kubernetes` is set.
    pub uid: String,
    /// The schedule mirrors a Kubernetes ScheduledJob, so objects created for
    /// it (Jobs) can name it as their owner.
    pub kubernetes: bool,
    pub run_id: String,
    pub attempt: u32,
    pub scheduled_ms: Millis,
    pub term: u64,
    pub timeout: Duration,
}

impl Attempt {
    /// The attempt's identity as every action receives it, built once:
    /// (header, environment variable, value) for the run id, the attempt,
    /// the scheduled time (RFC 3339, UTC, milliseconds) and the leader's
    /// term (the fencing token).
    pub fn identity(&self) -> [(&'static str, &'static str, String); 4] {
        use raftcron_crds::names::{env, header, rfc3339_ms};
        [
            (header::RUN_ID, env::RUN_ID, self.run_id.clone()),
            (header::ATTEMPT, env::ATTEMPT, self.attempt.to_string()),
            (
                header::SCHEDULED_TIME,
                env::SCHEDULED_TIME,
                rfc3339_ms(self.scheduled_ms),
            ),
            (header::TERM, env::TERM, self.term.to_string()),
        ]
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub outcome: AttemptOutcome,
    pub message: Option<String>,
}

impl Outcome {
    pub fn ok(message: Option<String>) -> Self {
        Self {
            outcome: AttemptOutcome::Succeeded,
            message,
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            outcome: AttemptOutcome::Failed,
            message: Some(truncate(message.into())),
        }
    }
    pub fn lost(message: impl Into<String>) -> Self {
        Self {
            outcome: AttemptOutcome::Lost,
            message: Some(truncate(message.into())),
        }
    }
    pub fn timed_out(after: Duration) -> Self {
        Self {
            outcome: AttemptOutcome::TimedOut,
            message: Some(format!("timed out after {after:?}")),
        }
    }
}

/// Cuts a message to [`MAX_MESSAGE`] bytes on a character boundary.
pub fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Resolves Secret references at execution time (Kubernetes only).
pub trait SecretResolver: Send + Sync {
    fn resolve<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

/// Runs `job` actions (Kubernetes only): creates the Job of one attempt and
/// follows it to completion. Dropping the future before it resolves (timeout,
/// cancellation) must not leave the Job running.
pub trait JobRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        action: &'a JobAction,
        spec: &'a ScheduledJobSpec,
        attempt: &'a Attempt,
    ) -> futures::future::BoxFuture<'a, Outcome>;
}

/// Dispatches `app` actions to attached replicas of the app (the leader's
/// attach registry).
pub trait AppDispatcher: Send + Sync {
    /// Places the attempt on a replica and sends it ahead, to be called on
    /// [`PreparedApp::go`]. `Err` says why no replica can take it now.
    fn prepare(
        &self,
        namespace: &str,
        action: &AppAction,
        spec: &ScheduledJobSpec,
        attempt: &Attempt,
    ) -> Result<Box<dyn PreparedApp>, String>;
}

/// An `app` attempt placed on a replica. Dropped without [`go`](Self::go),
/// or before its result, the replica is told to drop it.
pub trait PreparedApp: Send {
    /// The pod it was placed on.
    fn pod(&self) -> &str;
    /// Calls the app now and waits for the replica's result.
    fn go(self: Box<Self>) -> futures::future::BoxFuture<'static, Outcome>;
}

/// What an attempt was prepared with when it was armed.
#[derive(Default)]
pub enum Prepared {
    /// Nothing to prepare (exec, job, dry run, and the http attempts
    /// [`http::HttpExecutor::prepare`] leaves to the instant).
    #[default]
    Nothing,
    /// An `http://` request built, and its connection picked.
    Http(Box<http::PreparedHttp>),
    App(Box<dyn PreparedApp>),
}

impl Prepared {
    /// The pod an `app` attempt was placed on.
    pub fn pod(&self) -> Option<&str> {
        match self {
            Prepared::Nothing | Prepared::Http(_) => None,
            Prepared::App(a) => Some(a.pod()),
        }
    }

    /// The attempt's first poll does no more than send what was prepared
    /// (a request on an open connection, an app's go): cheap enough for the
    /// firer to do it in its own loop. Not so for one still connecting, a
    /// process to spawn or a Job to create.
    pub fn sends_at_once(&self) -> bool {
        match self {
            Prepared::Nothing => false,
            Prepared::Http(h) => h.connected(),
            Prepared::App(_) => true,
        }
    }
}

/// Node settings the executors obey.
#[derive(Clone, Debug)]
pub struct ExecSettings {
    /// `exec` actions run only when enabled (they run with the node's identity).
    pub exec_enabled: bool,
    /// Targets HTTP actions may not reach.
    pub http_policy: policy::HttpPolicy,
    /// Record every attempt as succeeded without executing its action.
    pub dry_run: bool,
}

/// All executors of a node.
pub struct Executors {
    settings: ExecSettings,
    http: http::HttpExecutor,
    secrets: Option<Arc<dyn SecretResolver>>,
    jobs: Option<Arc<dyn JobRunner>>,
    apps: Option<Arc<dyn AppDispatcher>>,
}

impl Executors {
    pub fn new(settings: ExecSettings, secrets: Option<Arc<dyn SecretResolver>>) -> Self {
        let http = http::HttpExecutor::new(settings.http_policy.clone());
        Self {
            settings,
            http,
            secrets,
            jobs: None,
            apps: None,
        }
    }

    /// Enables `app` actions.
    pub fn with_apps(mut self, apps: Arc<dyn AppDispatcher>) -> Self {
        self.apps = Some(apps);
        self
    }

    /// Gets an attempt ready when it is armed, ahead of its instant: an
    /// `app` attempt is placed on a replica and sent to it; an `http`
    /// attempt's request is built and its connection picked (opened now
    /// when no idle one is there). `Err` (no replica can take it now) leaves
    /// it unarmed, to be tried again.
    pub fn prepare(
        &self,
        namespace: &str,
        spec: &ScheduledJobSpec,
        attempt: &Attempt,
    ) -> Result<Prepared, String> {
        if self.settings.dry_run {
            return Ok(Prepared::Nothing);
        }
        if let Some(h) = &spec.action.http {
            return Ok(self
                .http
                .prepare(h, attempt)
                .map_or(Prepared::Nothing, |p| Prepared::Http(Box::new(p))));
        }
        match (&spec.action.app, &self.apps) {
            (Some(app), Some(apps)) => apps
                .prepare(namespace, app, spec, attempt)
                .map(Prepared::App),
            // Recorded as a failed attempt by run().
            (Some(_), None) | (None, _) => Ok(Prepared::Nothing),
        }
    }

    /// Enables `job` actions.
    pub fn with_jobs(mut self, jobs: Arc<dyn JobRunner>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Runs one attempt until it finishes, times out or is cancelled.
    pub async fn run(
        &self,
        spec: &ScheduledJobSpec,
        attempt: &Attempt,
        prepared: Prepared,
        cancel: CancellationToken,
    ) -> Outcome {
        let work = async {
            if self.settings.dry_run {
                return Outcome::ok(Some("dry run: not executed".into()));
            }
            if let Some(h) = &spec.action.http {
                match prepared {
                    Prepared::Http(p) => self.http.send(h, attempt, *p).await,
                    _ => self.http.run(h, attempt, self.secrets.as_deref()).await,
                }
            } else if let Some(e) = &spec.action.exec {
                if !self.settings.exec_enabled {
                    return Outcome::failed(
                        "exec actions are disabled on this node (start it with --enable-exec)",
                    );
                }
                process::run(e, attempt).await
            } else if spec.action.app.is_some() {
                match prepared {
                    Prepared::App(app) => app.go().await,
                    Prepared::Nothing | Prepared::Http(_) => Outcome::failed(
                        "app actions need the leader's attach registry; this node has none",
                    ),
                }
            } else if let Some(j) = &spec.action.job {
                match &self.jobs {
                    Some(jobs) => jobs.run(j, spec, attempt).await,
                    None => Outcome::failed(
                        "job actions need Kubernetes; this node runs without a Kubernetes API",
                    ),
                }
            } else {
                Outcome::failed("the spec has no action")
            }
        };
        tokio::select! {
            o = tokio::time::timeout(attempt.timeout, work) => o.unwrap_or_else(|_| Outcome::timed_out(attempt.timeout)),
            _ = cancel.cancelled() => Outcome::failed("cancelled: leadership moved or the run was replaced"),
        }
    }
}
