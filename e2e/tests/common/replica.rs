//! One app replica as real processes: its app (a ledger target counting
//! every request) and its `raftcron-node sidecar`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftcron_e2e::{Ledger, bin, free_port, http_get, wait_for};

/// One replica: its app (a ledger target) and its sidecar process.
pub struct Replica {
    pub pod: String,
    pub app: Ledger,
    pub listen: String,
    pub log: std::path::PathBuf,
    pub sidecar: Option<Child>,
}

impl Replica {
    pub async fn start(
        dir: &std::path::Path,
        cluster: &[String],
        namespace: &str,
        pod: &str,
    ) -> Self {
        Self::start_with(dir, cluster, namespace, pod, &[]).await
    }

    pub async fn start_with(
        dir: &std::path::Path,
        cluster: &[String],
        namespace: &str,
        pod: &str,
        extra: &[String],
    ) -> Self {
        let home = dir.join(pod);
        std::fs::create_dir_all(&home).unwrap();
        let app = Ledger::start(&home).await;
        let listen = format!("127.0.0.1:{}", free_port());
        let log = home.join("sidecar.log");
        let mut r = Replica {
            pod: pod.to_string(),
            app,
            listen,
            log,
            sidecar: None,
        };
        r.spawn(cluster, namespace, extra);
        r
    }

    pub fn spawn(&mut self, cluster: &[String], namespace: &str, extra: &[String]) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.sidecar = Some(
            Command::new(bin("raftcron-node"))
                .arg("sidecar")
                .args(["--cluster", &cluster.join(",")])
                .args(["--namespace", namespace, "--app", "web", "--pod", &self.pod])
                .args(["--app-url", &format!("http://{}", self.app.addr)])
                .args(["--listen", &self.listen])
                .args(extra)
                .env("RAFTCRON_LOG", "info")
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn sidecar"),
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.sidecar.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn attached(&self) -> bool {
        matches!(http_get(&self.listen, "/readyz").await, Ok((200, _)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn all_attached(replicas: &[Replica], timeout: Duration) -> bool {
    wait_for(timeout, || async {
        for r in replicas {
            if !r.attached().await {
                return None;
            }
        }
        Some(())
    })
    .await
    .is_some()
}
