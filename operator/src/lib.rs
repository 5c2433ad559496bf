//! raftcron-operator: reconciles ScheduledJobs into the scheduler cluster
//! and keeps that cluster's Kubernetes objects in shape.
//!
//! ```text
//!   Lease (one active replica, leadership.rs)
//!     ├─► ScheduledJob controller: validate → register → Ready (controller.rs)
//!     └─► node cluster loop: build (pure) → membership → apply (cluster.rs)
//!     └─► webhook certificates and skipped-injection Events (webhook/)
//!   every replica: sidecar injection webhook, HTTPS /mutate (webhook/)
//!   SIGTERM / SIGINT: stop the leader's tasks, release the Lease, exit 0
//!   HTTP: /metrics /healthz /readyz
//! ```

pub mod build;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod leadership;
pub mod metrics;
pub mod nodes;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Resource};
use raftcron_crds::ScheduledJob;

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::nodes::{GrpcNodes, NodeApi};

#[derive(Parser, Debug)]
#[command(
    name = "raftcron-operator",
    version,
    about = "raftcron Kubernetes operator"
)]
pub struct Args {
    /// Node cluster settings (YAML; the chart mounts it from a ConfigMap).
    #[arg(
        long,
        env = "RAFTCRON_CONFIG",
        default_value = "/etc/raftcron/cluster.yaml"
    )]
    pub config: PathBuf,
    /// Namespace of the node cluster (and of the Lease).
    #[arg(long, env = "RAFTCRON_NAMESPACE")]
    pub namespace: String,
    /// Create and update the node StatefulSet, Services, PDB and config. Off:
    /// only register ScheduledJobs with an existing cluster.
    #[arg(long, env = "RAFTCRON_MANAGE_NODES", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_nodes: bool,
    /// gRPC addresses of the nodes; default: the StatefulSet pods' DNS names.
    #[arg(long, env = "RAFTCRON_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// ConfigMap (in --namespace) that owns the node objects, so removing the
    /// installation removes them too.
    #[arg(long, env = "RAFTCRON_OWNER_CONFIGMAP")]
    pub owner_configmap: Option<String>,
    /// This replica's name in the Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "raftcron-operator")]
    pub identity: String,
    #[arg(long, env = "RAFTCRON_LEASE", default_value = "raftcron-operator")]
    pub lease: String,
    /// How long the Lease stays valid after a renewal: the longest the
    /// standby waits when the leader dies without releasing it. Whole seconds.
    #[arg(long, env = "RAFTCRON_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// The leader renews this long before its Lease expires, and stops
    /// leading half of it before expiry if the renewal has not shown up.
    /// Whole seconds, shorter than --lease-duration.
    #[arg(long, env = "RAFTCRON_LEASE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_grace: Duration,
    /// HTTP listen address for /metrics, /healthz, /readyz.
    #[arg(long, env = "RAFTCRON_HTTP", default_value = "0.0.0.0:8080")]
    pub http: String,
    /// CA and client certificate for the nodes' gRPC port (when TLS is on).
    #[arg(long, env = "RAFTCRON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "RAFTCRON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "RAFTCRON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How often the node cluster is re-applied.
    #[arg(long, env = "RAFTCRON_CLUSTER_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cluster_resync: Duration,
    #[command(flatten)]
    pub webhook: webhook::WebhookArgs,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTCRON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        namespace,
        manage_nodes,
        nodes,
        owner_configmap,
        identity,
        lease,
        lease_duration,
        lease_grace,
        http,
        tls_ca,
        tls_cert,
        tls_key,
        cluster_resync,
        webhook,
    } = args;
    init_logging();
    // Installs the SIGTERM and SIGINT handlers now (its first poll), so a
    // signal during start-up is not the default "terminate at once".
    let mut shutdown = std::pin::pin!(raftcron_node::cli::shutdown_signal());
    if futures::poll!(shutdown.as_mut()).is_ready() {
        return Ok(());
    }
    let election = leadership::Settings::new(
        namespace.clone(),
        lease,
        identity.clone(),
        lease_duration,
        lease_grace,
    )?;
    raftcron_node::tls::install_crypto_provider();
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let cfg = ClusterConfig::parse(&text, &config.display().to_string())?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let tls = raftcron_node::tls::client_config(
        tls_ca.as_deref(),
        tls_cert.as_deref(),
        tls_key.as_deref(),
    )?;
    let endpoints = if nodes.is_empty() {
        cfg.endpoints(&namespace)
    } else {
        nodes
    };
    let node_api: Arc<dyn NodeApi> = Arc::new(GrpcNodes::new(endpoints, tls));
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&http)
        .await
        .with_context(|| format!("cannot listen on {http}"))?;
    tokio::spawn(serve_http(listener, metrics.clone()));
    let webhook =
        webhook::Webhook::start(webhook, &client, &cfg, &namespace, metrics.clone()).await?;

    let elector = leadership::Elector::start(client.clone(), election);
    let mut leading = elector.leading();
    let mut running: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let outcome = loop {
        let is_leader = *leading.borrow_and_update();
        metrics.is_leader.set(i64::from(is_leader));
        if is_leader && running.is_empty() {
            tracing::info!(%identity, "leading: starting the controllers");
            let owner = match &owner_configmap {
                Some(name) => owner_reference(&client, &namespace, name).await,
                None => None,
            };
            running.push(tokio::spawn(run_controller(
                client.clone(),
                node_api.clone(),
                cfg.exec_enabled,
                metrics.clone(),
                identity.clone(),
            )));
            if let Some(w) = &webhook {
                running.extend(w.leader_tasks(&client, owner.clone(), identity.clone()));
            }
            if manage_nodes {
                running.push(tokio::spawn(run_cluster_loop(
                    client.clone(),
                    cfg.clone(),
                    namespace.clone(),
                    node_api.clone(),
                    owner,
                    cluster_resync,
                    metrics.clone(),
                )));
            }
        } else if !is_leader && !running.is_empty() {
            tracing::warn!("lost leadership: stopping the controllers");
            stop(&mut running).await;
        }
        tokio::select! {
            r = leading.changed() => if r.is_err() { break Err(anyhow::anyhow!("leader election stopped")) },
            _ = &mut shutdown => {
                tracing::info!("stopping: SIGTERM or SIGINT");
                break Ok(());
            }
        }
    };
    // Leader tasks first, then the Lease: never two replicas at work.
    stop(&mut running).await;
    metrics.is_leader.set(0);
    elector.release().await;
    outcome
}

/// Aborts the tasks and waits until each is gone.
async fn stop(tasks: &mut Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks.iter() {
        t.abort();
    }
    for t in tasks.drain(..) {
        let _ = t.await;
    }
}

async fn owner_reference(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Option<OwnerReference> {
    match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
    {
        Ok(cm) => cm.controller_owner_ref(&()).map(|mut o| {
            // Owned for garbage collection only; the operator is the controller.
            o.controller = Some(false);
            o.block_owner_deletion = Some(false);
            o
        }),
        Err(e) => {
            tracing::warn!(configmap = name, error = %e, "owner ConfigMap not found; node objects will not be garbage-collected with it");
            None
        }
    }
}

async fn run_controller(
    client: kube::Client,
    nodes: Arc<dyn NodeApi>,
    exec_enabled: bool,
    metrics: Arc<Metrics>,
    identity: String,
) {
    let api: Api<ScheduledJob> = Api::all(client.clone());
    let reporter = Reporter {
        controller: raftcron_crds::names::FIELD_MANAGER_OPERATOR.into(),
        instance: Some(identity),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(controller::Ctx::new(
        client,
        nodes,
        exec_enabled,
        recorder,
        metrics,
    ));
    Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(32))
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn run_cluster_loop(
    client: kube::Client,
    cfg: ClusterConfig,
    namespace: String,
    nodes: Arc<dyn NodeApi>,
    owner: Option<OwnerReference>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut failures = 0u32;
    loop {
        match cluster::reconcile(&client, &cfg, &namespace, nodes.as_ref(), &owner).await {
            Ok(()) => {
                failures = 0;
                metrics.cluster_reconciles.with_label_values(&["ok"]).inc();
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                failures += 1;
                metrics
                    .cluster_reconciles
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(error = %e, "node cluster reconcile failed");
                tokio::time::sleep(controller::backoff(failures)).await;
            }
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let m = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(move || async move { m.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
