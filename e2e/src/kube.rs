//! A real Kubernetes API server (from `RAFTCRON_E2E_KUBECONFIG`) with the
//! operator and the scheduler nodes as host processes.
//!
//! The control plane may have no kubelet, so the StatefulSet's pods stay
//! Pending; the harness starts node processes on the host in their place,
//! each with the identity its pod would have (hostname `raftcron-node-<i>`,
//! id i+1, bootstrap by id 1, Kubernetes client on), and points the
//! operator at them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::process::ChildGuard;
use crate::{bin, free_port, wait_for};

/// The kubeconfig to test against, or why the Kubernetes tests are skipped.
pub fn kubeconfig() -> Result<PathBuf, String> {
    match std::env::var_os("RAFTCRON_E2E_KUBECONFIG") {
        Some(p) if Path::new(&p).exists() => Ok(PathBuf::from(p)),
        Some(p) => Err(format!("RAFTCRON_E2E_KUBECONFIG={} does not exist", p.to_string_lossy())),
        None => Err("RAFTCRON_E2E_KUBECONFIG is not set (point it at a kubeconfig of a real API server to run these tests)".into()),
    }
}

pub async fn client(kubeconfig: &Path) -> Client {
    crate::install_crypto();
    let kc = Kubeconfig::read_from(kubeconfig).expect("readable kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// Installs (server-side applies) the committed CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/raftcron/crds/scheduledjobs.raftcron.dev.yaml"
    ))
    .expect("CRD file");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "scheduledjobs.raftcron.dev",
        &PatchParams::apply("raftcron-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    let established = wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let c = api.get("scheduledjobs.raftcron.dev").await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    assert!(established.is_some(), "CRD not established");
}

/// A temporary namespace, deleted on drop (best effort).
pub struct TempNamespace {
    pub name: String,
    client: Client,
}

impl TempNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}",
            std::process::id() as u64 * 1000 + free_port() as u64 % 1000
        );
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            name,
            client: client.clone(),
        }
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), self.name.clone());
        // Finalizers of objects in it need the operator, which is gone by
        // now: strip them first, or the namespace stays Terminating and the
        // API server's namespace controller retries it forever.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sjs: Api<raftcron_crds::ScheduledJob> = Api::namespaced(client.clone(), &name);
                if let Ok(list) = sjs.list_metadata(&Default::default()).await {
                    let patch = kube::api::Patch::Merge(
                        serde_json::json!({"metadata": {"finalizers": null}}),
                    );
                    let pp = kube::api::PatchParams::default();
                    let names: Vec<String> = list
                        .items
                        .into_iter()
                        .filter_map(|o| o.metadata.name)
                        .collect();
                    for chunk in names.chunks(32) {
                        let calls = chunk.iter().map(|n| sjs.patch(n, &pp, &patch));
                        let _ = futures::future::join_all(calls).await;
                    }
                }
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            });
        })
        .join()
        .ok();
    }
}

/// One host process standing in for StatefulSet pod `raftcron-node-<ordinal>`.
pub struct PodNode {
    pub ordinal: u64,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    peers: String,
    kubeconfig: PathBuf,
    child: ChildGuard,
}

impl PodNode {
    pub fn start(&mut self) {
        let mut command = Command::new(bin("raftcron-node"));
        command
            .arg("run")
            .env("HOSTNAME", format!("raftcron-node-{}", self.ordinal))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RAFTCRON_LOG", "info,openraft=warn")
            .args(["--id-from-hostname", "--bootstrap-id", "1", "--kubernetes"])
            .args([
                "--listen",
                &self.grpc,
                "--http",
                &self.http,
                "--peers",
                &self.peers,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir);
        self.child.spawn_logged(&mut command, &self.log, "node");
    }

    pub fn kill9(&mut self) {
        self.child.kill9();
    }
}

/// Three pod stand-ins.
pub fn pod_nodes(dir: &Path, kubeconfig: &Path, count: u64) -> Vec<PodNode> {
    let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (g, _))| format!("{}=127.0.0.1:{g}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (g, h))| PodNode {
            ordinal: i as u64,
            grpc: format!("127.0.0.1:{g}"),
            http: format!("127.0.0.1:{h}"),
            data_dir: dir.join(format!("pod-{i}")),
            log: dir.join(format!("pod-{i}.log")),
            peers: peers.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            child: ChildGuard::default(),
        })
        .collect()
}

/// The operator as a host process.
pub struct Operator {
    child: ChildGuard,
    pub http: String,
    args: Vec<String>,
    log: PathBuf,
    kubeconfig: PathBuf,
}

impl Operator {
    pub fn new(
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        nodes: &[String],
        config_yaml: &str,
    ) -> Self {
        let config = dir.join("operator.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let http = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--nodes".into(),
            nodes.join(","),
            "--http".into(),
            http.clone(),
            "--identity".into(),
            "e2e-operator".into(),
            "--cluster-resync".into(),
            "2s".into(),
        ];
        Self {
            child: ChildGuard::default(),
            http,
            args,
            log: dir.join("operator.log"),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    pub fn start(&mut self) {
        self.child.spawn_logged(
            Command::new(bin("raftcron-operator"))
                .args(&self.args)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("RAFTCRON_LOG", "info"),
            &self.log,
            "operator",
        );
    }

    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// `kubectl --kubeconfig … ARGS`, preferring the control plane's own kubectl.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let exe = ["/opt/k8s/bin/kubectl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("kubectl");
    Command::new(exe)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl")
}
