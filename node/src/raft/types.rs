//! The openraft type configuration. Every openraft type the rest of the node
//! uses is named here, so an openraft upgrade touches this module, the wire
//! codec and the stores, and nothing else.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sm::{Command, Response};

/// What the membership records about a node: where it listens and which
/// incarnation it is. A node whose data dir was wiped starts with a new uid,
/// and peers refuse to treat it as the member that had the old one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
    pub uid: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, short_uid(&self.uid))
    }
}

/// The first 8 characters of a uid, for logs.
pub fn short_uid(uid: &str) -> &str {
    &uid[..uid.len().min(8)]
}

openraft::declare_raft_types!(
    /// raftcron's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = Member,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
pub type LogId = openraft::LogId<LeaderId>;
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type Vote = openraft::impls::Vote<LeaderId>;
pub type Entry = openraft::Entry<LeaderId, EntryPayload>;
pub type EntryPayload = openraft::EntryPayload<Command, NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, Member>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, Member>;
pub type LogState = openraft::LogState<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// A watch of [`RaftMetrics`] (`Raft::metrics()`).
pub type MetricsWatch = openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics>;
pub type IOFlushed = openraft::storage::IOFlushed<TypeConfig>;
pub type EntryResponder = openraft::storage::EntryResponder<TypeConfig>;

pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
pub type StreamAppendResult = openraft::raft::StreamAppendResult<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
pub type RPCError = openraft::errors::RPCError<TypeConfig>;
pub type StreamingError = openraft::errors::StreamingError<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
