//! How a node finds its cluster: the start-up check against a foreign
//! cluster's data dir, bootstrap (once, explicitly) or join, and the
//! cluster id every member records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::{NodeConfig, NodeCtx, Stop, stopped};
use crate::identity::Identity;
use crate::raft::network::Dialer;
use crate::raft::propose;
use crate::raft::types::{Member, NodeId};
use crate::sm::Command;

/// A reachable peer belongs to a different cluster than this data dir.
#[derive(Debug, thiserror::Error)]
#[error(
    "this data dir belongs to cluster {mine}, but node {peer} at {addr} belongs to cluster {theirs}; \
     refusing to start with a data dir from another cluster"
)]
pub struct ForeignCluster {
    pub mine: String,
    pub peer: NodeId,
    pub addr: String,
    pub theirs: String,
}

/// How long `check_cluster` waits for each peer.
const ASK_PEER: Duration = Duration::from_millis(800);

/// Refuses to start when a reachable peer belongs to a different cluster
/// than the one recorded in this data dir.
pub async fn check_cluster(
    identity: &Identity,
    config: &NodeConfig,
    dialer: &Dialer,
) -> Result<(), ForeignCluster> {
    let Some(mine) = identity.cluster_id() else {
        return Ok(());
    };
    for (id, addr) in config.peers.iter().filter(|(id, _)| **id != config.id) {
        let Ok(channel) = dialer.channel(addr) else {
            continue;
        };
        let mut req = tonic::Request::new(crate::pb::raft::NodeInfoRequest {});
        req.set_timeout(ASK_PEER);
        let client = crate::pb::raft::raft_service_client::RaftServiceClient::new(channel);
        // Bounded here too: `set_timeout` only tells the server. A peer that
        // is starting has bound its port (the connection is accepted by the
        // kernel) but serves nothing until it is past this very check, so
        // two nodes restarted together waited on each other forever.
        let answer = tokio::time::timeout(ASK_PEER, client.clone().node_info(req)).await;
        if let Ok(Ok(info)) = answer.map(|r| r.map(|r| r.into_inner()))
            && !info.cluster_id.is_empty()
            && info.cluster_id != mine
        {
            return Err(ForeignCluster {
                mine,
                peer: *id,
                addr: addr.clone(),
                theirs: info.cluster_id,
            });
        }
    }
    Ok(())
}

/// Writes the cluster id to node.json once the log has it, and has the
/// leader propose one if the cluster has none yet (right after bootstrap).
pub async fn keep_cluster_id(ctx: Arc<NodeCtx>, mut stop: Stop) {
    let feed = ctx.sm.feed().subscribe();
    loop {
        let known = ctx.sm.read().state.cluster_id.clone();
        match known {
            Some(id) => {
                if let Err(e) = ctx.identity.set_cluster_id(&id) {
                    tracing::error!(error = %e, "cannot record the cluster id");
                }
            }
            None if ctx.raft.is_leader() => {
                let cluster_id = uuid::Uuid::new_v4().to_string();
                if let Err(e) = propose(&ctx.raft, Command::SetClusterId { cluster_id }).await {
                    tracing::debug!(error = %e, "cluster id not set yet");
                }
                continue;
            }
            None => {}
        }
        tokio::select! {
            _ = feed.changed() => { feed.take(); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Whether this node is in the membership under its own uid.
fn is_member(ctx: &NodeCtx) -> bool {
    let m = crate::raft::metrics(&ctx.raft).membership_config.clone();
    m.membership()
        .get_node(&ctx.identity.id)
        .is_some_and(|n| n.uid == ctx.identity.uid)
}

/// A node that has never held Raft state either initializes the cluster
/// (`--bootstrap`, once, and only if no peer belongs to a cluster) or asks
/// the cluster to add it.
pub async fn bootstrap_or_join(ctx: Arc<NodeCtx>, mut stop: Stop) {
    if ctx.log.is_initialized() {
        return;
    }
    if ctx.config.bootstrap {
        match bootstrap(&ctx, &mut stop).await {
            Bootstrap::Done | Bootstrap::Stopped => return,
            Bootstrap::ClusterExists(peer) => tracing::warn!(
                peer,
                "a peer already belongs to a cluster: not bootstrapping a second one; joining it instead"
            ),
        }
    }
    join(&ctx, &mut stop).await;
}

enum Bootstrap {
    Done,
    Stopped,
    ClusterExists(NodeId),
}

async fn bootstrap(ctx: &NodeCtx, stop: &mut Stop) -> Bootstrap {
    let me = &ctx.identity;
    let mut attempt = 0u32;
    loop {
        if ctx.log.is_initialized() {
            return Bootstrap::Done;
        }
        let mut members = BTreeMap::from([(
            me.id,
            Member {
                addr: me.addr.clone(),
                uid: me.uid.clone(),
            },
        )]);
        let mut waiting = Vec::new();
        for (id, addr) in ctx.config.peers.iter().filter(|(id, _)| **id != me.id) {
            match super::probe(ctx, addr).await {
                Ok(info) if info.id != *id => {
                    waiting.push(format!(
                        "{addr} answers as node {} (expected {id})",
                        info.id
                    ));
                }
                Ok(info) if info.initialized || !info.cluster_id.is_empty() => {
                    return Bootstrap::ClusterExists(*id);
                }
                Ok(info) => {
                    members.insert(
                        *id,
                        Member {
                            addr: addr.clone(),
                            uid: info.uid,
                        },
                    );
                }
                Err(e) => waiting.push(format!("node {id} at {addr}: {e}")),
            }
        }
        if waiting.is_empty() {
            match ctx.raft.initialize(members.clone()).await {
                Ok(()) => {
                    let ids: BTreeSet<_> = members.keys().collect();
                    tracing::info!(?ids, "cluster bootstrapped");
                    return Bootstrap::Done;
                }
                Err(e) => {
                    tracing::info!(error = %e, "not bootstrapping: this node already holds a cluster");
                    return Bootstrap::Done;
                }
            }
        }
        if attempt.is_multiple_of(10) {
            tracing::info!(waiting = ?waiting, "bootstrap waits for every peer to answer");
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = stopped(stop) => return Bootstrap::Stopped,
        }
    }
}

async fn join(ctx: &NodeCtx, stop: &mut Stop) {
    let me = &ctx.identity;
    let endpoints: Vec<String> = ctx
        .config
        .peers
        .iter()
        .filter(|(id, _)| **id != me.id)
        .map(|(_, a)| a.clone())
        .collect();
    if endpoints.is_empty() {
        tracing::warn!(
            "no peers to join and not bootstrapping: this node waits to be added by a cluster"
        );
        return;
    }
    let tls = ctx.config.tls.as_ref().and_then(|t| t.client().ok());
    let client = crate::client::Client::new(endpoints, tls).with_deadline(Duration::from_secs(3));
    let mut attempt = 0u32;
    while !is_member(ctx) {
        let req = crate::pb::scheduler::AddMemberRequest {
            id: me.id,
            addr: me.addr.clone(),
            uid: me.uid.clone(),
            voter: true,
        };
        match client.add_member(req).await {
            Ok(_) => tracing::info!("joined the cluster"),
            Err(e) if attempt.is_multiple_of(10) => {
                tracing::info!(error = %e, "asking the cluster to add this node")
            }
            Err(_) => {}
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped(stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Two nodes restarted together each bound their ports and then asked
    /// the other, which served nothing yet, and waited forever (a 3-node
    /// fault run lost its quorum for good this way).
    #[tokio::test]
    async fn a_peer_that_accepts_connections_but_serves_nothing_does_not_hold_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::load_or_create(dir.path(), 1, "127.0.0.1:1".into()).unwrap();
        identity.set_cluster_id("c-1").unwrap();
        // Bound and listening: the kernel completes the handshake, nobody answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = NodeConfig {
            id: 1,
            advertise: "127.0.0.1:1".into(),
            data_dir: dir.path().to_path_buf(),
            peers: BTreeMap::from([
                (1, "127.0.0.1:1".to_string()),
                (2, silent.local_addr().unwrap().to_string()),
            ]),
            bootstrap: false,
            timing: crate::raft::RaftTiming::default(),
            tls: None,
            scheduler: crate::scheduler::SchedulerConfig::default(),
            kube: None,
        };
        // With TLS, as the fault harness and the chart run: the client waits
        // for a ServerHello that never comes, which no gRPC deadline covered.
        let tls = tonic::transport::ClientTlsConfig::new().domain_name("peer");
        let dialer = Dialer::new(Some(tls), Duration::from_secs(1));
        let checked = tokio::time::timeout(
            Duration::from_secs(5),
            check_cluster(&identity, &config, &dialer),
        )
        .await;
        assert!(
            matches!(checked, Ok(Ok(()))),
            "check_cluster did not return within 5 s against a silent peer"
        );
        drop(silent);
    }
}
