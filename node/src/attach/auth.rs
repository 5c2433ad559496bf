//! Who may attach as a replica of which app.
//!
//! - With `--kubernetes`: the Hello carries the pod's projected
//!   ServiceAccount token (audience `raftcron`); a TokenReview says whose it
//!   is, and `system:serviceaccount:NS:…` may attach only for apps of NS.
//! - Else, with TLS on: the peer's certificate chain was verified against
//!   the cluster CA by the TLS layer. A certificate naming namespaces (DNS
//!   SANs `<namespace>.namespaces.raftcron.dev`) may attach only for those;
//!   one naming none (a node's or the operator's) for any.
//! - Else (`run` / `local` without TLS): loopback peers only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

/// The DNS SAN suffix of a namespace-scoped sidecar certificate.
pub const NAMESPACE_SAN_SUFFIX: &str = ".namespaces.raftcron.dev";
/// The audience a sidecar's ServiceAccount token is projected for (the
/// operator's webhook projects it; one name for both).
use raftcron_crds::names::SIDECAR_TOKEN_AUDIENCE as TOKEN_AUDIENCE;
/// How long a reviewed token is trusted before it is reviewed again.
const REVIEW_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(
        "attachments from {0} are refused: without TLS or Kubernetes only loopback peers may attach"
    )]
    NotLoopback(String),
    #[error("no client certificate: with TLS on, a sidecar presents one signed by the cluster CA")]
    NoCertificate,
    #[error("the client certificate is for namespaces {allowed:?}, not {asked}")]
    CertificateNamespace { allowed: Vec<String>, asked: String },
    #[error(
        "hello.token: required in Kubernetes (a projected ServiceAccount token, audience raftcron)"
    )]
    NoToken,
    #[error("hello.token: not accepted by the API server: {0}")]
    TokenRejected(String),
    #[error(
        "the token is for namespace {token}, not {asked}: a pod attaches only for apps of its own namespace"
    )]
    TokenNamespace { token: String, asked: String },
    #[error("cannot review the token: {0}")]
    Review(String),
}

/// How this node authenticates attachments.
#[derive(Clone)]
pub enum Authenticator {
    Loopback,
    Tls,
    Kubernetes {
        client: ::kube::Client,
        /// Token → (namespace, reviewed at): 1,000 sidecars re-attaching
        /// after a leader change would otherwise cost 1,000 reviews.
        reviewed: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    },
}

impl Authenticator {
    pub fn new(kube: Option<&crate::kube::Kube>, tls: bool) -> Self {
        match (kube, tls) {
            (Some(k), _) => Authenticator::Kubernetes {
                client: k.client.clone(),
                reviewed: Arc::default(),
            },
            (None, true) => Authenticator::Tls,
            (None, false) => Authenticator::Loopback,
        }
    }

    /// Whether a sidecar at `peer` with `certs` and `token` may attach for
    /// an app of `namespace`.
    pub async fn check(
        &self,
        namespace: &str,
        token: &str,
        peer: Option<SocketAddr>,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<(), Refused> {
        match self {
            Authenticator::Loopback => match peer {
                Some(p) if p.ip().to_canonical().is_loopback() => Ok(()),
                other => Err(Refused::NotLoopback(
                    other.map_or("an unknown peer".into(), |p| p.to_string()),
                )),
            },
            Authenticator::Tls => {
                let leaf = certs
                    .and_then(|c| c.first())
                    .ok_or(Refused::NoCertificate)?;
                let allowed = certificate_namespaces(leaf);
                if allowed.is_empty() || allowed.iter().any(|n| n == namespace) {
                    Ok(())
                } else {
                    Err(Refused::CertificateNamespace {
                        allowed,
                        asked: namespace.to_string(),
                    })
                }
            }
            Authenticator::Kubernetes { client, reviewed } => {
                if token.is_empty() {
                    return Err(Refused::NoToken);
                }
                let cached = reviewed
                    .lock()
                    .expect("review cache")
                    .get(token)
                    .filter(|(_, at)| at.elapsed() < REVIEW_TTL)
                    .map(|(ns, _)| ns.clone());
                let token_ns = match cached {
                    Some(ns) => ns,
                    None => {
                        let ns = review(client, token).await?;
                        let mut cache = reviewed.lock().expect("review cache");
                        if cache.len() > 10_000 {
                            cache.clear();
                        }
                        cache.insert(token.to_string(), (ns.clone(), Instant::now()));
                        ns
                    }
                };
                if token_ns == namespace {
                    Ok(())
                } else {
                    Err(Refused::TokenNamespace {
                        token: token_ns,
                        asked: namespace.to_string(),
                    })
                }
            }
        }
    }
}

/// The namespaces a sidecar certificate is limited to (none: unlimited).
pub fn certificate_namespaces(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return vec![String::new()]; // unparseable: limited to nothing real
    };
    ee.valid_dns_names()
        .filter_map(|n| n.strip_suffix(NAMESPACE_SAN_SUFFIX))
        .filter(|ns| !ns.is_empty() && !ns.contains('.'))
        .map(str::to_string)
        .collect()
}

/// The namespace of the ServiceAccount a token belongs to, from the API
/// server (TokenReview, audience `raftcron`).
async fn review(client: &::kube::Client, token: &str) -> Result<String, Refused> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let api: ::kube::Api<TokenReview> = ::kube::Api::all(client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let done = api
        .create(&Default::default(), &review)
        .await
        .map_err(|e| Refused::Review(e.to_string()))?;
    let status = done.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(Refused::TokenRejected(
            status.error.unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == TOKEN_AUDIENCE))
    {
        return Err(Refused::TokenRejected(format!(
            "not issued for audience {TOKEN_AUDIENCE}"
        )));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account_namespace(&user)
        .map(str::to_string)
        .ok_or_else(|| Refused::TokenRejected(format!("{user:?} is not a ServiceAccount")))
}

/// `system:serviceaccount:NS:NAME` → NS.
fn service_account_namespace(user: &str) -> Option<&str> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then_some(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_tls_or_kubernetes_only_loopback_peers_attach() {
        let a = Authenticator::Loopback;
        let lo: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let far: SocketAddr = "10.0.0.7:4000".parse().unwrap();
        assert_eq!(a.check("ns", "", Some(lo), None).await, Ok(()));
        assert_eq!(a.check("ns", "", Some(mapped), None).await, Ok(()));
        assert!(matches!(
            a.check("ns", "", Some(far), None).await,
            Err(Refused::NotLoopback(_))
        ));
    }

    #[test]
    fn a_service_account_user_names_its_namespace() {
        assert_eq!(
            service_account_namespace("system:serviceaccount:shop:web"),
            Some("shop")
        );
        assert_eq!(service_account_namespace("alice"), None);
        assert_eq!(
            service_account_namespace("system:serviceaccount::web"),
            None
        );
    }
}
