//! raftcron-node: a replicated scheduler node.
//!
//! ```text
//!   raftcronctl / operator ──gRPC──► api (Scheduler) ──propose──► raft (openraft) ──► store
//!                                                                   │   ▲ peers: raft::network / raft::service
//!                                                                   ▼
//!                          scheduler (leader: claim → start → record) ◄── sm (pure state machine)
//!                                   │
//!                                   └──► executors (http, exec, job)
//!   kube (with --kubernetes): Secrets and Jobs for the executors; the leader's status writer
//! ```

pub mod api;
pub mod attach;
pub mod cli;
pub mod client;
pub mod clock;
pub mod ctx;
pub mod exec;
pub mod http;
pub mod identity;
pub mod kube;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod scheduler;
pub mod sidecar;
pub mod sm;
pub mod store;
pub mod testkit;
pub mod tls;

/// Generated protobuf code.
pub mod pb {
    pub mod raft {
        tonic::include_proto!("raftcron.raft.v1");
    }
    pub mod scheduler {
        tonic::include_proto!("raftcron.scheduler.v1");
    }
    pub mod sidecar {
        tonic::include_proto!("raftcron.sidecar.v1");
    }
    /// gRPC metadata of the scheduler API's wire contract: a follower's
    /// UNAVAILABLE names the leader, and clients follow it.
    pub mod metadata {
        pub const LEADER_ID: &str = "raftcron-leader-id";
        pub const LEADER_ADDR: &str = "raftcron-leader-addr";
    }
}
