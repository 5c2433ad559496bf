//! One scheduler node: opens its stores, starts Raft, serves gRPC and HTTP,
//! and bootstraps or joins a cluster.
//!
//! ```text
//!  data dir ─► Identity ─► LogStore (raft-log) + StateMachineStore (redb) ─► openraft::Raft
//!                                                                              │
//!   gRPC listener ◄── RaftService (peers) + Scheduler API (clients) ◄──────────┤
//!   HTTP listener ◄── /metrics /healthz /readyz /v1/*  ◄────────────────────────┤
//!   background: bootstrap-or-join, cluster-id keeper, metrics watcher ◄─────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::api::SchedulerApi;
use crate::identity::{Identity, IdentityError};
use crate::membership;
use crate::metrics::Metrics;
use crate::pb::raft::raft_service_server::RaftServiceServer;
use crate::pb::scheduler::scheduler_server::SchedulerServer;
use crate::raft::network::{Dialer, Network};
use crate::raft::service::RaftGrpc;
use crate::raft::types::{Member, NodeId, Raft};
use crate::raft::{RaftTiming, propose};
use crate::sm::Command;
use crate::store::{ChangeFeed, LogStore, StateMachineStore};
use crate::tls::{TlsError, TlsFiles};

/// Largest gRPC message accepted (a batch of many entries or schedules).
const MAX_MESSAGE: usize = 256 << 20;

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
    pub scheduler: crate::scheduler::SchedulerConfig,
    /// The Kubernetes API (`--kubernetes`): Secrets, Jobs, status writing.
    pub kube: Option<crate::kube::Kube>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Storage(std::io::Error),
    #[error("invalid Raft settings: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error(
        "this data dir belongs to cluster {mine}, but node {peer} at {addr} belongs to cluster {theirs}; \
         refusing to start with a data dir from another cluster"
    )]
    ForeignCluster {
        mine: String,
        peer: NodeId,
        addr: String,
        theirs: String,
    },
    #[error("--peers does not list this node's id {0}")]
    NotInPeers(NodeId),
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
}

/// A running node.
pub struct Node {
    pub ctx: Arc<NodeCtx>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Node {
    /// Starts a node on already-bound listeners (tests bind port 0).
    pub async fn start(
        config: NodeConfig,
        grpc: TcpListener,
        http: TcpListener,
    ) -> Result<Node, StartError> {
        if !config.peers.contains_key(&config.id) && !config.peers.is_empty() {
            return Err(StartError::NotInPeers(config.id));
        }
        crate::tls::install_crypto_provider();
        let identity = Arc::new(Identity::load_or_create(
            &config.data_dir,
            config.id,
            config.advertise.clone(),
        )?);
        let client_tls = config.tls.as_ref().map(TlsFiles::client).transpose()?;
        let server_tls = config.tls.as_ref().map(TlsFiles::server).transpose()?;
        let dialer = Dialer::new(client_tls, Duration::from_millis(500));
        check_cluster(&identity, &config, &dialer).await?;

        let log = LogStore::open(&config.data_dir.join("raft-log")).map_err(StartError::Storage)?;
        let sm = StateMachineStore::open(
            &config.data_dir.join("snapshot.redb"),
            ChangeFeed::default(),
        )
        .map_err(StartError::Storage)?;
        let raft_config = Arc::new(config.timing.config()?);
        let network = Network::new(identity.clone(), dialer.clone());
        let raft = Raft::new(config.id, raft_config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let metrics = Arc::new(Metrics::new(config.id));
        let ctx = Arc::new(NodeCtx {
            identity,
            raft,
            sm,
            log,
            metrics,
            dialer,
            config,
        });

        let (shutdown, rx) = watch::channel(false);
        let grpc_addr = grpc.local_addr().map_err(StartError::Storage)?;
        let http_addr = http.local_addr().map_err(StartError::Storage)?;
        let mut tasks = vec![
            tokio::spawn(serve_grpc(ctx.clone(), grpc, server_tls, rx.clone())),
            tokio::spawn(crate::http::serve(ctx.clone(), http, rx.clone())),
            tokio::spawn(watch_metrics(ctx.clone(), rx.clone())),
            tokio::spawn(keep_cluster_id(ctx.clone(), rx.clone())),
            tokio::spawn(bootstrap_or_join(ctx.clone(), rx.clone())),
            tokio::spawn(crate::scheduler::run(ctx.clone(), rx.clone())),
        ];
        if let Some(kube) = ctx.config.kube.clone() {
            tasks.push(tokio::spawn(crate::kube::writer::run(
                ctx.clone(),
                kube,
                rx.clone(),
            )));
        }
        tracing::info!(id = ctx.identity.id, uid = %ctx.identity.uid, %grpc_addr, %http_addr, "node started");
        Ok(Node {
            ctx,
            shutdown,
            tasks,
            grpc_addr,
            http_addr,
        })
    }

    /// Stops serving, then stops Raft. Waits for the background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn serve_grpc(
    ctx: Arc<NodeCtx>,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let raft_svc = RaftServiceServer::new(RaftGrpc::new(
        ctx.raft.clone(),
        ctx.identity.clone(),
        ctx.log.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let api_svc = SchedulerServer::new(SchedulerApi::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // Server::tcp_nodelay applies only to listeners tonic binds itself; with
    // our own listener it was silently ignored, so accepted connections ran
    // with Nagle's algorithm, and a small response waiting for the peer's
    // delayed ACK stalled a write by ~40 ms. TcpIncoming sets it per connection.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = match builder.tls_config(tls) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "invalid TLS configuration; the gRPC port is not served");
                return;
            }
        };
    }
    let result = builder
        .add_service(raft_svc)
        .add_service(api_svc)
        .serve_with_incoming_shutdown(incoming, async move {
            stopped(&mut stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

/// Refuses to start when a reachable peer belongs to a different cluster
/// than the one recorded in this data dir.
async fn check_cluster(
    identity: &Identity,
    config: &NodeConfig,
    dialer: &Dialer,
) -> Result<(), StartError> {
    let Some(mine) = identity.cluster_id() else {
        return Ok(());
    };
    for (id, addr) in config.peers.iter().filter(|(id, _)| **id != config.id) {
        let Ok(channel) = dialer.channel(addr) else {
            continue;
        };
        let mut req = tonic::Request::new(crate::pb::raft::NodeInfoRequest {});
        req.set_timeout(Duration::from_millis(800));
        let client = crate::pb::raft::raft_service_client::RaftServiceClient::new(channel);
        if let Ok(info) = client.clone().node_info(req).await.map(|r| r.into_inner())
            && !info.cluster_id.is_empty()
            && info.cluster_id != mine
        {
            return Err(StartError::ForeignCluster {
                mine,
                peer: *id,
                addr: addr.clone(),
                theirs: info.cluster_id,
            });
        }
    }
    Ok(())
}

async fn watch_metrics(ctx: Arc<NodeCtx>, mut stop: watch::Receiver<bool>) {
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    let mut rx = ctx.raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update().clone();
            ctx.metrics.observe_raft(&m);
            ctx.metrics.schedules.set(ctx.sm.read().state.len() as i64);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = crate::node::stopped(&mut stop) => return,
        }
    }
}

/// Writes the cluster id to node.json once the log has it, and has the
/// leader propose one if the cluster has none yet (right after bootstrap).
async fn keep_cluster_id(ctx: Arc<NodeCtx>, mut stop: watch::Receiver<bool>) {
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
            _ = crate::node::stopped(&mut stop) => return,
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
async fn bootstrap_or_join(ctx: Arc<NodeCtx>, mut stop: watch::Receiver<bool>) {
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

async fn bootstrap(ctx: &NodeCtx, stop: &mut watch::Receiver<bool>) -> Bootstrap {
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
            match membership::probe(ctx, addr).await {
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
                Err(e) => waiting.push(format!("node {id} at {addr}: {}", e.message())),
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
            _ = crate::node::stopped(stop) => return Bootstrap::Stopped,
        }
    }
}

async fn join(ctx: &NodeCtx, stop: &mut watch::Receiver<bool>) {
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
            _ = crate::node::stopped(stop) => return,
        }
    }
}

/// Hands leadership to `to` (0: the most up-to-date other voter) and waits
/// until a new leader is known.
pub async fn transfer_leadership(ctx: &NodeCtx, to: NodeId) -> Result<Option<NodeId>, Status> {
    let m = crate::raft::metrics(&ctx.raft);
    if m.current_leader != Some(ctx.identity.id) {
        return Err(crate::api::propose_status(
            crate::raft::ProposeError::NotLeader {
                leader: m
                    .current_leader
                    .map(|id| (id, m.membership_config.membership().get_node(&id).cloned())),
            },
        ));
    }
    let target = if to != 0 {
        to
    } else {
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        voters
            .iter()
            .filter(|id| **id != ctx.identity.id)
            .max_by_key(|id| matched.get(id).cloned().flatten().map(|l| l.index))
            .copied()
            .ok_or_else(|| {
                Status::failed_precondition("no other voter to transfer leadership to")
            })?
    };
    ctx.raft
        .trigger()
        .transfer_leader(target)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    let mut rx = ctx.raft.metrics();
    let me = ctx.identity.id;
    let waited = tokio::time::timeout(
        Duration::from_secs(3),
        rx.wait_until(move |m| m.current_leader.is_some_and(|l| l != me)),
    )
    .await;
    match waited {
        Ok(Ok(m)) => Ok(m.current_leader),
        _ => Ok(crate::raft::metrics(&ctx.raft).current_leader),
    }
}

/// Resolves once the node is stopping. The watch guard is dropped inside,
/// so callers can await other things in the same `select!` arm.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
