//! A cluster of `raftcron-node run` processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use raftcron_node::client::Client;
use raftcron_node::pb::scheduler::StatusReply;

use crate::process::ChildGuard;
use crate::{bin, free_port, wait_for};

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: u64,
    /// Extra flags for every node (e.g. timeouts).
    pub extra_args: Vec<String>,
    /// TLS files the harness's own client uses (CA, client cert, key).
    pub client_tls: Option<ClientTlsFiles>,
    /// Run node `i` inside network namespace `hosts[i-1].netns`, listening on
    /// `hosts[i-1].ip` (see [`crate::netlab`]); loopback ports otherwise.
    pub hosts: Option<Vec<Host>>,
}

/// Where a node runs when it has its own network namespace.
#[derive(Clone, Debug)]
pub struct Host {
    pub ip: String,
    pub netns: String,
}

/// PEM files of a TLS client.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn config(&self) -> tonic::transport::ClientTlsConfig {
        raftcron_node::tls::client_config(Some(&self.ca), self.cert.as_deref(), self.key.as_deref())
            .expect("client TLS files")
            .expect("TLS enabled")
    }

    /// The raftcronctl flags for these files.
    pub fn flags(&self) -> Vec<String> {
        let mut f = vec!["--tls-ca".to_string(), self.ca.display().to_string()];
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            f.extend([
                "--tls-cert".into(),
                c.display().to_string(),
                "--tls-key".into(),
                k.display().to_string(),
            ]);
        }
        f
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            extra_args: Vec::new(),
            client_tls: None,
            hosts: None,
        }
    }
}

/// One node process and everything needed to restart it.
pub struct NodeProcess {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    peers: String,
    extra_args: Vec<String>,
    netns: Option<String>,
    child: ChildGuard,
}

impl NodeProcess {
    fn command(&self, bootstrap: bool) -> Command {
        let mut c = match &self.netns {
            // `ip netns exec` execs the node in place: its pid is the node's,
            // so kill -9 reaches the node itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("raftcron-node"));
                c
            }
            None => Command::new(bin("raftcron-node")),
        };
        c.arg("run")
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &self.grpc])
            .args(["--http", &self.http])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--peers", &self.peers])
            .args(&self.extra_args);
        if bootstrap {
            c.arg("--bootstrap");
        }
        c.env(
            "RAFTCRON_LOG",
            std::env::var("RAFTCRON_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        );
        c
    }

    /// Starts the process (appending to its log file).
    pub fn start(&mut self, bootstrap: bool) {
        assert!(!self.child.is_started(), "node {} already running", self.id);
        let mut cmd = self.command(bootstrap);
        self.child
            .spawn_logged(&mut cmd, &self.log, "raftcron-node");
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Removes the data dir (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(!self.child.is_started());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Runs the node in the foreground until it exits or `timeout` passes,
    /// and returns its output (for start-up refusal tests).
    pub fn run_to_exit(&self, bootstrap: bool, timeout: Duration) -> Output {
        let mut cmd = self.command(bootstrap);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn");
        wait_with_timeout(child, timeout)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    pub client_tls: Option<ClientTlsFiles>,
}

impl Cluster {
    /// Creates the nodes' settings without starting them.
    pub fn new(opts: ClusterOptions) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix("raftcron-e2e-")
            .tempdir()
            .expect("temp dir");
        // RAFTCRON_KEEP_DIR=1 keeps data dirs and node logs for a post-mortem.
        if std::env::var_os("RAFTCRON_KEEP_DIR").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        // (grpc, http, netns) of every node.
        let addrs: Vec<(String, String, Option<String>)> = match &opts.hosts {
            Some(hosts) => {
                assert_eq!(hosts.len() as u64, opts.nodes, "one host per node");
                hosts
                    .iter()
                    .map(|h| {
                        let ns = Some(h.netns.clone());
                        (format!("{}:7001", h.ip), format!("{}:8001", h.ip), ns)
                    })
                    .collect()
            }
            None => (0..opts.nodes)
                .map(|_| {
                    let (g, h) = (free_port(), free_port());
                    (format!("127.0.0.1:{g}"), format!("127.0.0.1:{h}"), None)
                })
                .collect(),
        };
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, (g, _, _))| format!("{}={g}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = addrs
            .into_iter()
            .enumerate()
            .map(|(i, (grpc, http, netns))| {
                let id = i as u64 + 1;
                NodeProcess {
                    id,
                    grpc,
                    http,
                    data_dir: dir.path().join(format!("node-{id}")),
                    log: dir.path().join(format!("node-{id}.log")),
                    peers: peers.clone(),
                    extra_args: opts.extra_args.clone(),
                    netns,
                    child: ChildGuard::default(),
                }
            })
            .collect();
        Self {
            dir,
            nodes,
            client_tls: opts.client_tls,
        }
    }

    /// Starts every node (node 1 bootstraps) and waits for a leader.
    pub async fn start(opts: ClusterOptions) -> Self {
        let mut c = Self::new(opts);
        for n in &mut c.nodes {
            let bootstrap = n.id == 1;
            n.start(bootstrap);
        }
        c.wait_leader(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no leader\n{}", c.logs()));
        c
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.grpc.clone()).collect()
    }

    pub fn client(&self) -> Client {
        Client::new(
            self.endpoints(),
            self.client_tls.as_ref().map(ClientTlsFiles::config),
        )
        .with_deadline(Duration::from_secs(20))
    }

    /// The status of one node, if it answers.
    pub async fn status(&self, id: u64) -> Option<StatusReply> {
        let addr = &self.nodes[(id - 1) as usize].grpc;
        Client::new(
            vec![addr.clone()],
            self.client_tls.as_ref().map(ClientTlsFiles::config),
        )
        .status_of(addr)
        .await
        .ok()
    }

    /// The leader a running node reports, if that leader itself agrees.
    pub async fn leader(&self) -> Option<u64> {
        for n in &self.nodes {
            if let Some(s) = self.status(n.id).await
                && let Some(l) = s.leader
                && let Some(ls) = self.status(l).await
                && ls.leader == Some(l)
                && ls.state == "Leader"
            {
                return Some(l);
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        wait_for(timeout, || self.leader()).await
    }

    /// Waits for a leader other than `old`.
    pub async fn wait_new_leader(&self, old: u64, timeout: Duration) -> Option<u64> {
        wait_for(timeout, || async {
            self.leader().await.filter(|l| *l != old)
        })
        .await
    }

    /// Runs `raftcronctl --endpoint <all> ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("raftcronctl"))
            .args(["--endpoint", &self.endpoints().join(",")])
            .args(self.client_tls.iter().flat_map(ClientTlsFiles::flags))
            .args(args)
            .output()
            .expect("run raftcronctl")
    }

    /// Like [`Self::ctl`], asserting success and parsing `-o json` output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "raftcronctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
