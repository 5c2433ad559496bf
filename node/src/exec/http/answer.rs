//! What both HTTP paths share: the limits, resolving a name through the
//! deny list, reading the start of a response body, and error messages.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;

use crate::exec::MAX_MESSAGE;
use crate::exec::policy::HttpPolicy;

/// At most this much of a response body is read, for the message snippet.
pub(super) const BODY_SNIPPET: usize = 4096;

/// New connections being opened at once, all targets together, on each
/// path. A thousand fires to one host at an instant would otherwise open a
/// thousand connections at once; the target's listen backlog (nginx's
/// default is 511) drops the SYNs past it, and a dropped SYN is sent again
/// only after a second: those fires arrive a second late. Waiting here, a
/// request also takes a pooled connection that another one frees meanwhile.
pub(super) const MAX_CONNECTING: usize = 128;

/// The start of a response body.
pub(super) struct Snippet {
    /// Up to [`BODY_SNIPPET`] bytes as trimmed, lossy UTF-8, or `None` if
    /// the body could not be read at all.
    pub text: Option<String>,
    /// The body ended within those bytes, so the connection can carry
    /// another request.
    pub whole: bool,
}

pub(super) async fn read_snippet<B>(body: B) -> Snippet
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let mut whole = false;
    while bytes.len() < BODY_SNIPPET {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    let take = chunk.len().min(BODY_SNIPPET - bytes.len());
                    bytes.extend_from_slice(&chunk[..take]);
                }
            }
            None => {
                whole = true;
                break;
            }
            Some(Err(_)) if !bytes.is_empty() => break,
            Some(Err(_)) => {
                return Snippet {
                    text: None,
                    whole: false,
                };
            }
        }
    }
    whole = whole || body.is_end_stream();
    let text = String::from_utf8_lossy(&bytes);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Snippet {
        text: Some(cut(text, MAX_MESSAGE)),
        whole,
    }
}

pub(super) fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// `outer: inner: innermost`, skipping a source whose text repeats its parent's.
pub(super) fn error_chain(e: &(dyn StdError + 'static)) -> String {
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
pub(super) struct Denied {
    pub host: String,
    pub why: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused to call {}: its address {}", self.host, self.why)
    }
}

impl StdError for Denied {}

/// Why a target's host gave no address to connect to.
pub(super) enum Unresolved {
    Lookup(io::Error),
    NoAddresses,
    Denied(Denied),
}

/// The addresses of `host` through the system resolver, every one allowed
/// by the deny list: a name that mixes allowed and denied addresses is
/// refused rather than filtered, as it is either misconfigured or a probe.
pub(super) async fn resolve_allowed(
    policy: &HttpPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Unresolved> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(Unresolved::Lookup)?
        .collect();
    if addrs.is_empty() {
        return Err(Unresolved::NoAddresses);
    }
    for a in &addrs {
        if let Err(why) = policy.check(&a.ip()) {
            return Err(Unresolved::Denied(Denied {
                host: host.to_string(),
                why,
            }));
        }
    }
    Ok(addrs)
}
