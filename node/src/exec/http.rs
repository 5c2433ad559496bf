//! The HTTP executor: one request per attempt through a shared client.
//!
//! ```text
//!  HttpAction ──url host──► IP literal? ──HttpPolicy::check──► refused (no connection)
//!      │                        └─ name ──► PolicyResolver (DNS, then check every address)
//!      ├─ headers (literal │ Secret via SecretResolver) + Raftcron-* headers
//!      └─ reqwest::Client (pooled, no redirects, no proxies) ──► status ∈ successCodes / 2xx?
//!                                        └─ first 4 KiB of the body ──► "HTTP <code>: <snippet>"
//! ```
//!
//! The deny list is enforced on the addresses the connection uses: an IP
//! literal is checked before the request, a name is resolved by our own
//! resolver hook that refuses when any address it returns is denied, so DNS
//! cannot smuggle a denied address past the check. Redirects are not
//! followed (a 3xx fails unless listed in `successCodes`) and proxies are
//! not used, because either would reach a host the check never saw.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use raftcron_crds::HttpAction;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::policy::HttpPolicy;
use super::{Attempt, MAX_MESSAGE, Outcome, SecretResolver, truncate};

/// At most this much of a response body is read, for the message snippet.
const BODY_SNIPPET: usize = 4096;

/// New connections being opened at once, all targets together. A thousand
/// fires to one host at an instant would otherwise open a thousand
/// connections at once; the target's listen backlog (nginx's default is 511)
/// drops the SYNs past it, and a dropped SYN is sent again only after a
/// second: those fires arrive a second late. Waiting here, a request also
/// takes a pooled connection that another one frees meanwhile.
const MAX_CONNECTING: usize = 128;

/// Runs HTTP actions. Holds one client, so connections are pooled.
pub struct HttpExecutor {
    /// The error is kept and reported by every attempt rather than failing
    /// node start-up: only HTTP actions need the client (TLS roots).
    client: Result<reqwest::Client, String>,
    policy: Arc<HttpPolicy>,
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
            .user_agent(concat!("raftcron/", env!("CARGO_PKG_VERSION")))
            .connector_layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONNECTING))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {}", error_chain(&e)));
        Self { client, policy }
    }

    /// Sends the action's request once and judges the response.
    pub async fn run(
        &self,
        action: &HttpAction,
        attempt: &Attempt,
        secrets: Option<&dyn SecretResolver>,
    ) -> Outcome {
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
        let method = Method::from_bytes(action.method.as_str().as_bytes())
            .expect("HttpMethod names are valid methods");
        let mut request = client
            .request(method, url)
            .headers(headers)
            .timeout(attempt.timeout);
        if let Some(body) = &action.body {
            request = request.body(body.clone());
        }

        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::timed_out(attempt.timeout),
            Err(e) => return Outcome::failed(send_error(e, &authority)),
        };
        let status = response.status();
        let snippet = read_snippet(&mut response).await;
        drop(response); // an unread rest of the body closes the connection instead of being drained

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

/// Up to [`BODY_SNIPPET`] bytes of the body as trimmed, lossy UTF-8, or
/// `None` if the body could not be read at all.
async fn read_snippet(response: &mut reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < BODY_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(BODY_SNIPPET - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(_) if !body.is_empty() => break,
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(cut(text, MAX_MESSAGE))
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
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

/// `outer: inner: innermost`, skipping a source whose text repeats its parent's.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A name that resolved to a denied address.
#[derive(Debug)]
struct Denied {
    host: String,
    why: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused to call {}: its address {}", self.host, self.why)
    }
}

impl StdError for Denied {}

/// DNS through the system resolver, refusing a name when any of its
/// addresses is denied: a name that mixes allowed and denied addresses is
/// refused rather than filtered, as it is either misconfigured or a probe.
struct PolicyResolver {
    policy: Arc<HttpPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            for a in &addrs {
                if let Err(why) = policy.check(&a.ip()) {
                    return Err(Box::new(Denied {
                        host: host.clone(),
                        why,
                    }) as Box<dyn StdError + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
