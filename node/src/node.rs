//! One scheduler node, assembled: opens its stores, starts Raft, builds the
//! shared context (`ctx`), serves gRPC and HTTP and spawns the background
//! tasks; nothing here is imported back by them.
//!
//! ```text
//!  data dir ─► Identity ─► LogStore (raft-log) + StateMachineStore (snapshot.bin) ─► openraft::Raft
//!                                                                              │
//!   gRPC listener ◄── RaftService (peers) + Scheduler API (clients) ◄──────────┤
//!   HTTP listener ◄── /metrics /healthz /readyz /v1/*  ◄────────────────────────┤
//!   background: bootstrap-or-join, cluster-id keeper, metrics watcher ◄─────────┘
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::SchedulerApi;
use crate::ctx::{NodeConfig, NodeCtx, Stop, stopped};
use crate::identity::{Identity, IdentityError};
use crate::membership::bootstrap::{self, ForeignCluster, check_cluster};
use crate::metrics::Metrics;
use crate::pb::raft::raft_service_server::RaftServiceServer;
use crate::pb::scheduler::scheduler_server::SchedulerServer;
use crate::pb::sidecar::attach_server::AttachServer;
use crate::raft::network::{Dialer, Network};
use crate::raft::runtime::ConsensusRuntime;
use crate::raft::service::RaftGrpc;
use crate::raft::types::{NodeId, Raft};
use crate::store::{ChangeFeed, LogStore, StateMachineStore};
use crate::tls::{TlsError, TlsFiles};

/// Largest gRPC message accepted (a batch of many entries or schedules).
const MAX_MESSAGE: usize = 256 << 20;

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
    #[error(transparent)]
    ForeignCluster(#[from] ForeignCluster),
    #[error("--peers does not list this node's id {0}")]
    NotInPeers(NodeId),
}

/// A running node.
pub struct Node {
    pub ctx: Arc<NodeCtx>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Raft's own threads; declared last so they stop after everything else.
    _consensus: ConsensusRuntime,
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

        let consensus = ConsensusRuntime::new(config.id).map_err(StartError::Storage)?;
        let log = LogStore::open(&config.data_dir.join("raft-log")).map_err(StartError::Storage)?;
        let sm = StateMachineStore::open(&config.data_dir, ChangeFeed::default())
            .map_err(StartError::Storage)?;
        let raft_config = Arc::new(config.timing.config()?);
        let network = Network::new(identity.clone(), dialer.clone());
        let (id, raft_log, raft_sm) = (config.id, log.clone(), sm.clone());
        let raft = consensus
            .run(async move { Raft::new(id, raft_config, network, raft_log, raft_sm).await })
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
            attachments: crate::attach::Registry::default(),
        });

        let (shutdown, rx) = watch::channel(false);
        let grpc_addr = grpc.local_addr().map_err(StartError::Storage)?;
        let http_addr = http.local_addr().map_err(StartError::Storage)?;
        let mut tasks = vec![
            tokio::spawn(serve_grpc(ctx.clone(), grpc, server_tls, rx.clone())),
            tokio::spawn(crate::http::serve(ctx.clone(), http, rx.clone())),
            tokio::spawn(watch_metrics(ctx.clone(), rx.clone())),
            tokio::spawn(bootstrap::keep_cluster_id(ctx.clone(), rx.clone())),
            tokio::spawn(bootstrap::bootstrap_or_join(ctx.clone(), rx.clone())),
            tokio::spawn(crate::scheduler::run(ctx.clone(), rx.clone())),
            tokio::spawn(crate::attach::run(
                ctx.clone(),
                ctx.attachments.clone(),
                rx.clone(),
            )),
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
            _consensus: consensus,
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
    mut stop: Stop,
) {
    let raft_svc = RaftServiceServer::new(RaftGrpc::new(
        ctx.raft.clone(),
        ctx.identity.clone(),
        ctx.log.clone(),
        ctx.sm.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let api_svc = SchedulerServer::new(SchedulerApi::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let attach_svc = AttachServer::new(crate::attach::AttachService::new(
        ctx.clone(),
        ctx.attachments.clone(),
    ));
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
        .add_service(attach_svc)
        .serve_with_incoming_shutdown(incoming, async move {
            stopped(&mut stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

async fn watch_metrics(ctx: Arc<NodeCtx>, mut stop: Stop) {
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
            _ = stopped(&mut stop) => return,
        }
    }
}
