//! The sidecar injection webhook: a mutating admission webhook every
//! operator replica serves, for pods labelled `raftcron.dev/inject: "true"`.
//!
//! ```text
//!  kube-apiserver ──HTTPS POST /mutate──► every replica: inject::review (pure) ─► patch / skip reason
//!                                          ▲ serving cert, hot-reloaded from the Secret (rotate::load)
//!  leader only: rotate::keep  ─► Secret (CA + cert, renewed) and the configuration's caBundle
//!               report::run   ─► Warning Event InjectionSkipped on labelled pods left without the sidecar
//! ```
//!
//! With `--webhook-certs external` (cert-manager), the operator makes no
//! certificates and patches no caBundle: it only serves the Secret's.

pub mod certs;
pub mod inject;
pub mod report;
pub mod rotate;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio::net::TcpListener;

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use inject::Settings;
use tls::{SwapCert, TlsListener};

/// Who makes the serving certificate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// The operator: a self-signed CA and a certificate in the Secret,
    /// renewed before expiry, and the caBundle patched.
    Operator,
    /// Someone else (cert-manager) writes the Secret and the caBundle.
    External,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// HTTPS address of the sidecar injection webhook (e.g. 0.0.0.0:9443).
    /// Unset: no webhook.
    #[arg(long = "webhook", env = "RAFTCRON_WEBHOOK")]
    pub listen: Option<String>,
    /// The webhook's Service (in --namespace): the serving certificate's names.
    #[arg(
        long,
        env = "RAFTCRON_WEBHOOK_SERVICE",
        default_value = "raftcron-operator-webhook"
    )]
    pub webhook_service: String,
    /// Secret (in --namespace) with the serving certificate: tls.crt,
    /// tls.key, ca.crt (and ca.key when the operator makes them).
    #[arg(
        long,
        env = "RAFTCRON_WEBHOOK_SECRET",
        default_value = "raftcron-webhook-tls"
    )]
    pub webhook_secret: String,
    /// MutatingWebhookConfiguration whose caBundle the operator keeps.
    #[arg(
        long,
        env = "RAFTCRON_WEBHOOK_CONFIGURATION",
        default_value = "raftcron-sidecar-injector"
    )]
    pub webhook_configuration: String,
    #[arg(long, env = "RAFTCRON_WEBHOOK_CERTS", value_enum, default_value_t = CertSource::Operator)]
    pub webhook_certs: CertSource,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// A replica's running webhook: what the leader-only tasks need as well.
pub struct Webhook {
    excluded_namespaces: Vec<String>,
    namespace: String,
    secret: String,
    webhook_configuration: String,
    service: String,
    certs: CertSource,
}

impl Webhook {
    /// Listens on `args.listen`, loads the serving certificate, and serves
    /// once the API server's version is known (native sidecars need 1.29);
    /// `None` when the webhook is off.
    pub async fn start(
        args: WebhookArgs,
        client: &kube::Client,
        cfg: &ClusterConfig,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, WebhookError> {
        let WebhookArgs {
            listen,
            webhook_service,
            webhook_secret,
            webhook_configuration,
            webhook_certs,
        } = args;
        let Some(addr) = listen else {
            return Ok(None);
        };
        let settings = Settings::new(cfg, namespace);
        let excluded_namespaces = settings.excluded_namespaces.clone();
        let certs = Arc::new(SwapCert::default());
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| WebhookError::Listen {
                addr: addr.clone(),
                source,
            })?;
        let tls =
            TlsListener::new(listener, certs.clone()).map_err(|source| WebhookError::Listen {
                addr: addr.clone(),
                source,
            })?;
        // Calls wait in the listener's queue until the version is known.
        let version_client = client.clone();
        let serve_metrics = metrics.clone();
        tokio::spawn(async move {
            let settings = server_version(&version_client, settings).await;
            if let Some(reason) = &settings.unavailable {
                tracing::warn!(%reason, "sidecar injection: every labelled pod will be admitted without the sidecar");
            }
            serve(tls, Arc::new(settings), serve_metrics).await
        });
        tokio::spawn(rotate::load(
            client.clone(),
            namespace.to_string(),
            webhook_secret.clone(),
            certs,
            metrics,
        ));
        tracing::info!(%addr, service = %webhook_service, "sidecar injection webhook serving");
        Ok(Some(Self {
            excluded_namespaces,
            namespace: namespace.to_string(),
            secret: webhook_secret,
            webhook_configuration,
            service: webhook_service,
            certs: webhook_certs,
        }))
    }

    /// The tasks only the leader runs: certificates (unless external) and
    /// the skipped-injection reporter.
    pub fn leader_tasks(
        &self,
        client: &kube::Client,
        owner: Option<OwnerReference>,
        identity: String,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(report::run(
            client.clone(),
            self.excluded_namespaces.clone(),
            identity,
        ))];
        if self.certs == CertSource::Operator {
            tasks.push(tokio::spawn(rotate::keep(
                client.clone(),
                rotate::Target {
                    namespace: self.namespace.clone(),
                    secret: self.secret.clone(),
                    webhook_configuration: self.webhook_configuration.clone(),
                    sans: certs::sans(&self.service, &self.namespace),
                    owner,
                },
            )));
        }
        tasks
    }
}

/// `settings` with the API server's version applied; retried until the
/// server answers, since a guess either way could break pods.
async fn server_version(client: &kube::Client, settings: Settings) -> Settings {
    let mut failures = 0;
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                tracing::info!(version = %v.git_version, "API server version");
                return settings.with_server_version(&v.major, &v.minor);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "reading the API server version");
                tokio::time::sleep(
                    crate::controller::backoff(failures).min(Duration::from_secs(10)),
                )
                .await;
            }
        }
    }
}

/// The HTTPS server: `POST /mutate`.
pub async fn serve(listener: TlsListener, settings: Arc<Settings>, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/mutate", post(mutate))
        .with_state((settings, metrics));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "webhook server stopped");
    }
}

async fn mutate(
    State((settings, metrics)): State<(Arc<Settings>, Arc<Metrics>)>,
    body: Bytes,
) -> impl IntoResponse {
    let (outcome, review) = inject::review(&settings, &body);
    match &outcome {
        inject::Outcome::Skipped(reason) => {
            tracing::info!(%reason, "pod admitted without the sidecar")
        }
        inject::Outcome::Invalid => {
            tracing::warn!("webhook call with a body that is no AdmissionReview of a pod")
        }
        inject::Outcome::Injected | inject::Outcome::Left => {}
    }
    metrics
        .webhook_admissions
        .with_label_values(&[outcome.as_str()])
        .inc();
    axum::Json(review)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_operator_command_line_takes_the_webhook_flags() {
        crate::Args::command().debug_assert();
        let args = crate::Args::try_parse_from([
            "raftcron-operator",
            "--namespace",
            "ns",
            "--webhook",
            "0.0.0.0:9443",
            "--webhook-certs",
            "external",
        ])
        .unwrap();
        assert_eq!(args.webhook.listen.as_deref(), Some("0.0.0.0:9443"));
        assert_eq!(args.webhook.webhook_certs, super::CertSource::External);
        assert_eq!(args.webhook.webhook_secret, "raftcron-webhook-tls");
        let off = crate::Args::try_parse_from(["raftcron-operator", "--namespace", "ns"]).unwrap();
        assert_eq!(off.webhook.listen, None, "no --webhook: no webhook");
    }
}
