//! The HTTP port: Prometheus metrics, health and readiness, and a small
//! read-only JSON view of the node and its schedules.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::convert;
use crate::clock::now_ms;
use crate::ctx::NodeCtx;
use crate::sm::Key;

pub fn router(ctx: Arc<NodeCtx>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/schedules", get(schedules))
        .route("/v1/schedules/{namespace}/{name}/runs", get(runs))
        .route("/v1/attachments", get(attachments))
        .with_state(ctx)
}

pub async fn serve(ctx: Arc<NodeCtx>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let result = axum::serve(listener, router(ctx))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn metrics(State(ctx): State<Arc<NodeCtx>>) -> impl IntoResponse {
    // Counted at the scrape, not on every apply: one pass over the schedules
    // every scrape interval costs less than bookkeeping on the write path.
    ctx.metrics.count_app_jobs(ctx.sm.read().state.schedules());
    (
        [("content-type", "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
}

/// Alive: the Raft core runs (a fatal storage error stops it).
async fn healthz(State(ctx): State<Arc<NodeCtx>>) -> impl IntoResponse {
    match &crate::raft::metrics(&ctx.raft).running_state {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

/// Ready: a member of a cluster that knows its leader.
async fn readyz(State(ctx): State<Arc<NodeCtx>>) -> impl IntoResponse {
    let m = crate::raft::metrics(&ctx.raft);
    let member = m
        .membership_config
        .membership()
        .get_node(&m.id)
        .is_some_and(|n| n.uid == ctx.identity.uid);
    match (member, m.current_leader) {
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not a member of a cluster yet\n".to_string(),
        ),
        (true, None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader known\n".to_string(),
        ),
        (true, Some(l)) => (StatusCode::OK, format!("ok: leader is node {l}\n")),
    }
}

#[derive(serde::Serialize)]
struct AppView {
    namespace: String,
    app: String,
    replicas: Vec<String>,
}

/// The app replicas attached to this node (empty unless it leads), per app.
async fn attachments(State(ctx): State<Arc<NodeCtx>>) -> Json<Vec<AppView>> {
    let mut apps: Vec<AppView> = ctx
        .attachments
        .counts()
        .into_iter()
        .map(|((namespace, app), _)| {
            let mut replicas = ctx.attachments.replicas(&namespace, &app);
            replicas.sort();
            AppView {
                replicas,
                namespace,
                app,
            }
        })
        .collect();
    apps.sort_by(|a, b| (&a.namespace, &a.app).cmp(&(&b.namespace, &b.app)));
    Json(apps)
}

#[derive(serde::Serialize)]
struct StatusView {
    id: u64,
    uid: String,
    cluster_id: String,
    state: String,
    leader: Option<u64>,
    term: u64,
    members: Vec<u64>,
    commit_index: Option<u64>,
    applied_index: Option<u64>,
    schedules: u64,
}

async fn status(State(ctx): State<Arc<NodeCtx>>) -> Json<StatusView> {
    let m = crate::raft::metrics(&ctx.raft);
    let n = ctx.sm.read().state.len();
    let s = convert::status_to_pb(&m, &ctx.identity.uid, ctx.identity.cluster_id(), n);
    Json(StatusView {
        id: s.id,
        uid: s.uid,
        cluster_id: s.cluster_id,
        state: s.state,
        leader: s.leader,
        term: s.term,
        members: s.members.iter().map(|m| m.id).collect(),
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        schedules: s.schedules,
    })
}

#[derive(serde::Serialize)]
struct ScheduleView {
    namespace: String,
    name: String,
    schedule: String,
    suspend: bool,
    next_fire: Option<String>,
    last_schedule: Option<String>,
    succeeded: u64,
    failed: u64,
}

async fn schedules(State(ctx): State<Arc<NodeCtx>>) -> Json<Vec<ScheduleView>> {
    let now = now_ms();
    let d = ctx.sm.read();
    Json(
        d.state
            .schedules()
            .map(|s| ScheduleView {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                schedule: s.spec.schedule.clone(),
                suspend: s.spec.suspend,
                next_fire: convert::next_fire(s, now).map(raftcron_crds::names::rfc3339_ms),
                last_schedule: s.last_schedule.map(raftcron_crds::names::rfc3339_ms),
                succeeded: s.counters.succeeded,
                failed: s.counters.failed + s.counters.timed_out + s.counters.lost,
            })
            .collect(),
    )
}

async fn runs(
    State(ctx): State<Arc<NodeCtx>>,
    Path((namespace, name)): Path<(String, String)>,
) -> impl IntoResponse {
    let d = ctx.sm.read();
    match d.state.get(&Key::new(namespace, name)) {
        Some(s) => {
            let runs: Vec<serde_json::Value> = convert::runs_to_pb(s)
                .into_iter()
                .map(|r| {
                    serde_json::json!({
                        "run_id": r.run_id, "scheduled_time": raftcron_crds::names::rfc3339_ms(r.scheduled_ms),
                        "start_time": r.start_ms.map(raftcron_crds::names::rfc3339_ms),
                        "end_time": r.end_ms.map(raftcron_crds::names::rfc3339_ms),
                        "node": r.node, "attempt": r.attempt, "result": r.result,
                    })
                })
                .collect();
            (StatusCode::OK, Json(serde_json::Value::Array(runs)))
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such schedule"})),
        ),
    }
}
