//! `raftcron-node run`: one node of a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::net::TcpListener;

use super::LogFormat;
use crate::ctx::NodeConfig;
use crate::node::Node;
use crate::raft::RaftTiming;
use crate::raft::types::NodeId;
use crate::scheduler::SchedulerArgs;
use crate::tls::TlsFiles;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// This node's Raft id (a positive integer, stable for the life of its data dir).
    /// May be left out with --id-from-hostname.
    #[arg(long, env = "RAFTCRON_ID", value_parser = clap::value_parser!(u64).range(1..),
          required_unless_present = "id_from_hostname")]
    pub id: Option<NodeId>,
    /// Take the id from the trailing StatefulSet ordinal of HOSTNAME (else the
    /// system hostname), plus one: pod raftcron-node-2 is node 3.
    #[arg(long, env = "RAFTCRON_ID_FROM_HOSTNAME")]
    pub id_from_hostname: bool,
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
    /// --bootstrap on the node whose id is N, ignored on the others, so every
    /// pod of a StatefulSet can share one template while only one bootstraps.
    #[arg(long, env = "RAFTCRON_BOOTSTRAP_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub bootstrap_id: Option<NodeId>,
    /// Use the Kubernetes API (in-cluster config, else KUBECONFIG): Secret
    /// headers, job actions, and the leader writes ScheduledJob statuses and Events.
    #[arg(long, env = "RAFTCRON_KUBERNETES")]
    pub kubernetes: bool,
    /// ScheduledJob status writes (and Events) per second, sustained.
    #[arg(long, env = "RAFTCRON_STATUS_QPS", default_value_t = 20.0)]
    pub status_qps: f64,
    /// ScheduledJob status writes allowed at once after a quiet period.
    #[arg(long, env = "RAFTCRON_STATUS_BURST", default_value_t = 50)]
    pub status_burst: u32,
    /// Leader heartbeat interval.
    #[arg(long, env = "RAFTCRON_HEARTBEAT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Minimum election timeout.
    #[arg(long, env = "RAFTCRON_ELECTION_TIMEOUT_MIN", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub election_timeout_min: Duration,
    /// Maximum election timeout.
    #[arg(long, env = "RAFTCRON_ELECTION_TIMEOUT_MAX", default_value = "350ms", value_parser = humantime::parse_duration)]
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
    /// Require client certificates signed by --tls-ca (mutual TLS): on by
    /// default whenever TLS is, so peers, the operator and clients must all
    /// present a certificate of the cluster CA. `--tls-client-auth=false`
    /// serves TLS to any client (not recommended).
    #[arg(long, env = "RAFTCRON_TLS_CLIENT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_client_auth: Option<bool>,
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

/// The node id of a StatefulSet pod: its trailing ordinal plus one
/// (`raftcron-node-0` is node 1), since Raft ids start at 1. A fully
/// qualified name is cut to its first label.
pub fn id_from_hostname(hostname: &str) -> Result<NodeId, String> {
    let host = hostname.trim().split('.').next().unwrap_or_default();
    let ordinal = host
        .rsplit_once('-')
        .filter(|(name, ord)| {
            !name.is_empty() && !ord.is_empty() && ord.bytes().all(|b| b.is_ascii_digit())
        })
        .map(|(_, ord)| ord)
        .ok_or_else(|| {
            format!(
                "--id-from-hostname: hostname {hostname:?} does not end in -<number> \
                 (a StatefulSet pod name such as raftcron-node-0); give --id instead"
            )
        })?;
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| format!("--id-from-hostname: the ordinal of {hostname:?} is too large"))
}

/// Reconciles `--id` and `--id-from-hostname`.
fn resolve_id(
    id: Option<NodeId>,
    from_hostname: bool,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<NodeId, String> {
    if !from_hostname {
        return id.ok_or_else(|| "--id is required (or --id-from-hostname)".to_string());
    }
    let host = hostname().ok_or_else(|| {
        "--id-from-hostname: neither HOSTNAME nor the system hostname is set".to_string()
    })?;
    let derived = id_from_hostname(&host)?;
    match id {
        Some(given) if given != derived => Err(format!(
            "--id {given} disagrees with --id-from-hostname: hostname {host:?} gives id {derived}"
        )),
        _ => Ok(derived),
    }
}

/// HOSTNAME (set in every pod), else the kernel's hostname.
fn hostname() -> Option<String> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.trim().is_empty()
    {
        return Some(h);
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!h.is_empty()).then_some(h)
}

pub async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        id,
        id_from_hostname,
        listen,
        advertise,
        http,
        data_dir,
        peers,
        bootstrap,
        bootstrap_id,
        kubernetes,
        status_qps,
        status_burst,
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
    super::init_logging(log_format, super::DEFAULT_LOG);
    let id = resolve_id(id, id_from_hostname, hostname).map_err(anyhow::Error::msg)?;
    let bootstrap = bootstrap || bootstrap_id == Some(id);
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
    let lease = crate::scheduler::fire_lease(election_timeout_min, scheduler.max_clock_skew);
    if lease < heartbeat * 2 {
        bail!(
            "--election-timeout-min {election_timeout_min:?} leaves a fire lease of {lease:?} \
             (the timeout less --max-clock-skew {:?} less 50 ms), under two heartbeats \
             ({heartbeat:?} each): raise --election-timeout-min or lower --heartbeat",
            scheduler.max_clock_skew
        );
    }
    let tls = TlsFiles::from_flags(tls_cert, tls_key, tls_ca, tls_client_auth)?;
    let kube = if kubernetes {
        let settings = crate::kube::StatusSettings {
            qps: status_qps,
            burst: status_burst,
        };
        Some(crate::kube::Kube::connect(settings).await?)
    } else {
        None
    };
    let config = NodeConfig {
        id,
        advertise,
        data_dir,
        peers: peer_map,
        bootstrap,
        timing,
        tls,
        scheduler: scheduler.into_config()?,
        kube,
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
            crate::membership::transfer_leadership(&node.ctx, 0),
        )
        .await;
    }
    node.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statefulset_pod_name_gives_its_ordinal_plus_one() {
        assert_eq!(id_from_hostname("raftcron-node-0"), Ok(1));
        assert_eq!(id_from_hostname("raftcron-node-2"), Ok(3));
        assert_eq!(id_from_hostname("node-41"), Ok(42));
        assert_eq!(
            id_from_hostname("raftcron-node-2.raftcron-node.raftcron.svc.cluster.local"),
            Ok(3)
        );
    }

    #[test]
    fn a_hostname_without_a_trailing_ordinal_is_refused_with_a_hint() {
        for bad in [
            "raftcron-node",
            "laptop",
            "node-",
            "-3",
            "node-2a",
            "",
            "node-99999999999999999999",
        ] {
            let err = id_from_hostname(bad).unwrap_err();
            assert!(err.starts_with("--id-from-hostname"), "{bad:?}: {err}");
        }
        assert!(
            id_from_hostname("laptop")
                .unwrap_err()
                .contains("give --id instead")
        );
    }

    #[test]
    fn id_and_id_from_hostname_together_must_agree() {
        let host = || Some("raftcron-node-1".to_string());
        assert_eq!(resolve_id(None, true, host), Ok(2));
        assert_eq!(resolve_id(Some(2), true, host), Ok(2));
        let err = resolve_id(Some(5), true, host).unwrap_err();
        assert!(err.contains("--id 5 disagrees"), "{err}");
        assert_eq!(resolve_id(Some(7), false, || None), Ok(7));
        assert!(resolve_id(None, true, || None).is_err());
    }

    #[test]
    fn bootstrap_id_bootstraps_only_the_named_node() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["raftcron-node", "--data-dir", "/tmp/x"]
                    .iter()
                    .chain(args.iter()),
            )
            .map(|c| c.run)
        };
        let a = parse(&["--id", "1", "--bootstrap-id", "1"]).expect("parses");
        assert_eq!(
            (a.id, a.bootstrap_id, a.bootstrap),
            (Some(1), Some(1), false)
        );
        assert!(parse(&["--bootstrap-id", "1"]).is_err(), "an id is needed");
        let b = parse(&["--id-from-hostname", "--kubernetes"]).expect("parses");
        assert!(b.id_from_hostname && b.kubernetes);
        assert_eq!((b.status_qps, b.status_burst), (20.0, 50));
    }
}
