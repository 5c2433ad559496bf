//! Raft: openraft's types (all in `types`), the gRPC transport (`network`
//! for the client side, `service` for the server side) and its wire codec.

pub mod network;
pub mod runtime;
pub mod service;
pub mod types;
pub mod wire;

use std::time::Duration;

/// Raft timing, from the node's flags.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Entries applied between snapshots.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            // Measured (raftcron-bench failover): kill -9 of the leader → the next
            // due fire executes after ~0.86 s (p50), under the 1 s target.
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(250),
            election_max: Duration::from_millis(350),
            snapshot_every: 20_000,
        }
    }
}

impl RaftTiming {
    /// The openraft configuration, validated.
    pub fn config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "raftcron".to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            // A partitioned or restarted node asks first whether it could win,
            // so it cannot bump the term and depose a healthy leader.
            enable_pre_vote: Some(true),
            // A restarted leader must win a new election, never resume its old
            // term: the fire loop tells its predecessors' claims and starts
            // from its own by term (`plan::takeover`), and a process that
            // resumed a term would take the runs its dead predecessor had
            // claimed or started for its own and leave them as they were.
            enable_leader_restore: Some(false),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 1000,
            ..Default::default()
        }
        .validate()
    }
}

use crate::sm::{Command, Response};
use types::{ClientWriteError, Member, NodeId, Raft, RaftError};

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; the leader is named when known.
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader {
        leader: Option<(NodeId, Option<Member>)>,
    },
    /// The entry was appended but leadership changed before it committed; it
    /// may or may not have been applied. Every command is idempotent, so a
    /// retry is safe.
    #[error("leadership changed before the write was confirmed; retry{}", leader_hint(.leader))]
    Discarded {
        leader: Option<(NodeId, Option<Member>)>,
    },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("the Raft node has stopped: {0}")]
    Stopped(String),
    /// A read could not be confirmed: no quorum answered the leader.
    #[error("no quorum confirmed the read: {0}")]
    NoQuorum(String),
}

impl From<openraft::errors::ForwardToLeader<types::TypeConfig>> for ProposeError {
    fn from(f: openraft::errors::ForwardToLeader<types::TypeConfig>) -> Self {
        ProposeError::NotLeader {
            leader: f.leader_id.map(|id| (id, f.leader_node)),
        }
    }
}

fn leader_hint(leader: &Option<(NodeId, Option<Member>)>) -> String {
    match leader {
        Some((id, Some(m))) => format!("; the leader is node {id} at {}", m.addr),
        Some((id, None)) => format!("; the leader is node {id}"),
        None => "; no leader is known yet".to_string(),
    }
}

/// Proposes a command and waits until it is committed and applied here.
pub async fn propose(raft: &Raft, cmd: Command) -> Result<Response, ProposeError> {
    match raft.client_write(cmd).await {
        Ok(r) => Ok(r.data),
        Err(e) => Err(write_error(e)),
    }
}

/// Proposes a command as `leader` and waits until it is committed and
/// applied here. Refused (`NotLeader`) once `leader`'s term is over, so a
/// fire loop never writes on behalf of a term it no longer leads.
///
/// openraft's `write(..).await` alone returns once the entry is handed to
/// the Raft core, not when it is applied: a caller that reads the state
/// after it may not see its own write (that was the double start of an
/// attempt written off at a takeover, RELIABILITY.md).
pub async fn propose_as(
    raft: &Raft,
    leader: types::LeaderId,
    cmd: Command,
) -> Result<Response, ProposeError> {
    let (responder, done) = openraft::impls::ProgressResponder::complete_only();
    raft.write(cmd)
        .with_leader(leader)
        .responder(responder)
        .await
        .map_err(|e| ProposeError::Stopped(e.to_string()))?;
    match done.await {
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
        Err(_) => Err(ProposeError::Stopped("raft stopped".to_string())),
    }
}

/// Waits until this node has applied everything committed before the call
/// (openraft's read index, confirmed by a quorum), so a read after it sees
/// every write acknowledged before the read began, wherever it was
/// acknowledged. Refused with `NotLeader` (the leader named) on a follower,
/// whose applied state may lag, for instance just after a restart: the
/// client follows to the leader, as it does for writes.
pub async fn read_barrier(raft: &Raft) -> Result<(), ProposeError> {
    use openraft::errors::LinearizableReadError;
    match raft
        .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
        .await
    {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => Err(f.into()),
        Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
            Err(ProposeError::NoQuorum(q.to_string()))
        }
        Err(RaftError::Fatal(f)) => Err(ProposeError::Stopped(f.to_string())),
    }
}

pub fn write_error(e: RaftError<ClientWriteError>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => ProposeError::Discarded {
            leader: f.leader_id.map(|id| (id, f.leader_node)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ProposeError::Membership(c.to_string())
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => {
            ProposeError::Membership(p.to_string())
        }
        RaftError::Fatal(f) => ProposeError::Stopped(f.to_string()),
    }
}

/// The other voter furthest along in replication (by the leader's view of
/// it): the one that can take over leadership soonest.
pub fn most_caught_up_other_voter(m: &types::RaftMetrics) -> Option<NodeId> {
    let matched = |id: &NodeId| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
    };
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != m.id)
        .max_by_key(|id| matched(id).map(|l| l.index))
}

/// A copy of openraft's current metrics.
pub fn metrics(raft: &Raft) -> types::RaftMetrics {
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    raft.metrics().borrow_watched().clone()
}

#[cfg(test)]
mod tests;
