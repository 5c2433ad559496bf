//! What every task of a node shares: its configuration, Raft, stores and
//! metrics ([`NodeCtx`]), the stop signal, and the leadership terms the
//! leader-only tasks (fire loop, status writer) run in.
//!
//! ```text
//!  node (assembly) ──builds──► NodeCtx ──Arc──► api, http, membership, scheduler, kube writer
//!                  ──owns────► stop sender ──watch──► every task: stopped(&mut stop)
//!  Raft metrics ──► Leadership::next_term / term_over ──► leader-only tasks
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::raft::RaftTiming;
use crate::raft::network::Dialer;
use crate::raft::types::{MetricsWatch, NodeId, Raft};
use crate::store::{LogStore, StateMachineStore};
use crate::tls::TlsFiles;

/// Everything a node is started with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address peers and clients use for this node's gRPC port.
    pub advertise: String,
    pub data_dir: PathBuf,
    /// Initial members' gRPC addresses, this node included.
    pub peers: BTreeMap<NodeId, String>,
    pub bootstrap: bool,
    pub timing: RaftTiming,
    pub tls: Option<TlsFiles>,
    pub scheduler: crate::scheduler::config::SchedulerConfig,
    /// The Kubernetes API (`--kubernetes`): Secrets, Jobs, status writing.
    pub kube: Option<crate::kube::Kube>,
}

/// Shared by the API, the HTTP server, membership and the fire loop.
pub struct NodeCtx {
    pub identity: Arc<Identity>,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub log: LogStore,
    pub metrics: Arc<Metrics>,
    pub dialer: Dialer,
    pub config: NodeConfig,
    /// Replicas of apps attached to this node while it leads (`attach`).
    pub attachments: crate::attach::Registry,
}

/// The receiving side of a node's stop signal.
pub type Stop = watch::Receiver<bool>;

/// Resolves once the node is stopping. The watch guard is dropped inside,
/// so callers can await other things in the same `select!` arm.
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Follows this node's leadership terms, for the tasks that run only on
/// the leader, one incarnation per term.
pub struct Leadership {
    metrics: MetricsWatch,
    stop: Stop,
}

/// Why a term's watch returned.
#[derive(Debug, PartialEq, Eq)]
pub enum TermEnd {
    /// Another term began, or another node leads.
    Ended,
    /// The node is stopping (or Raft stopped): the task should return.
    Stopping,
}

impl Leadership {
    pub fn new(ctx: &NodeCtx, stop: Stop) -> Self {
        Self {
            metrics: ctx.raft.metrics(),
            stop,
        }
    }

    /// Waits until this node leads and returns the term; `None` once the
    /// node stops.
    pub async fn next_term(&mut self) -> Option<u64> {
        use openraft::type_config::async_runtime::watch::WatchReceiver;
        loop {
            let m = self.metrics.borrow_and_update().clone();
            if m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader {
                return Some(m.current_term);
            }
            tokio::select! {
                r = self.metrics.changed() => if r.is_err() { return None },
                _ = stopped(&mut self.stop) => return None,
            }
        }
    }

    /// Resolves when `term` is over for this node. Cancel-safe: a task may
    /// race it against its own work in a loop.
    pub async fn term_over(&mut self, term: u64) -> TermEnd {
        use openraft::type_config::async_runtime::watch::WatchReceiver;
        loop {
            tokio::select! {
                r = self.metrics.changed() => if r.is_err() { return TermEnd::Stopping },
                _ = stopped(&mut self.stop) => return TermEnd::Stopping,
            }
            let m = self.metrics.borrow_and_update().clone();
            if m.current_term != term || m.current_leader != Some(m.id) {
                return TermEnd::Ended;
            }
        }
    }
}
