//! The operator binary on SIGTERM, against a real API server
//! (`RAFTCRON_E2E_KUBECONFIG`; without it the test prints SKIPPED): two
//! replicas, as after a `helm upgrade`; the leader gets SIGTERM, exits 0 at
//! once and releases the Lease, and the standby leads within 5 s.
//!
//! The replicas run as a ServiceAccount that may only use the Lease (the
//! chart's rules for it), in a namespace of their own, so their controllers
//! touch nothing else on a shared cluster: they are refused ScheduledJobs,
//! and `--manage-nodes=false`.
//!
//! ```text
//! RAFTCRON_E2E_KUBECONFIG=/opt/k8s/admin.kubeconfig cargo test -p raftcron-operator --test shutdown
//! ```
//! (`RAFTCRON_OPERATOR_BIN=path` runs it against another build of the binary.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;

const LEASE: &str = "raftcron-operator";

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("RAFTCRON_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!(
                "SKIPPED the_leader_exits_on_sigterm_and_the_standby_leads_within_five_seconds: \
                 set RAFTCRON_E2E_KUBECONFIG to a kubeconfig (e.g. /opt/k8s/admin.kubeconfig)"
            );
            None
        }
    }
}

async fn client(path: &Path) -> Client {
    raftcron_node::tls::install_crypto_provider();
    let kc = Kubeconfig::read_from(path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object literal")
}

/// Namespace, Lease, and a ServiceAccount with the chart's Lease rules;
/// the namespace is deleted on drop.
struct Setup {
    client: Client,
    ns: String,
}

impl Setup {
    async fn create(client: &Client) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let ns = format!("rc-op-sigterm-{}-{nanos:x}", std::process::id());
        let pp = PostParams::default();
        Api::<Namespace>::all(client.clone())
            .create(&pp, &object(json!({"metadata": {"name": ns}})))
            .await
            .expect("create namespace");
        let setup = Self {
            client: client.clone(),
            ns: ns.clone(),
        };
        Api::<Lease>::namespaced(client.clone(), &ns)
            .create(&pp, &object(json!({"metadata": {"name": LEASE}})))
            .await
            .unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&pp, &object(json!({"metadata": {"name": "operator"}})))
            .await
            .unwrap();
        // As charts/raftcron/templates/rbac.yaml grants it.
        Api::<Role>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &object(json!({
                    "metadata": {"name": "operator"},
                    "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                               "resourceNames": [LEASE], "verbs": ["get", "list", "watch", "patch"]}],
                })),
            )
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &object(json!({
                    "metadata": {"name": "operator"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
                    "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
                })),
            )
            .await
            .unwrap();
        setup
    }

    /// A kubeconfig: the admin's cluster, the ServiceAccount's token.
    async fn operator_kubeconfig(&self, admin: &Path, dir: &Path) -> PathBuf {
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns)
            .create_token_request(
                "operator",
                &PostParams::default(),
                &object::<TokenRequest>(json!({"spec": {"expirationSeconds": 3600}})),
            )
            .await
            .expect("token request")
            .status
            .expect("token")
            .token;
        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
        kc["users"] =
            serde_yaml::to_value(json!([{"name": "sa", "user": {"token": token}}])).unwrap();
        for c in kc["contexts"].as_sequence_mut().expect("contexts") {
            c["context"]["user"] = "sa".into();
        }
        let path = dir.join("operator.kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
        path
    }

    async fn holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.ns)
            .get(LEASE)
            .await
            .expect("get Lease")
            .spec
            .and_then(|s| s.holder_identity)
    }

    /// Polls the Lease until `want(holder)`; the time it took, or None after `limit`.
    async fn wait_holder(
        &self,
        limit: Duration,
        want: impl Fn(Option<&str>) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if want(self.holder().await.as_deref()) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let (client, ns) = (self.client.clone(), self.ns.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let _ = Api::<Namespace>::all(client)
                    .delete(&ns, &DeleteParams::background())
                    .await;
            })
        })
        .join();
    }
}

struct Replica {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, kubeconfig: &Path, ns: &str, name: &str) -> Self {
        let config = dir.join("cluster.yaml");
        std::fs::write(&config, "image: raftcron-node:test\n").unwrap();
        let log = dir.join(format!("{name}.log"));
        // RAFTCRON_OPERATOR_BIN: run the test against another build (an older one).
        let bin = std::env::var_os("RAFTCRON_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_raftcron-operator").into());
        let child = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "--namespace", ns])
            .args([
                "--lease",
                LEASE,
                "--http",
                "127.0.0.1:0",
                "--nodes",
                "127.0.0.1:9",
            ])
            .args(["--manage-nodes", "false"])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("RAFTCRON_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start raftcron-operator");
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM {}", self.child.id());
    }

    /// Its exit status within `limit`, or None (then it is killed).
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_exits_on_sigterm_and_the_standby_leads_within_five_seconds() {
    let Some(admin) = kubeconfig() else { return };
    let client = client(&admin).await;
    let setup = Setup::create(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = setup.operator_kubeconfig(&admin, dir.path()).await;
    let mut replicas = vec![
        Replica::start(dir.path(), &kc, &setup.ns, "operator-1"),
        Replica::start(dir.path(), &kc, &setup.ns, "operator-2"),
    ];
    let names = ["operator-1", "operator-2"];
    setup
        .wait_holder(Duration::from_secs(20), |h| {
            h.is_some_and(|h| names.contains(&h))
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no replica took the Lease\n{}\n{}",
                replicas[0].log(),
                replicas[1].log()
            )
        });
    let leader = setup.holder().await.unwrap();
    let i = names.iter().position(|n| *n == leader).unwrap();
    let mut old = replicas.remove(i);
    let standby = replicas.pop().unwrap();

    let sent = Instant::now();
    old.sigterm();
    let status = old.wait_exit(Duration::from_secs(5));
    let exited = sent.elapsed();
    let took = setup
        .wait_holder(Duration::from_secs(20), |h| {
            h == Some(standby.name.as_str())
        })
        .await
        .map(|_| sent.elapsed());
    println!(
        "SIGTERM to {}: exited {status:?} after {exited:?}; {} held the Lease after {took:?}",
        old.name, standby.name
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader did not exit 0 within 5 s of SIGTERM (status {status:?})\n{}",
        old.log()
    );
    assert!(
        old.log().contains("Lease released"),
        "the leader did not release its Lease\n{}",
        old.log()
    );
    let took =
        took.unwrap_or_else(|| panic!("the standby never took the Lease\n{}", standby.log()));
    assert!(
        took <= Duration::from_secs(5),
        "the standby held the Lease {took:?} after the SIGTERM (target 5 s)\n{}",
        standby.log()
    );
    // It leads: its controllers start (they are refused ScheduledJobs here).
    let start = Instant::now();
    while !standby.log().contains("leading: starting the controllers") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the standby holds the Lease but did not start its controllers\n{}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The new leader, too, exits 0 on SIGTERM and leaves the Lease free.
    let mut last = standby;
    last.sigterm();
    let status = last.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "status {status:?}\n{}",
        last.log()
    );
    assert_eq!(setup.holder().await, None, "{}", last.log());
}
