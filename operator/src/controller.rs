//! The ScheduledJob reconciler: validate → register in the scheduler
//! cluster → status; on delete, remove from the cluster, then the finalizer.
//!
//! ```text
//!  watch ScheduledJob ──► finalizer ──Apply──► decide (pure) ──► NodeApi::upsert ──► Ready condition (SSA)
//!                                  └─Cleanup─► NodeApi::delete ──► finalizer removed
//! ```
//!
//! The operator writes only `status.conditions` and `status.observedGeneration`
//! (field manager `raftcron-operator`); the scheduler leader writes the run
//! fields under its own manager, so the two never fight over a field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use raftcron_crds::ScheduledJob;
use raftcron_crds::names::{self, reason};
use raftcron_node::pb::scheduler as pb;
use serde_json::json;

use crate::metrics::Metrics;
use crate::nodes::{NodeApi, NodeError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Nodes(#[from] NodeError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    /// Bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes_api",
            Error::Nodes(NodeError::Unavailable(_)) => "scheduler_unavailable",
            Error::Nodes(NodeError::Refused(_)) => "scheduler_refused",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "finalizer",
            },
            Error::NoNamespace => "invalid_object",
        }
    }
}

/// Shared by every reconcile.
pub struct Ctx {
    pub client: kube::Client,
    pub nodes: Arc<dyn NodeApi>,
    /// Whether the managed nodes run `exec` actions.
    pub exec_enabled: bool,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// uid → (generation, when) last registered, so status-only updates
    /// (the scheduler writes status at every run) do not re-register.
    registered: Mutex<HashMap<String, (i64, Instant)>>,
    /// uid → consecutive failures, for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// How long a registration is trusted before it is repeated (repairs a
/// scheduler cluster that lost its data).
const RESYNC: Duration = Duration::from_secs(300);

impl Ctx {
    pub fn new(
        client: kube::Client,
        nodes: Arc<dyn NodeApi>,
        exec_enabled: bool,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            nodes,
            exec_enabled,
            recorder,
            metrics,
            registered: Mutex::default(),
            failures: Mutex::default(),
        }
    }
}

/// Why a ScheduledJob is not registered.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Pure: the registration request for a ScheduledJob, or why there is none.
pub fn decide(sj: &ScheduledJob, exec_enabled: bool) -> Result<pb::UpsertRequest, Refusal> {
    raftcron_crds::validate::validate_job(sj).map_err(|e| Refusal {
        reason: reason::INVALID_SPEC,
        message: e.to_string(),
    })?;
    if sj.spec.action.exec.is_some() && !exec_enabled {
        return Err(Refusal {
            reason: reason::EXEC_DISABLED,
            message: "spec.action.exec: exec actions are disabled in this raftcron installation (Helm value nodes.execEnabled)".into(),
        });
    }
    Ok(raftcron_node::api::convert::upsert_request(
        sj,
        raftcron_node::api::convert::Origin::Kubernetes,
    ))
}

/// Pure: the Ready condition to write, keeping the transition time when the
/// status does not change.
pub fn ready_condition(
    sj: &ScheduledJob,
    ready: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let previous = sj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == names::READY));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: names::READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: sj.metadata.generation,
        last_transition_time,
    }
}

fn unchanged(sj: &ScheduledJob, cond: &Condition) -> bool {
    sj.status.as_ref().is_some_and(|s| {
        s.observed_generation == sj.metadata.generation
            && s.conditions.iter().any(|c| {
                c.type_ == cond.type_
                    && c.status == cond.status
                    && c.reason == cond.reason
                    && c.message == cond.message
            })
    })
}

async fn set_ready(
    api: &Api<ScheduledJob>,
    sj: &ScheduledJob,
    ready: bool,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let cond = ready_condition(sj, ready, reason, message, Timestamp::now());
    if unchanged(sj, &cond) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": raftcron_crds::names::API_VERSION,
        "kind": "ScheduledJob",
        "status": {"observedGeneration": sj.metadata.generation, "conditions": [cond]},
    });
    api.patch_status(
        &sj.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER_OPERATOR).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

async fn event(ctx: &Ctx, sj: &ScheduledJob, type_: EventType, reason: &str, note: String) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &sj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish event");
    }
}

#[tracing::instrument(skip_all, fields(scheduledjob = %format!("{}/{}", sj.namespace().unwrap_or_default(), sj.name_any())))]
pub async fn reconcile(sj: Arc<ScheduledJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let uid = sj.uid().unwrap_or_default();
    let ns = sj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ScheduledJob> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, names::FINALIZER, sj, |ev| async {
        match ev {
            Event::Apply(sj) => apply(&api, sj, &ctx).await,
            Event::Cleanup(sj) => cleanup(&api, sj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock").remove(&uid);
    }
    result
}

async fn apply(api: &Api<ScheduledJob>, sj: Arc<ScheduledJob>, ctx: &Ctx) -> Result<Action, Error> {
    let uid = sj.uid().unwrap_or_default();
    let generation = sj.metadata.generation.unwrap_or(0);
    let req = match decide(&sj, ctx.exec_enabled) {
        Ok(req) => req,
        Err(r) => {
            set_ready(api, &sj, false, r.reason, &r.message).await?;
            event(ctx, &sj, EventType::Warning, r.reason, r.message).await;
            // Nothing to do until the object changes; an earlier valid
            // generation, if any, stays scheduled.
            return Ok(Action::await_change());
        }
    };
    let fresh = ctx
        .registered
        .lock()
        .expect("registered lock")
        .get(&uid)
        .is_some_and(|(g, at)| *g == generation && at.elapsed() < RESYNC);
    if fresh
        && sj
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == Some(generation))
    {
        return Ok(Action::requeue(RESYNC));
    }
    match ctx.nodes.upsert(req).await {
        Ok(outcome) => {
            ctx.registered
                .lock()
                .expect("registered lock")
                .insert(uid, (generation, Instant::now()));
            let message = match outcome {
                pb::UpsertOutcome::Stale => "a newer generation is already scheduled".to_string(),
                _ => format!("generation {generation} is scheduled on the raftcron cluster"),
            };
            set_ready(api, &sj, true, reason::REGISTERED, &message).await?;
            Ok(Action::requeue(RESYNC))
        }
        Err(NodeError::Refused(m)) => {
            set_ready(api, &sj, false, reason::INVALID_SPEC, &m).await?;
            event(ctx, &sj, EventType::Warning, reason::INVALID_SPEC, m).await;
            Ok(Action::await_change())
        }
        Err(e @ NodeError::Unavailable(_)) => {
            set_ready(
                api,
                &sj,
                false,
                reason::SCHEDULER_UNAVAILABLE,
                &e.to_string(),
            )
            .await?;
            Err(e.into())
        }
    }
}

async fn cleanup(
    api: &Api<ScheduledJob>,
    sj: Arc<ScheduledJob>,
    ctx: &Ctx,
) -> Result<Action, Error> {
    let uid = sj.uid().unwrap_or_default();
    match ctx
        .nodes
        .delete(&sj.namespace().unwrap_or_default(), &sj.name_any(), &uid)
        .await
    {
        Ok(_) => {
            ctx.registered.lock().expect("registered lock").remove(&uid);
            Ok(Action::await_change())
        }
        Err(e) => {
            // The finalizer stays until the cluster confirms; nothing is orphaned.
            let _ = set_ready(
                api,
                &sj,
                false,
                reason::DELETING,
                &format!("waiting to remove the schedule: {e}"),
            )
            .await;
            Err(e.into())
        }
    }
}

/// Transient errors retry with backoff (capped); the object's next change
/// also retries.
pub fn error_policy(sj: Arc<ScheduledJob>, error: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.category()])
        .inc();
    tracing::warn!(scheduledjob = %sj.name_any(), category = error.category(), %error, "reconcile failed");
    let mut failures = ctx.failures.lock().expect("failures lock");
    let n = failures.entry(sj.uid().unwrap_or_default()).or_insert(0);
    *n = (*n + 1).min(16);
    Action::requeue(backoff(*n))
}

/// 0.5 s, 1 s, 2 s … capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(failures.saturating_sub(1)))
        .min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
