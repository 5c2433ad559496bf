//! The app's jobs API on the sidecar (loopback only): jobs created from
//! code, relayed to the leader's Job RPCs (`attach::jobs`), which parses
//! and validates them so that every error names the app's own field.
//!
//! ```text
//!  PUT    /v1/jobs/{name}  {schedule | dueTime, repeats, ttl, data, retry, timeoutSeconds, priority, path, overwrite}
//!  GET    /v1/jobs/{name}  → the job: next fire, fired, last runs
//!  DELETE /v1/jobs/{name}
//!  GET    /v1/jobs?limit=100&after=NAME → {"jobs": [...], "next": NAME | null}
//! ```
//!
//! Each job is delivered to one replica of the app as
//! `POST /raftcron/jobs/<name>` (or its `path`), its `data` as the JSON body.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::leases::{ApiError, Relay, bad, from_status};
use crate::attach::jobs::{DATA_MAX_BYTES, PAGE_MAX, check_name};
use crate::pb::sidecar as pb;
use crate::pb::sidecar::attach_client::AttachClient;

/// Largest request body: the data plus the job's other fields.
const MAX_BODY: usize = DATA_MAX_BYTES + 16 * 1024;
const PER_TRY: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(5);

pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{name}", get(read).put(write).delete(remove))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(relay)
}

fn job(reply: &pb::JobReply) -> Value {
    serde_json::from_str(&reply.job_json).unwrap_or(Value::Null)
}

fn checked(name: &str) -> Result<(), ApiError> {
    check_name(name).map_err(|e| bad(&e.field, e.message))
}

async fn write(State(relay): State<Arc<Relay>>, Path(name): Path<String>, body: Bytes) -> Response {
    let r = async {
        checked(&name)?;
        let body = std::str::from_utf8(&body).map_err(|_| bad("body", "not UTF-8"))?;
        if body.trim().is_empty() {
            return Err(bad("body", "a JSON object is required"));
        }
        let req = pb::PutJobRequest {
            caller: Some(relay.caller()?),
            name: name.clone(),
            body_json: body.to_string(),
        };
        relay
            .follow
            .call(PER_TRY, DEADLINE, |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).put_job(req).await }
            })
            .await
            .map_err(from_status)
    }
    .await;
    match r {
        Ok(reply) => {
            let code = if reply.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(job(&reply))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn read(State(relay): State<Arc<Relay>>, Path(name): Path<String>) -> Response {
    one(relay, name, false).await
}

async fn remove(State(relay): State<Arc<Relay>>, Path(name): Path<String>) -> Response {
    one(relay, name, true).await
}

async fn one(relay: Arc<Relay>, name: String, delete: bool) -> Response {
    let r = async {
        checked(&name)?;
        let req = pb::JobRequest {
            caller: Some(relay.caller()?),
            name,
        };
        relay
            .follow
            .call(PER_TRY, DEADLINE, |ch| {
                let req = req.clone();
                async move {
                    let mut c = AttachClient::new(ch);
                    if delete {
                        c.delete_job(req).await
                    } else {
                        c.get_job(req).await
                    }
                }
            })
            .await
            .map_err(from_status)
    }
    .await;
    match r {
        Ok(reply) => axum::Json(job(&reply)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u32>,
    after: Option<String>,
}

async fn list(
    State(relay): State<Arc<Relay>>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = async {
        let Ok(Query(page)) = page else {
            return Err(bad(
                "query",
                "only limit (a number) and after (a job name) are understood",
            ));
        };
        if page.limit.is_some_and(|l| l == 0 || l as usize > PAGE_MAX) {
            return Err(bad("limit", format!("1 ..= {PAGE_MAX}")));
        }
        let req = pb::ListJobsRequest {
            caller: Some(relay.caller()?),
            limit: page.limit.unwrap_or(0),
            after: page.after.unwrap_or_default(),
        };
        relay
            .follow
            .call(PER_TRY, DEADLINE, |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).list_jobs(req).await }
            })
            .await
            .map_err(from_status)
    }
    .await;
    match r {
        Ok(reply) => {
            let jobs: Value = serde_json::from_str(&reply.jobs_json).unwrap_or(Value::Null);
            let next = (!reply.next.is_empty()).then_some(reply.next);
            axum::Json(json!({"jobs": jobs, "next": next})).into_response()
        }
        Err(e) => e.into_response(),
    }
}
