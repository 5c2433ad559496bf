//! `raftcron-node run`: one node of a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;

use super::LogFormat;
use crate::node::{Node, NodeConfig};
use crate::raft::RaftTiming;
use crate::raft::types::NodeId;
use crate::scheduler::SchedulerArgs;
use crate::tls::TlsFiles;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// This node's Raft id (a positive integer, stable for the life of its data dir).
    #[arg(long, env = "RAFTCRON_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: NodeId,
    /// gRPC listen address (Raft and the scheduler API).
    #[arg(long, env = "RAFTCRON_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: String,
    /// Address peers and clients use to reach this node's gRPC port.
    /// Default: this node's entry in --peers, else --listen.
    #[arg(long, env = "RAFTCRON_ADVERTISE")]
    pub advertise: Option<String>,
    /// HTTP listen address (/metrics, /healthz, /readyz, /v1/*).
    #[arg(long, env = "RAFTCRON_HTTP", default_value = "127.0.0.1:8001")]
    pub http: String,
    /// Directory for the Raft log, snapshots and the node identity.
    #[arg(long, env = "RAFTCRON_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Initial members as ID=HOST:PORT, comma separated, this node included.
    #[arg(long, env = "RAFTCRON_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<(NodeId, String)>,
    /// Initialize the cluster from --peers on first start (give it to one node).
    /// Ignored once the data dir holds a cluster, and refused while a peer already belongs to one.
    #[arg(long, env = "RAFTCRON_BOOTSTRAP")]
    pub bootstrap: bool,
    /// Leader heartbeat interval.
    #[arg(long, env = "RAFTCRON_HEARTBEAT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Minimum election timeout.
    #[arg(long, env = "RAFTCRON_ELECTION_TIMEOUT_MIN", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub election_timeout_min: Duration,
    /// Maximum election timeout.
    #[arg(long, env = "RAFTCRON_ELECTION_TIMEOUT_MAX", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub election_timeout_max: Duration,
    /// Log entries between snapshots.
    #[arg(long, env = "RAFTCRON_SNAPSHOT_EVERY", default_value_t = 20_000)]
    pub snapshot_every: u64,
    /// PEM certificate for the gRPC port (enables TLS).
    #[arg(long, env = "RAFTCRON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "RAFTCRON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that signed peer and client certificates.
    #[arg(long, env = "RAFTCRON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require client certificates signed by --tls-ca (mutual TLS).
    #[arg(long, env = "RAFTCRON_TLS_CLIENT_AUTH")]
    pub tls_client_auth: bool,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Log format.
    #[arg(long, env = "RAFTCRON_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
}

fn parse_peer(s: &str) -> Result<(NodeId, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=HOST:PORT"))?;
    let id: NodeId = id
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {id:?} is not a positive integer"))?;
    if id == 0 {
        return Err(format!("{s:?}: node ids start at 1"));
    }
    let addr = addr.trim();
    if addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(format!("{s:?}: {addr:?} is not HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}

pub async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        id,
        listen,
        advertise,
        http,
        data_dir,
        peers,
        bootstrap,
        heartbeat,
        election_timeout_min,
        election_timeout_max,
        snapshot_every,
        tls_cert,
        tls_key,
        tls_ca,
        tls_client_auth,
        scheduler,
        log_format,
    } = args;
    super::init_logging(log_format);
    let mut peer_map = BTreeMap::new();
    for (pid, addr) in peers {
        if let Some(prev) = peer_map.insert(pid, addr.clone()) {
            bail!("--peers lists node {pid} twice ({prev} and {addr})");
        }
    }
    if bootstrap && !peer_map.contains_key(&id) {
        bail!("--bootstrap needs --peers to include this node ({id}=HOST:PORT)");
    }
    let advertise = advertise
        .or_else(|| peer_map.get(&id).cloned())
        .unwrap_or_else(|| listen.clone());
    let timing = RaftTiming {
        heartbeat,
        election_min: election_timeout_min,
        election_max: election_timeout_max,
        snapshot_every,
    };
    let tls = TlsFiles::from_flags(tls_cert, tls_key, tls_ca, tls_client_auth)?;
    let config = NodeConfig {
        id,
        advertise,
        data_dir,
        peers: peer_map,
        bootstrap,
        timing,
        tls,
        scheduler: scheduler.into_config()?,
    };
    let grpc = bind(&listen, "--listen").await?;
    let http = bind(&http, "--http").await?;
    let node = Node::start(config, grpc, http).await?;
    super::shutdown_signal().await;
    tracing::info!("stopping");
    if node.ctx.raft.is_leader() {
        // Hand over before going away so the next fire is not delayed by an election.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            crate::node::transfer_leadership(&node.ctx, 0),
        )
        .await;
    }
    node.shutdown().await;
    Ok(())
}
