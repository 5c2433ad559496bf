//! The app's lease API on the sidecar's local port, relayed to the leader.
//!
//! ```text
//!  app ──POST|GET|DELETE /v1/leases/{key}──► routes (validate) ──► Relay ──Follow──► leader
//!      ◄──200 {holder, token, expiresAt} / 409 {holder, …} / 4xx {error, field}──┘
//!  sidecar stopping (SIGTERM) ──► ReleasePodLeases: this pod's leases are free at once
//! ```
//!
//! The key is scoped to this sidecar's (namespace, app); the holder is its
//! pod. Times are the leader's clock (RFC 3339, UTC, milliseconds).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Code, Status};

use super::follow::Follow;
use crate::attach::leases::MAX_WAIT;
use crate::pb::sidecar as pb;
use crate::pb::sidecar::attach_client::AttachClient;
use crate::sm::leases::{self, InvalidLease};
use raftcron_crds::names::rfc3339_ms;

/// Largest request body.
pub const MAX_BODY: usize = 4096;
/// Writes (acquire, renew, release) retry across a leader change this long.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
const PER_TRY: Duration = Duration::from_secs(2);
/// A token file is read again after this long (kubelet rotates it).
const TOKEN_REREAD: Duration = Duration::from_secs(10);

/// Relays this pod's lease calls to the leader.
pub struct Relay {
    pub(super) follow: Arc<Follow>,
    namespace: String,
    app: String,
    pod: String,
    token_file: Option<PathBuf>,
    token: Mutex<Option<(Instant, String)>>,
}

/// An error for the app: status and `{"error", "field"?}`.
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

pub(super) fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        body: json!({"error": message.into(), "field": field}),
    }
}

fn invalid(e: InvalidLease) -> ApiError {
    let field = match e {
        InvalidLease::Ttl(_) => "ttlSeconds",
        _ => "key",
    };
    bad(field, e.to_string())
}

/// A gRPC refusal as the app sees it.
pub(super) fn from_status(s: Status) -> ApiError {
    let status = match s.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    let message = if status == StatusCode::SERVICE_UNAVAILABLE {
        format!(
            "no leader of the raftcron cluster answered: {}",
            s.message()
        )
    } else {
        s.message().to_string()
    };
    ApiError {
        status,
        body: json!({"error": message}),
    }
}

/// The JSON of one grant for the app.
fn lease_json(l: &pb::LeaseInfo) -> Value {
    json!({
        "key": l.key,
        "holder": l.holder,
        "token": l.token,
        "expiresAt": rfc3339_ms(l.expires_ms),
        "acquiredAt": rfc3339_ms(l.acquired_ms),
        "ttlSeconds": l.ttl_ms / 1000,
    })
}

impl Relay {
    pub fn new(
        follow: Arc<Follow>,
        namespace: &str,
        app: &str,
        pod: &str,
        token_file: Option<PathBuf>,
    ) -> Self {
        Self {
            follow,
            namespace: namespace.to_string(),
            app: app.to_string(),
            pod: pod.to_string(),
            token_file,
            token: Mutex::new(None),
        }
    }

    /// Who this pod is, with its current token (the job calls use it too).
    pub(super) fn caller(&self) -> Result<pb::LeaseCaller, ApiError> {
        let token = match &self.token_file {
            None => String::new(),
            Some(f) => {
                let mut cached = self.token.lock().expect("token lock");
                match &*cached {
                    Some((at, t)) if at.elapsed() < TOKEN_REREAD => t.clone(),
                    _ => {
                        let t = std::fs::read_to_string(f)
                            .map_err(|e| ApiError {
                                status: StatusCode::INTERNAL_SERVER_ERROR,
                                body: json!({"error": format!("reading --token-file {}: {e}", f.display())}),
                            })?
                            .trim()
                            .to_string();
                        *cached = Some((Instant::now(), t.clone()));
                        t
                    }
                }
            }
        };
        Ok(pb::LeaseCaller {
            namespace: self.namespace.clone(),
            app: self.app.clone(),
            pod: self.pod.clone(),
            token,
        })
    }

    async fn acquire(&self, key: &str, ttl_ms: u32) -> Result<pb::LeaseReply, ApiError> {
        let req = pb::AcquireLeaseRequest {
            caller: Some(self.caller()?),
            key: key.to_string(),
            ttl_ms,
        };
        self.follow
            .call(PER_TRY, WRITE_DEADLINE, |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).acquire_lease(req).await }
            })
            .await
            .map_err(from_status)
    }

    async fn release(&self, key: &str) -> Result<pb::LeaseReply, ApiError> {
        let req = pb::ReleaseLeaseRequest {
            caller: Some(self.caller()?),
            key: key.to_string(),
        };
        self.follow
            .call(PER_TRY, WRITE_DEADLINE, |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).release_lease(req).await }
            })
            .await
            .map_err(from_status)
    }

    async fn get(
        &self,
        key: &str,
        wait: Duration,
        since: Option<u64>,
    ) -> Result<pb::LeaseReply, ApiError> {
        let caller = self.caller()?;
        let until = tokio::time::Instant::now() + wait;
        self.follow
            .call(wait + PER_TRY, wait + WRITE_DEADLINE, |ch| {
                // A retry at a new leader waits only what is left.
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                let req = pb::GetLeaseRequest {
                    caller: Some(caller.clone()),
                    key: key.to_string(),
                    wait_ms: left.as_millis() as u32,
                    since,
                };
                async move { AttachClient::new(ch).get_lease(req).await }
            })
            .await
            .map_err(from_status)
    }

    async fn list(&self) -> Result<pb::ListLeasesReply, ApiError> {
        let req = pb::ListLeasesRequest {
            namespace: self.namespace.clone(),
            app: self.app.clone(),
        };
        self.follow
            .call(PER_TRY, WRITE_DEADLINE, |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).list_leases(req).await }
            })
            .await
            .map_err(from_status)
    }

    /// Frees every lease of this pod: the sidecar is shutting down for good
    /// (a SIGTERM; a kill -9 leaves them to expire at their TTL).
    pub async fn release_all(&self) {
        let Ok(caller) = self.caller() else { return };
        let req = pb::ReleasePodLeasesRequest {
            caller: Some(caller),
        };
        let r = self
            .follow
            .call(Duration::from_secs(1), Duration::from_secs(2), |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).release_pod_leases(req).await }
            })
            .await;
        match r {
            Ok(r) if r.keys.is_empty() => {}
            Ok(r) => tracing::info!(keys = ?r.keys, "leases released"),
            Err(e) => {
                tracing::warn!(error = %e.message(), "leases not released; they expire at their TTL")
            }
        }
    }
}

/// The body of `POST /v1/leases/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AcquireBody {
    ttl_seconds: serde_json::Number,
}

async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: json!({"error": format!("body: larger than {MAX_BODY} bytes"), "field": "body"}),
        })
}

fn parse_ttl_ms(bytes: &[u8]) -> Result<u32, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "ttlSeconds",
            r#"body: required, {"ttlSeconds": N} with N from 1 to 3600"#,
        ));
    }
    let b: AcquireBody =
        serde_json::from_slice(bytes).map_err(|e| bad("body", format!("body: {e}")))?;
    let n = &b.ttl_seconds;
    let secs = n
        .as_i64()
        .ok_or_else(|| bad("ttlSeconds", format!("ttlSeconds: whole seconds, got {n}")))?;
    let ms = secs.saturating_mul(1000);
    leases::validate_ttl_ms(ms).map_err(|_| {
        bad(
            "ttlSeconds",
            format!("ttlSeconds: must be between 1 and 3600 (an hour), got {secs}"),
        )
    })?;
    Ok(ms as u32)
}

/// `?wait=30s&token=N`: how long to wait, and the token last seen.
fn parse_query(q: Option<&str>) -> Result<(Duration, Option<u64>), ApiError> {
    let (mut wait, mut since) = (Duration::ZERO, None);
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        match &*k {
            "wait" => {
                wait = humantime::parse_duration(&v).map_err(|e| {
                    bad(
                        "wait",
                        format!("wait: {v:?} is not a duration like 30s or 500ms: {e}"),
                    )
                })?;
                if wait > MAX_WAIT {
                    return Err(bad(
                        "wait",
                        format!("wait: at most {}s, got {v}", MAX_WAIT.as_secs()),
                    ));
                }
            }
            "token" => {
                since = Some(v.parse().map_err(|_| {
                    bad(
                        "token",
                        format!("token: the token last seen (an integer, 0 for free), got {v:?}"),
                    )
                })?);
            }
            other => {
                return Err(bad(
                    other,
                    format!("{other}: unknown query parameter (known: wait, token)"),
                ));
            }
        }
    }
    Ok((wait, since))
}

fn conflict(reply: &pb::LeaseReply, key: &str) -> Response {
    let l = reply.lease.clone().unwrap_or_default();
    let mut body = lease_json(&l);
    body["error"] = json!(format!(
        "lease {key:?} is held by {} (token {}) until {}",
        l.holder,
        l.token,
        rfc3339_ms(l.expires_ms)
    ));
    (StatusCode::CONFLICT, axum::Json(body)).into_response()
}

async fn acquire(
    State(relay): State<Arc<Relay>>,
    Path(key): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    leases::validate_key(&key).map_err(invalid)?;
    let ttl_ms = parse_ttl_ms(&read_body(body).await?)?;
    let reply = relay.acquire(&key, ttl_ms).await?;
    if !reply.ok {
        return Ok(conflict(&reply, &key));
    }
    let mut body = lease_json(&reply.lease.unwrap_or_default());
    body["renewed"] = json!(reply.renewed);
    Ok(axum::Json(body).into_response())
}

async fn release(
    State(relay): State<Arc<Relay>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    leases::validate_key(&key).map_err(invalid)?;
    let reply = relay.release(&key).await?;
    if !reply.ok && reply.lease.is_some() {
        return Ok(conflict(&reply, &key));
    }
    Ok(axum::Json(json!({"key": key, "released": reply.ok})).into_response())
}

async fn lookup(
    State(relay): State<Arc<Relay>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    leases::validate_key(&key).map_err(invalid)?;
    let (wait, since) = parse_query(q.as_deref())?;
    let reply = relay.get(&key, wait, since).await?;
    let body = match &reply.lease {
        Some(l) => {
            let mut b = lease_json(l);
            b["mine"] = json!(l.holder == relay.pod);
            b
        }
        None => {
            json!({"key": key, "holder": null, "token": null, "expiresAt": null, "mine": false})
        }
    };
    Ok(axum::Json(body).into_response())
}

async fn list(State(relay): State<Arc<Relay>>) -> Result<Response, ApiError> {
    let reply = relay.list().await?;
    let leases: Vec<Value> = reply
        .leases
        .iter()
        .map(|l| {
            let mut b = lease_json(l);
            b["mine"] = json!(l.holder == relay.pod);
            b
        })
        .collect();
    Ok(axum::Json(json!({"leases": leases})).into_response())
}

/// The lease routes of the local API.
pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/v1/leases", get(list))
        .route(
            "/v1/leases/{key}",
            get(lookup).post(acquire).delete(release),
        )
        .route("/v1/leases/{key}/{*rest}", any(nested))
        .with_state(relay)
}

/// `/v1/leases/a/b`: a key is one path segment.
async fn nested(Path((key, rest)): Path<(String, String)>) -> ApiError {
    invalid(InvalidLease::Slash(format!("{key}/{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<impl std::fmt::Debug, ApiError>) -> (StatusCode, String) {
        match r {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => (e.status, e.body["error"].as_str().unwrap().to_string()),
        }
    }

    #[test]
    fn ttls_are_whole_seconds_from_1_to_3600() {
        assert_eq!(parse_ttl_ms(br#"{"ttlSeconds": 10}"#).ok(), Some(10_000));
        assert_eq!(
            parse_ttl_ms(br#"{"ttlSeconds": 3600}"#).ok(),
            Some(3_600_000)
        );
        for (body, starts) in [
            (
                &br#"{"ttlSeconds": 0}"#[..],
                "ttlSeconds: must be between 1 and 3600",
            ),
            (
                br#"{"ttlSeconds": 31536000}"#,
                "ttlSeconds: must be between 1 and 3600",
            ),
            (br#"{"ttlSeconds": -1}"#, "ttlSeconds: must be between"),
            (br#"{"ttlSeconds": 1.5}"#, "ttlSeconds: whole seconds"),
            (
                br#"{"ttlSeconds": 10, "ttl": 3}"#,
                "body: unknown field `ttl`",
            ),
            (br#"{}"#, "body: missing field `ttlSeconds`"),
            (b"", "body: required"),
            (b"ttl=10", "body: expected"),
        ] {
            let (code, msg) = err(parse_ttl_ms(body));
            assert_eq!(code, StatusCode::BAD_REQUEST);
            assert!(
                msg.starts_with(starts),
                "{msg:?} for {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_query_takes_a_wait_and_the_token_last_seen() {
        assert_eq!(parse_query(None).ok(), Some((Duration::ZERO, None)));
        assert_eq!(
            parse_query(Some("wait=30s&token=7")).ok(),
            Some((Duration::from_secs(30), Some(7)))
        );
        for (q, starts) in [
            ("wait=abc", "wait: \"abc\" is not a duration"),
            ("wait=10m", "wait: at most 300s"),
            ("token=x", "token:"),
            ("timeout=3s", "timeout: unknown query parameter"),
        ] {
            let (_, msg) = err(parse_query(Some(q)));
            assert!(msg.starts_with(starts), "{msg:?} for {q}");
        }
    }
}
