//! The injection webhook in this process against a real API server
//! (`RAFTCRON_E2E_KUBECONFIG`; without it the test prints SKIPPED): the
//! operator's own certificate keeping makes a CA and serving certificate in a
//! Secret and patches them into a MutatingWebhookConfiguration's caBundle,
//! the HTTPS server serves them, and pods created with dry-run in a test
//! namespace come back from the API server injected, skipped with the
//! reason, or untouched. Then the Secret is deleted: a new CA is made, the
//! caBundle follows, the server reloads, and pods are injected again with no
//! restart. The webhook's failurePolicy is Fail, so a call that did not reach
//! this server or failed TLS shows up as a refused create, never as a pass.
//! Last, a real pod without an app name gets one InjectionSkipped Event from
//! the reporter, and a second reporter (a new leader) adds none.
//!
//! The API server calls `https://127.0.0.1:<port>/mutate`, so it must run on
//! this machine (as /opt/k8s does); `RAFTCRON_E2E_WEBHOOK_HOST` names another
//! address of this machine that it can reach.
//!
//! ```text
//! RAFTCRON_E2E_KUBECONFIG=/opt/k8s/admin.kubeconfig cargo test -p raftcron-operator --test webhook
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use raftcron_operator::config::ClusterConfig;
use raftcron_operator::metrics::Metrics;
use raftcron_operator::webhook::inject::{CONTAINER, Settings};
use raftcron_operator::webhook::tls::{SwapCert, TlsListener};
use raftcron_operator::webhook::{report, rotate, serve};
use serde_json::json;

const SECRET: &str = "webhook-tls";

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("RAFTCRON_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!(
                "SKIPPED the_webhook_injects_through_a_real_api_server_with_certificates_it_keeps_itself: \
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

/// A namespace and a webhook configuration of the same name, both removed on drop.
struct Setup {
    client: Client,
    name: String,
}

impl Setup {
    async fn create(client: &Client, url: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Mutating webhooks are called in the order of their configurations'
        // names: "0-…" comes before an installed raftcron's, so this one
        // injects (its image says so) and that one finds the pod done.
        let name = format!("0-rc-webhook-{}-{nanos:x}", std::process::id());
        let setup = Self {
            client: client.clone(),
            name: name.clone(),
        };
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": name}})),
            )
            .await
            .expect("create namespace");
        // As the chart's, but called by URL, only for this namespace, and
        // failurePolicy Fail so that a call that did not work is seen.
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": name},
                    "webhooks": [{
                        "name": "inject.raftcron.dev",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 5,
                        "clientConfig": {"url": url},
                        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                   "resources": ["pods"], "scope": "Namespaced"}],
                        "objectSelector": {"matchLabels": {"raftcron.dev/inject": "true"}},
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}},
                    }],
                })),
            )
            .await
            .expect("create MutatingWebhookConfiguration");
        setup
    }

    async fn ca_bundle(&self) -> Vec<u8> {
        let c = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .get(&self.name)
            .await
            .expect("get MutatingWebhookConfiguration");
        c.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .map(|b| b.0)
            .unwrap_or_default()
    }

    async fn try_dry_run(&self, yaml: &str) -> Result<Pod, kube::Error> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.name);
        let pod: Pod = serde_yaml::from_str(yaml).unwrap();
        let pp = PostParams {
            dry_run: true,
            ..Default::default()
        };
        pods.create(&pp, &pod).await
    }

    /// Creates the pod with dry-run until the API server takes it (the
    /// namespace's default ServiceAccount and the caBundle may lag).
    async fn dry_run(&self, yaml: &str) -> Pod {
        let start = Instant::now();
        loop {
            match self.try_dry_run(yaml).await {
                Ok(p) => return p,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    println!("dry-run create not taken yet: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("dry-run create of {yaml}: {e}"),
            }
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            })
        })
        .join();
    }
}

fn status(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("raftcron.dev/inject-status").cloned())
}

fn init_names(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| c.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

const WEB: &str = r#"
metadata: {generateName: web-, labels: {app.kubernetes.io/name: web, raftcron.dev/inject: "true"}}
spec: {containers: [{name: web, image: localhost/busybox:latest}]}
"#;

async fn wait_for(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{what}: after {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_injects_through_a_real_api_server_with_certificates_it_keeps_itself() {
    let Some(path) = kubeconfig() else { return };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "raftcron_operator=debug",
        ))
        .with_test_writer()
        .try_init();
    let client = client(&path).await;
    let host = std::env::var("RAFTCRON_E2E_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let tcp = tokio::net::TcpListener::bind((host.as_str(), 0))
        .await
        .unwrap();
    let url = format!("https://{}/mutate", tcp.local_addr().unwrap());
    let setup = Setup::create(&client, &url).await;
    let ns = setup.name.clone();

    let version = client.apiserver_version().await.expect("/version");
    let cfg =
        ClusterConfig::parse("image: ghcr.io/raftcron/raftcron-node:test\n", "test.yaml").unwrap();
    let settings =
        Settings::new(&cfg, "raftcron-system").with_server_version(&version.major, &version.minor);
    assert_eq!(
        settings.unavailable, None,
        "this API server ({}) runs native sidecars",
        version.git_version
    );
    let certs = Arc::new(SwapCert::default());
    let metrics = Arc::new(Metrics::default());
    let listener = TlsListener::new(tcp, certs.clone()).unwrap();
    tokio::spawn(serve(listener, Arc::new(settings), metrics.clone()));
    tokio::spawn(rotate::keep(
        client.clone(),
        rotate::Target {
            namespace: ns.clone(),
            secret: SECRET.into(),
            webhook_configuration: ns.clone(),
            sans: vec![host.clone()],
            owner: None,
        },
    ));
    tokio::spawn(rotate::load(
        client.clone(),
        ns.clone(),
        SECRET.into(),
        certs.clone(),
        metrics.clone(),
    ));

    wait_for(
        "caBundle patched and certificate served",
        Duration::from_secs(30),
        async || !setup.ca_bundle().await.is_empty() && certs.is_set(),
    )
    .await;
    let first_bundle = setup.ca_bundle().await;

    let injected = setup.dry_run(WEB).await;
    assert_eq!(
        init_names(&injected),
        [CONTAINER],
        "a labelled pod gets the sidecar"
    );
    let sidecar = &injected
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        Some("Always"),
        "as a native sidecar, kept by the API server"
    );
    assert_eq!(
        sidecar.image.as_deref(),
        Some("ghcr.io/raftcron/raftcron-node:test"),
        "by this webhook"
    );
    assert_eq!(status(&injected).as_deref(), Some("injected"));

    let nameless = setup
        .dry_run("metadata: {generateName: nameless-, labels: {raftcron.dev/inject: \"true\"}}\nspec: {containers: [{name: web, image: localhost/busybox:latest}]}\n")
        .await;
    assert!(init_names(&nameless).is_empty(), "no app name: no sidecar");
    assert!(
        status(&nameless).is_some_and(|s| s.starts_with("skipped: no app name")),
        "and the reason on the pod: {:?}",
        status(&nameless)
    );
    let plain = setup
        .dry_run("metadata: {generateName: plain-}\nspec: {containers: [{name: web, image: localhost/busybox:latest}]}\n")
        .await;
    assert!(
        init_names(&plain).is_empty() && status(&plain).is_none(),
        "an unlabelled pod is untouched"
    );

    // A lost Secret: a new CA, the caBundle follows, the server reloads,
    // and no call fails meanwhile (the old CA stays trusted until the
    // replicas serve the new leaf).
    Api::<Secret>::namespaced(client.clone(), &ns)
        .delete(SECRET, &DeleteParams::default())
        .await
        .expect("delete the Secret");
    let deleted = Instant::now();
    let (mut calls, mut failures) = (0, Vec::new());
    while deleted.elapsed() < Duration::from_secs(8) {
        match setup.try_dry_run(WEB).await {
            Ok(p) => assert_eq!(init_names(&p), [CONTAINER]),
            Err(e) => failures.push(format!("{:?}: {e}", deleted.elapsed())),
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} pod creates failed during the rotation: {failures:#?}",
        failures.len()
    );
    println!("{calls} pod creates during the rotation, all injected");
    let cas = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    wait_for(
        "the caBundle holds the new CA only",
        Duration::from_secs(10),
        async || {
            let b = setup.ca_bundle().await;
            cas(&b) == 1 && b != first_bundle
        },
    )
    .await;
    let again = setup.dry_run(WEB).await;
    assert_eq!(
        init_names(&again),
        [CONTAINER],
        "injected under the new CA only"
    );
    let injected_count = metrics
        .webhook_admissions
        .with_label_values(&["injected"])
        .get();
    assert!(injected_count >= 3, "admissions counted: {injected_count}");

    // The skip Event, once per pod, whichever leader writes it.
    let pod: Pod = serde_yaml::from_str(
        "metadata: {name: nameless, labels: {raftcron.dev/inject: \"true\"}}\nspec: {containers: [{name: web, image: localhost/busybox:latest, imagePullPolicy: IfNotPresent, command: [sleep, \"60\"]}]}\n",
    )
    .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create a labelled pod without an app name");
    let event_name = format!(
        "nameless.injection-{}",
        pod.metadata.uid.as_deref().unwrap()
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let excluded = vec!["kube-system".to_string(), "raftcron-system".to_string()];
    let first = tokio::spawn(report::run(
        client.clone(),
        excluded.clone(),
        "e2e-leader-1".into(),
    ));
    wait_for(
        "the InjectionSkipped Event",
        Duration::from_secs(30),
        async || events.get_opt(&event_name).await.unwrap().is_some(),
    )
    .await;
    first.abort();
    let second = tokio::spawn(report::run(client.clone(), excluded, "e2e-leader-2".into()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.abort();
    let ev = events.get(&event_name).await.unwrap();
    assert_eq!(ev.reason.as_deref(), Some("InjectionSkipped"));
    assert!(
        ev.note
            .as_deref()
            .unwrap()
            .starts_with("sidecar not injected: no app name"),
        "{:?}",
        ev.note
    );
    assert_eq!(
        ev.regarding.unwrap().uid,
        pod.metadata.uid,
        "on the pod itself, with its uid"
    );
    let about_it: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InjectionSkipped"))
        .map(|e| format!("{} by {:?}", e.metadata.name.unwrap(), e.reporting_instance))
        .collect();
    assert_eq!(
        about_it.len(),
        1,
        "one Event for the pod, not one per leader: {about_it:?}"
    );
}
