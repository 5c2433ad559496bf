//! `raftcron-node sidecar`: one replica's agent, beside the app in its pod.
//!
//! ```text
//!  app :PORT ◄──HTTP (loopback)── calls ◄──Prepare/Go/Cancel── attach stream ──► leader
//!                                   └──────Result────────────────────►   (follows leader changes,
//!  local API 127.0.0.1:7090: /healthz /readyz (attached)                  re-attaches with backoff)
//! ```
//!
//! The stream is the only state shared with the cluster: a sidecar that
//! loses it (leader died, partition, no heartbeat for a second) drops what
//! it was given (its leader settles those attempts) and attaches again, to
//! whichever node now leads.

mod call;
pub mod follow;
mod jobs;
pub mod leases;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use tonic::Code;

use crate::attach::{HEARTBEAT, SILENCE};
use crate::pb::sidecar as pb;
use crate::pb::sidecar::attach_client::AttachClient;
use crate::raft::network::Dialer;
use call::Calls;
use follow::Follow;

/// The port of the sidecar's local API (`--listen 127.0.0.1:7090`), which the
/// operator's webhook gives the injected sidecar.
pub const LISTEN_PORT: u16 = 7090;

#[derive(Args, Debug)]
pub struct SidecarArgs {
    /// gRPC addresses of the scheduler nodes (any; the leader is followed).
    #[arg(long, env = "RAFTCRON_CLUSTER", value_delimiter = ',', required = true)]
    pub cluster: Vec<String>,
    /// The app's namespace (in Kubernetes: the pod's, from the downward API).
    #[arg(long, env = "RAFTCRON_NAMESPACE")]
    pub namespace: String,
    /// The app this pod is a replica of.
    #[arg(long, env = "RAFTCRON_APP")]
    pub app: String,
    /// This replica's name (in Kubernetes: the pod name).
    #[arg(long, env = "RAFTCRON_POD")]
    pub pod: String,
    /// Where the app listens, on loopback: `http://127.0.0.1:PORT`.
    #[arg(long, env = "RAFTCRON_APP_URL")]
    pub app_url: String,
    /// The local API for the app (loopback only).
    #[arg(long, env = "RAFTCRON_LISTEN", default_value = "127.0.0.1:7090")]
    pub listen: String,
    /// Most deliveries this replica takes at once.
    #[arg(long, env = "RAFTCRON_CAPACITY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub capacity: u32,
    /// A projected ServiceAccount token (audience raftcron), read at every
    /// attach so a rotated token is used; required when the nodes run in
    /// Kubernetes.
    #[arg(long, env = "RAFTCRON_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate of the nodes (enables TLS).
    #[arg(long, env = "RAFTCRON_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[arg(long, env = "RAFTCRON_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM key for --tls-cert.
    #[arg(long, env = "RAFTCRON_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "RAFTCRON_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: crate::cli::LogFormat,
}

/// The sidecar's view of its attachment, for /readyz.
#[derive(Default)]
struct State {
    /// The leader attached to (0: none).
    leader: AtomicU64,
    term: AtomicU64,
}

pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    let SidecarArgs {
        cluster,
        namespace,
        app,
        pod,
        app_url,
        listen,
        capacity,
        token_file,
        tls_ca,
        tls_cert,
        tls_key,
        log_format,
    } = args;
    crate::cli::init_logging(log_format, crate::cli::DEFAULT_LOG);
    crate::tls::install_crypto_provider();
    for (flag, v) in [
        ("--namespace", &namespace),
        ("--app", &app),
        ("--pod", &pod),
    ] {
        if v.is_empty() {
            anyhow::bail!("{flag} is required");
        }
    }
    let parsed =
        url::Url::parse(&app_url).with_context(|| format!("--app-url {app_url:?} is not a URL"))?;
    if parsed.scheme() != "http" || !parsed.host_str().is_some_and(is_loopback_host) {
        anyhow::bail!(
            "--app-url must be http://127.0.0.1:PORT (or localhost): the sidecar calls its own app on loopback"
        );
    }
    let tls =
        crate::tls::client_config(tls_ca.as_deref(), tls_cert.as_deref(), tls_key.as_deref())?;
    let listener = crate::cli::run::bind(&listen, "--listen").await?;
    let state = Arc::new(State::default());
    let follow = Arc::new(Follow::new(
        cluster,
        Dialer::new(tls, Duration::from_secs(1)),
    ));
    let leases = Arc::new(leases::Relay::new(
        follow.clone(),
        &namespace,
        &app,
        &pod,
        token_file.clone(),
    ));
    tokio::spawn(serve(
        listener,
        state.clone(),
        leases::router(leases.clone()).merge(jobs::router(leases.clone())),
    ));
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("HTTP client")?;
    let me = Replica {
        namespace,
        app,
        pod,
        capacity,
        token_file,
    };
    tracing::info!(namespace = %me.namespace, app = %me.app, pod = %me.pod, %app_url, "sidecar started");
    tokio::select! {
        _ = attach_forever(&follow, &me, &http, &app_url, &state) => {}
        _ = crate::cli::shutdown_signal() => tracing::info!("stopping"),
    }
    // Detached for good: this pod's leases are free at once.
    leases.release_all().await;
    Ok(())
}

fn is_loopback_host(h: &str) -> bool {
    h == "localhost"
        || h.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct Replica {
    namespace: String,
    app: String,
    pod: String,
    capacity: u32,
    token_file: Option<std::path::PathBuf>,
}

impl Replica {
    fn hello(&self) -> anyhow::Result<pb::Hello> {
        let token = match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("reading --token-file {}", f.display()))?
                .trim()
                .to_string(),
            None => String::new(),
        };
        Ok(pb::Hello {
            namespace: self.namespace.clone(),
            app: self.app.clone(),
            pod: self.pod.clone(),
            capacity: self.capacity,
            token,
        })
    }
}

/// How an attachment ended.
enum Ended {
    /// Refused or dropped: try the next endpoint (or the named leader) after a pause.
    Retry(Option<String>),
    /// This sidecar is not allowed to attach: no point in hammering.
    Refused(String),
}

async fn attach_forever(
    follow: &Follow,
    me: &Replica,
    http: &reqwest::Client,
    app_url: &str,
    state: &State,
) {
    let mut backoff = Duration::from_millis(50);
    let mut max_term = 0u64;
    loop {
        let addr = follow.target();
        let started = std::time::Instant::now();
        let ended = attach_once(follow, &addr, me, http, app_url, state, &mut max_term).await;
        state.leader.store(0, Ordering::Relaxed);
        // A working attachment (it outlived one heartbeat silence) starts
        // the backoff over. It was 5 s: a sidecar whose attachments each
        // lasted a few seconds (leaders killed one after another) kept a 2 s
        // backoff and re-attached 2-3 s after each election.
        if started.elapsed() > SILENCE {
            backoff = Duration::from_millis(50);
        }
        match ended {
            Ended::Retry(Some(leader)) => {
                // Follow the named leader at once, unless it is the one that
                // just failed: then the naming follower has not noticed yet,
                // and will within an election timeout (and then holds the
                // call until a new leader is known). Ask again soon, without
                // growing the backoff.
                if !follow.follow(leader) {
                    let jitter = rand::random_range(0..=50);
                    tokio::time::sleep(Duration::from_millis(100 + jitter)).await;
                }
                continue;
            }
            Ended::Retry(None) => follow.failed(&addr),
            Ended::Refused(why) => {
                follow.failed(&addr);
                tracing::error!(error = %why, "attachment refused");
                backoff = Duration::from_secs(5);
            }
        }
        // Jitter, so a thousand sidecars do not re-attach in one burst.
        let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn attach_once(
    follow: &Follow,
    addr: &str,
    me: &Replica,
    http: &reqwest::Client,
    app_url: &str,
    state: &State,
    max_term: &mut u64,
) -> Ended {
    let channel = match follow.dialer().channel(addr) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(addr, error = %e, "bad cluster address");
            return Ended::Retry(None);
        }
    };
    let hello = match me.hello() {
        Ok(h) => h,
        Err(e) => return Ended::Refused(format!("{e:#}")),
    };
    let (tx, rx) = mpsc::channel::<pb::FromSidecar>(1024);
    // Queued before the call: the server waits for the Hello before it answers.
    let _ = tx.try_send(pb::FromSidecar {
        msg: Some(pb::from_sidecar::Msg::Hello(hello)),
    });
    let mut client = AttachClient::new(channel);
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.attach(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let mut inbound = match response {
        Err(_) => return Ended::Retry(None),
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            let leader = follow::named_leader(&status, addr);
            return match status.code() {
                Code::PermissionDenied | Code::InvalidArgument => {
                    Ended::Refused(status.message().to_string())
                }
                _ => {
                    tracing::debug!(addr, code = ?status.code(), message = status.message(), "not attached");
                    Ended::Retry(leader)
                }
            };
        }
    };
    // The Welcome names the leader and its term.
    let welcome = match tokio::time::timeout(SILENCE, inbound.message()).await {
        Ok(Ok(Some(pb::ToSidecar {
            msg: Some(pb::to_sidecar::Msg::Welcome(w)),
        }))) => w,
        _ => return Ended::Retry(None),
    };
    if welcome.term < *max_term {
        // A deposed leader that has not noticed yet: its dispatches would be
        // fenced off anyway; wait for the current one.
        tracing::info!(
            term = welcome.term,
            newest = *max_term,
            "a leader of an older term; attaching elsewhere"
        );
        return Ended::Retry(None);
    }
    *max_term = welcome.term;
    follow.found(addr);
    state.leader.store(welcome.leader, Ordering::Relaxed);
    state.term.store(welcome.term, Ordering::Relaxed);
    tracing::info!(
        leader = welcome.leader,
        term = welcome.term,
        addr,
        "attached"
    );

    let (results_tx, mut results) = mpsc::unbounded_channel();
    let mut calls = Calls::new(http.clone(), app_url, &me.pod, results_tx);
    let mut beat = tokio::time::interval(HEARTBEAT);
    let heartbeat = || pb::FromSidecar {
        msg: Some(pb::from_sidecar::Msg::Heartbeat(pb::Heartbeat {})),
    };
    let ended = loop {
        tokio::select! {
            m = tokio::time::timeout(SILENCE, inbound.message()) => match m {
                Ok(Ok(Some(pb::ToSidecar { msg: Some(msg) }))) => match msg {
                    pb::to_sidecar::Msg::Prepare(p) if p.term >= welcome.term => calls.prepare(p),
                    pb::to_sidecar::Msg::Go(g) => calls.go(g),
                    pb::to_sidecar::Msg::Cancel(c) => calls.cancel(c),
                    _ => {}
                },
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => break "the leader closed the stream",
                Ok(Err(_)) => break "the stream broke",
                Err(_) => break "no heartbeat from the leader for a second",
            },
            Some(r) = results.recv() => {
                calls.done(&r.run_id, r.attempt);
                let msg = pb::FromSidecar { msg: Some(pb::from_sidecar::Msg::Result(r)) };
                if tx.send(msg).await.is_err() {
                    break "the stream broke";
                }
            }
            _ = beat.tick() => {
                if tx.send(heartbeat()).await.is_err() {
                    break "the stream broke";
                }
            }
        }
    };
    tracing::info!(
        leader = welcome.leader,
        in_flight = calls.in_flight(),
        why = ended,
        "detached"
    );
    calls.abandon();
    Ended::Retry(None)
}

/// The local API: health for probes; attached or not for readiness.
async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, leases: axum::Router) {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready = move || {
        let state = state.clone();
        async move {
            match state.leader.load(Ordering::Relaxed) {
                0 => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not attached\n".to_string(),
                ),
                l => (
                    StatusCode::OK,
                    format!(
                        "attached to node {l} (term {})\n",
                        state.term.load(Ordering::Relaxed)
                    ),
                ),
            }
        }
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(leases);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "local API stopped");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::SidecarArgs,
    }

    #[test]
    fn the_default_listen_address_uses_the_port_the_webhook_expects() {
        let cli = Cli::parse_from([
            "sidecar",
            "--cluster",
            "n:7001",
            "--namespace",
            "ns",
            "--app",
            "a",
            "--pod",
            "p",
            "--app-url",
            "http://127.0.0.1:8080",
        ]);
        assert_eq!(cli.args.listen, format!("127.0.0.1:{}", super::LISTEN_PORT));
    }
}
