//! The HTTP executor: one request per attempt.
//!
//! ```text
//!  HttpAction ──url host──► IP literal? ──HttpPolicy::check──► refused (no connection)
//!      │                        └─ name ──► resolved, every address checked (conn.rs │ PolicyResolver)
//!      ├─ headers (literal │ Secret via SecretResolver) + Raftcron-* headers
//!      ├─ http://, literal headers: built when armed (prepare), sent on a connection of
//!      │    our own picked then (conn.rs)
//!      └─ https://, Secret headers, credentials in the URL: reqwest::Client (pooled, no
//!           redirects, no proxies), built at the instant
//!                     ──► status ∈ successCodes / 2xx? ── first 4 KiB of the body ──► "HTTP <code>: <snippet>"
//! ```
//!
//! The deny list is enforced on the addresses the connection uses: an IP
//! literal is checked before the request, a name is resolved by our own
//! code that refuses when any address it returns is denied, so DNS cannot
//! smuggle a denied address past the check. Redirects are not followed (a
//! 3xx fails unless listed in `successCodes`) and proxies are not used,
//! because either would reach a host the check never saw. Both paths send
//! the same request: the action's method, headers and body, the
//! `Raftcron-*` headers, and `User-Agent: raftcron/<version>` and
//! `Accept: */*` unless the action sets its own.

mod answer;
mod conn;

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt as _;
use http_body_util::Full;
use raftcron_crds::HttpAction;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::policy::HttpPolicy;
use super::{Attempt, Outcome, SecretResolver, truncate};
use answer::{Denied, MAX_CONNECTING, Unresolved, error_chain, read_snippet, resolve_allowed};

const USER_AGENT: &str = concat!("raftcron/", env!("CARGO_PKG_VERSION"));

/// An `http://` attempt got ready when armed: its request and connection.
pub struct PreparedHttp {
    target: conn::Target,
    conn: conn::Conn,
    request: http::Request<Full<Bytes>>,
}

impl PreparedHttp {
    /// Its connection was open when it was armed.
    pub fn connected(&self) -> bool {
        matches!(self.conn, conn::Conn::Pooled(_))
    }
}

/// Runs HTTP actions. Holds one client, so connections are pooled.
pub struct HttpExecutor {
    /// The error is kept and reported by every attempt rather than failing
    /// node start-up: only HTTP actions need the client (TLS roots).
    client: Result<reqwest::Client, String>,
    policy: Arc<HttpPolicy>,
    pool: Arc<conn::Pool>,
}

impl HttpExecutor {
    pub fn new(policy: HttpPolicy) -> Self {
        crate::tls::install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(PolicyResolver {
                policy: policy.clone(),
            })
            .user_agent(USER_AGENT)
            .connector_layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONNECTING))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {}", error_chain(&e)));
        let pool = Arc::new(conn::Pool::new(policy.clone()));
        Self {
            client,
            policy,
            pool,
        }
    }

    /// Builds the request of an `http://` attempt with literal headers and
    /// picks its connection, ahead of the instant. `None` for the rest
    /// (https, Secret headers, credentials in the URL, anything invalid),
    /// which [`run`](Self::run) builds and reports at the instant.
    pub fn prepare(&self, action: &HttpAction, attempt: &Attempt) -> Option<PreparedHttp> {
        let url = Url::parse(&action.url).ok()?;
        if url.scheme() != "http"
            || !url.username().is_empty()
            || url.password().is_some()
            || action.headers.iter().any(|h| h.value.is_none())
        {
            return None;
        }
        self.check_literal_host(&url).ok()?;
        // No Secret to fetch, so this never waits.
        let mut headers = request_headers(action, attempt, None)
            .now_or_never()?
            .ok()?;
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        // The user's own values win, as with reqwest.
        let host_header = HeaderValue::from_str(&host_header).ok()?;
        headers.entry(http::header::HOST).or_insert(host_header);
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        headers
            .entry(http::header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let body = action.body.clone().map(Bytes::from).unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method(action))
            .uri(path)
            .body(Full::new(body))
            .ok()?;
        *request.headers_mut() = headers;
        let target = conn::Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        };
        let conn = self.pool.checkout(&target);
        Some(PreparedHttp {
            target,
            conn,
            request,
        })
    }

    /// Sends a request [`prepare`](Self::prepare) got ready.
    pub async fn send(
        &self,
        action: &HttpAction,
        attempt: &Attempt,
        prepared: PreparedHttp,
    ) -> Outcome {
        let PreparedHttp {
            target,
            conn,
            request,
        } = prepared;
        let sent = tokio::time::timeout(attempt.timeout, self.pool.send(target, conn, request));
        match sent.await {
            Ok(Ok((status, snippet))) => judge(action, attempt, status, snippet),
            Ok(Err(e)) => Outcome::failed(e),
            Err(_) => Outcome::timed_out(attempt.timeout),
        }
    }

    /// Sends the action's request once and judges the response.
    pub async fn run(
        &self,
        action: &HttpAction,
        attempt: &Attempt,
        secrets: Option<&dyn SecretResolver>,
    ) -> Outcome {
        if let Some(prepared) = self.prepare(action, attempt) {
            return self.send(action, attempt, prepared).await;
        }
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Outcome::failed(e.clone()),
        };
        let url = match Url::parse(&action.url) {
            Ok(u) => u,
            Err(e) => return Outcome::failed(format!("invalid url: {e}")),
        };
        if let Err(refused) = self.check_literal_host(&url) {
            return Outcome::failed(refused);
        }
        let headers = match request_headers(action, attempt, secrets).await {
            Ok(h) => h,
            Err(e) => return Outcome::failed(e),
        };
        // For error messages: the URL itself may carry credentials.
        let authority = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut request = client
            .request(method(action), url)
            .headers(headers)
            .timeout(attempt.timeout);
        if let Some(body) = &action.body {
            request = request.body(body.clone());
        }

        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::timed_out(attempt.timeout),
            Err(e) => return Outcome::failed(send_error(e, &authority)),
        };
        let status = response.status();
        // An unread rest of the body closes the connection instead of being drained.
        let snippet = read_snippet(http::Response::from(response).into_body()).await;
        judge(action, attempt, status, snippet.text)
    }

    /// IP literals never reach the resolver hook, so they are checked here.
    fn check_literal_host(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host_str() else {
            return Err("the url has no host".to_string());
        };
        // IPv6 literals keep their brackets in `host_str`.
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self
                .policy
                .check(&ip)
                .map_err(|why| format!("refused to call {host}: {why}")),
            Err(_) => Ok(()),
        }
    }
}

/// The action's headers, then the `Raftcron-*` headers (which a user header
/// cannot override; validation refuses that prefix anyway).
async fn request_headers(
    action: &HttpAction,
    attempt: &Attempt,
    secrets: Option<&dyn SecretResolver>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for h in &action.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("header name {:?} is not a valid HTTP header name", h.name))?;
        let (value, secret) = match (&h.value, &h.value_from) {
            (Some(v), _) => (v.clone(), false),
            (None, Some(from)) => {
                let Some(resolver) = secrets else {
                    return Err(format!(
                        "header {} uses a Secret, which needs Kubernetes",
                        h.name
                    ));
                };
                let r = &from.secret_key_ref;
                let value = resolver
                    .resolve(&attempt.namespace, &r.name, &r.key)
                    .await
                    .map_err(|e| {
                        format!(
                            "header {}: Secret {}/{} key {}: {e}",
                            h.name, attempt.namespace, r.name, r.key
                        )
                    })?;
                (value, true)
            }
            (None, None) => (String::new(), false),
        };
        // Never echo the value: it may be a Secret.
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            format!(
                "the value of header {} is not a valid HTTP header value",
                h.name
            )
        })?;
        value.set_sensitive(secret);
        headers.append(name, value);
    }
    for (name, _, value) in attempt.identity() {
        let name =
            HeaderName::from_bytes(name.as_bytes()).expect("Raftcron header names are valid");
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("{name} {value:?} is not a valid header value"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

fn method(action: &HttpAction) -> Method {
    Method::from_bytes(action.method.as_str().as_bytes())
        .expect("HttpMethod names are valid methods")
}

/// Succeeded when the status is listed in `successCodes` (any 2xx when none
/// are); the message is the status and the start of the body.
fn judge(
    action: &HttpAction,
    attempt: &Attempt,
    status: StatusCode,
    snippet: Option<String>,
) -> Outcome {
    let ok = if action.success_codes.is_empty() {
        status.is_success()
    } else {
        action.success_codes.contains(&status.as_u16())
    };
    tracing::debug!(run_id = %attempt.run_id, attempt = attempt.attempt, status = status.as_u16(), ok, "HTTP action answered");
    let message = match snippet.as_deref() {
        Some(s) if !s.is_empty() => format!("HTTP {}: {s}", status.as_u16()),
        _ => format!("HTTP {}", status.as_u16()),
    };
    if ok {
        Outcome::ok(Some(truncate(message)))
    } else {
        Outcome::failed(message)
    }
}

/// The message for a request that got no response: host and port, not the
/// URL (it may carry credentials); a refusal by the deny list as is.
fn send_error(e: reqwest::Error, authority: &str) -> String {
    let e = e.without_url();
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<Denied>() {
            return denied.to_string();
        }
        source = s.source();
    }
    format!("{authority}: {}", error_chain(&e))
}

/// DNS for reqwest through [`resolve_allowed`].
struct PolicyResolver {
    policy: Arc<HttpPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy.clone();
        Box::pin(async move {
            match resolve_allowed(&policy, &host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Unresolved::Lookup(e)) => Err(Box::new(e) as Box<dyn StdError + Send + Sync>),
                Err(Unresolved::NoAddresses) => Err(format!("{host} has no addresses").into()),
                Err(Unresolved::Denied(denied)) => Err(Box::new(denied) as _),
            }
        })
    }
}
