//! The node's side of Kubernetes: Secrets for HTTP headers, Jobs for `job`
//! actions, and the leader's status writer.
//!
//! ```text
//!   --kubernetes ──► Client::try_default (in-cluster config or KUBECONFIG)
//!                       ├──► secrets::KubeSecrets ──┐
//!                       ├──► exec::job::KubeJobRunner ┴─► Executors (fire loop)
//!                       └──► writer (leader only) ◄── state machine change feed
//!                               ├─ status::compute (pure) ──SSA status, field manager raftcron-node──► ScheduledJob
//!                               └─ Warning Events for Failed / TimedOut / Lost / Missed runs
//! ```
//!
//! Without `--kubernetes` (and in `local` mode) none of this exists: `job`
//! actions and Secret headers are refused with a message saying so.
//!
//! RBAC the node needs: `scheduledjobs` get/list, `scheduledjobs/status`
//! patch (raftcron.dev); `events` create/patch (events.k8s.io); `jobs`
//! create/get/list/watch/delete (batch); `secrets` get.

pub mod rate;
pub mod secrets;
pub mod status;
#[cfg(test)]
mod tests;
pub mod writer;

use std::sync::Arc;

use crate::exec::{ExecSettings, Executors};

/// Status writer settings (`--status-qps`, `--status-burst`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatusSettings {
    /// Sustained writes per second (status patches and Events together).
    pub qps: f64,
    /// Writes allowed at once after a quiet period.
    pub burst: u32,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            qps: 20.0,
            burst: 50,
        }
    }
}

/// A node's Kubernetes connection. `kube::Client` has no `Debug`, and
/// `NodeConfig` derives it.
#[derive(Clone)]
pub struct Kube {
    pub client: ::kube::Client,
    pub status: StatusSettings,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("default_namespace", &self.client.default_namespace())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--kubernetes: cannot configure a Kubernetes client (in-cluster service account, \
         or KUBECONFIG / ~/.kube/config): {0}"
    )]
    // Only the top message: kube's errors repeat their sources in their own
    // text, and a chained report would print the same cause four times.
    Client(String),
    #[error("--status-qps must be a positive number of writes per second, not {0}")]
    Qps(f64),
    #[error("--status-burst must be at least 1")]
    Burst,
}

impl Kube {
    /// Connects the way kubectl and client-go do: the in-cluster service
    /// account in a pod, else KUBECONFIG. Nothing is requested yet, so an
    /// API server that is down is reported by the first call, not here.
    pub async fn connect(status: StatusSettings) -> Result<Kube, Error> {
        if !(status.qps.is_finite() && status.qps > 0.0) {
            return Err(Error::Qps(status.qps));
        }
        if status.burst == 0 {
            return Err(Error::Burst);
        }
        // kube's rustls client uses the process-wide provider: ring only.
        crate::tls::install_crypto_provider();
        let client = ::kube::Client::try_default()
            .await
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Kube { client, status })
    }
}

/// The node's executors: with a Kubernetes client, Secret headers and `job`
/// actions work; without one they are refused.
pub fn executors(settings: ExecSettings, kube: Option<&Kube>) -> Executors {
    match kube {
        Some(k) => Executors::new(
            settings,
            Some(Arc::new(secrets::KubeSecrets::new(k.client.clone()))),
        )
        .with_jobs(crate::exec::job::runner(k.client.clone())),
        None => Executors::new(settings, None),
    }
}
