//! Executors: run one attempt of a ScheduledJob's action.
//!
//! ```text
//!  fire loop ──Attempt──► Executors::run ──► http (reqwest) │ process (exec) │ job (Kubernetes)
//!                              │ timeout / cancel → TimedOut / Failed("cancelled")
//!                              └──► Outcome { outcome, message } ──► recorder
//! ```
//!
//! Every action gets the run id, attempt, scheduled time and the leader's
//! term (the fencing token) as `Raftcron-*` headers or `RAFTCRON_*`
//! environment variables. Messages kept in the run are short and never
//! contain secret values.

pub mod http;
pub mod policy;
pub mod process;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use raftcron_crds::ScheduledJobSpec;
use tokio_util::sync::CancellationToken;

use crate::sm::{AttemptOutcome, Millis};

/// Longest message kept in a run record (response snippet, output tail, error).
pub const MAX_MESSAGE: usize = 512;

/// One attempt to execute.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub namespace: String,
    pub name: String,
    pub run_id: String,
    pub attempt: u32,
    pub scheduled_ms: Millis,
    pub term: u64,
    pub timeout: Duration,
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

/// Node settings the executors obey.
#[derive(Clone, Debug)]
pub struct ExecSettings {
    /// `exec` actions run only when enabled (they run with the node's identity).
    pub exec_enabled: bool,
    /// Targets HTTP actions may not reach.
    pub http_policy: policy::HttpPolicy,
}

/// All executors of a node.
pub struct Executors {
    settings: ExecSettings,
    http: http::HttpExecutor,
    secrets: Option<Arc<dyn SecretResolver>>,
}

impl Executors {
    pub fn new(settings: ExecSettings, secrets: Option<Arc<dyn SecretResolver>>) -> Self {
        let http = http::HttpExecutor::new(settings.http_policy.clone());
        Self {
            settings,
            http,
            secrets,
        }
    }

    /// Runs one attempt until it finishes, times out or is cancelled.
    pub async fn run(
        &self,
        spec: &ScheduledJobSpec,
        attempt: &Attempt,
        cancel: CancellationToken,
    ) -> Outcome {
        let work = async {
            if let Some(h) = &spec.action.http {
                self.http.run(h, attempt, self.secrets.as_deref()).await
            } else if let Some(e) = &spec.action.exec {
                if !self.settings.exec_enabled {
                    return Outcome::failed(
                        "exec actions are disabled on this node (start it with --enable-exec)",
                    );
                }
                process::run(e, attempt).await
            } else if spec.action.job.is_some() {
                Outcome::failed(
                    "job actions need Kubernetes; this node runs without a Kubernetes API",
                )
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
