//! The leader's side of the sidecar scheduler: replicas of apps attach over
//! one stream each (`proto/sidecar.proto`), and `app` actions are
//! dispatched to one of them.
//!
//! ```text
//!  sidecar ──Attach(Hello)──► AttachService ── auth ──► Registry (in memory)
//!     ▲  Welcome, Heartbeat, Prepare, Go, Cancel            │
//!     └────────────────── stream ◄──────────────────────────┤
//!  fire loop ── exec::AppDispatcher (Dispatcher) ── place / go / result ──┘
//!  leadership ends ──► Registry::clear: every stream closes, sidecars attach to the next leader
//! ```

pub mod auth;
pub mod jobs;
pub mod leases;
pub mod registry;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use raftcron_crds::{AppAction, ScheduledJobSpec};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::ctx::{Leadership, NodeCtx, Stop};
use crate::exec::{AppDispatcher, Attempt, Outcome, PreparedApp};
use crate::pb::sidecar as pb;
use crate::pb::sidecar::attach_server::Attach;
use auth::Authenticator;
pub use registry::{Placement, Registry};

/// Both sides send a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A side that hears nothing for this long drops the stream.
pub const SILENCE: Duration = Duration::from_secs(1);
/// Messages queued toward one sidecar before it counts as not keeping up.
const OUTBOUND: usize = 4096;
/// How long an attach call made during an election waits for a leader
/// (well under the sidecar's 5 s call timeout; elections take ~0.3-0.7 s).
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// The gRPC service sidecars attach to.
pub struct AttachService {
    ctx: Arc<NodeCtx>,
    registry: Registry,
    auth: Authenticator,
    leases: leases::LeaseService,
    jobs: jobs::JobService,
}

impl AttachService {
    pub fn new(ctx: Arc<NodeCtx>, registry: Registry) -> Self {
        let auth = Authenticator::new(ctx.config.kube.as_ref(), ctx.config.tls.is_some());
        let leases = leases::LeaseService::new(ctx.clone(), auth.clone());
        let jobs = jobs::JobService::new(ctx.clone(), leases.clone());
        Self {
            ctx,
            registry,
            auth,
            leases,
            jobs,
        }
    }
}

fn field(name: &str, value: &str) -> Result<(), Status> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "hello.{name}: {value:?} must be 1-253 letters, digits, '-', '.' or '_'"
        )))
    }
}

type ToSidecarStream = Pin<Box<dyn Stream<Item = Result<pb::ToSidecar, Status>> + Send>>;

impl AttachService {
    /// This node's Raft metrics once it knows a leader (or after
    /// [`LEADER_WAIT`]). During an election no node knows one; answering
    /// "no leader" at once had every sidecar retry with a growing backoff
    /// and re-attach up to 2-5 s after a leader kill that took 0.7 s to
    /// elect a successor. Held here, the call answers as soon as the
    /// election ends, with the leader or a hint to it.
    async fn known_leader(&self) -> crate::raft::types::RaftMetrics {
        use openraft::type_config::async_runtime::watch::WatchReceiver;
        let mut rx = self.ctx.raft.metrics();
        let _ = tokio::time::timeout(LEADER_WAIT, async {
            while rx.borrow_and_update().current_leader.is_none() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        crate::raft::metrics(&self.ctx.raft)
    }
}

#[tonic::async_trait]
impl Attach for AttachService {
    type AttachStream = ToSidecarStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::FromSidecar>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = req.remote_addr();
        let certs = req.peer_certs();
        let mut inbound = req.into_inner();
        let m = self.known_leader().await;
        if m.current_leader != Some(self.ctx.identity.id) {
            return Err(crate::api::propose_status(
                crate::raft::ProposeError::NotLeader {
                    leader: m
                        .current_leader
                        .map(|id| (id, m.membership_config.membership().get_node(&id).cloned())),
                },
            ));
        }
        let term = m.current_term;
        let hello = match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
            Ok(Ok(Some(pb::FromSidecar {
                msg: Some(pb::from_sidecar::Msg::Hello(h)),
            }))) => h,
            Ok(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ));
            }
        };
        field("namespace", &hello.namespace)?;
        field("app", &hello.app)?;
        field("pod", &hello.pod)?;
        if let Err(e) = self
            .auth
            .check(
                &hello.namespace,
                &hello.token,
                peer,
                certs.as_deref().map(|c| c.as_slice()),
            )
            .await
        {
            tracing::warn!(namespace = %hello.namespace, app = %hello.app, pod = %hello.pod, error = %e, "attachment refused");
            return Err(Status::permission_denied(e.to_string()));
        }
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let welcome = pb::ToSidecar {
            msg: Some(pb::to_sidecar::Msg::Welcome(pb::Welcome {
                leader: self.ctx.identity.id,
                term,
            })),
        };
        tx.try_send(welcome)
            .expect("an empty channel takes one message");
        let (id, gone) = self.registry.attach(
            &hello.namespace,
            &hello.app,
            &hello.pod,
            hello.capacity,
            tx.clone(),
        );
        tracing::info!(namespace = %hello.namespace, app = %hello.app, pod = %hello.pod, capacity = hello.capacity, "replica attached");
        self.ctx.metrics.attached(&self.registry);
        let registry = self.registry.clone();
        let metrics = self.ctx.metrics.clone();
        let reader_gone = gone.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = reader_gone.cancelled() => break,
                    n = tokio::time::timeout(SILENCE, inbound.message()) => n,
                };
                match next {
                    Ok(Ok(Some(pb::FromSidecar { msg: Some(msg) }))) => match msg {
                        pb::from_sidecar::Msg::Result(r) => registry.finished(id, r),
                        pb::from_sidecar::Msg::Heartbeat(_) | pb::from_sidecar::Msg::Hello(_) => {}
                    },
                    Ok(Ok(Some(_))) => {}
                    // Closed, broken, or silent for a second: the replica is gone.
                    _ => break,
                }
            }
            registry.detach(id);
            metrics.attached(&registry);
            tracing::info!(namespace = %hello.namespace, app = %hello.app, pod = %hello.pod, "replica detached");
        });
        let beat_gone = gone.clone();
        let raft = self.ctx.raft.clone();
        let me = self.ctx.identity.id;
        let beat_registry = self.registry.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = beat_gone.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Accepted just as the term ended (after the registry was
                // cleared), an attachment would otherwise outlive it and
                // keep its sidecar on a node that no longer dispatches.
                let m = crate::raft::metrics(&raft);
                if m.current_term != term || m.current_leader != Some(me) {
                    beat_registry.detach(id);
                    return;
                }
                let beat = pb::ToSidecar {
                    msg: Some(pb::to_sidecar::Msg::Heartbeat(pb::Heartbeat {})),
                };
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(Ok)
            .take_until(gone.cancelled_owned());
        Ok(Response::new(Box::pin(out)))
    }

    async fn acquire_lease(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        self.leases.acquire(req).await
    }

    async fn release_lease(
        &self,
        req: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        self.leases.release(req).await
    }

    async fn get_lease(
        &self,
        req: Request<pb::GetLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        self.leases.get(req).await
    }

    async fn release_pod_leases(
        &self,
        req: Request<pb::ReleasePodLeasesRequest>,
    ) -> Result<Response<pb::ReleasePodLeasesReply>, Status> {
        self.leases.release_pod(req).await
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesReply>, Status> {
        self.leases.list(req).await
    }

    async fn put_job(
        &self,
        req: Request<pb::PutJobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        self.jobs.put(req).await
    }

    async fn get_job(
        &self,
        req: Request<pb::JobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        self.jobs.get(req).await
    }

    async fn delete_job(
        &self,
        req: Request<pb::JobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        self.jobs.delete(req).await
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsReply>, Status> {
        self.jobs.list(req).await
    }
}

/// Drops every attachment whenever a leadership term of this node ends, so
/// sidecars attach to the next leader (and a deposed leader dispatches
/// nothing).
pub async fn run(ctx: Arc<NodeCtx>, registry: Registry, stop: Stop) {
    let mut leadership = Leadership::new(&ctx, stop);
    while let Some(term) = leadership.next_term().await {
        let end = leadership.term_over(term).await;
        registry.clear();
        ctx.metrics.attached(&registry);
        if end == crate::ctx::TermEnd::Stopping {
            return;
        }
    }
    registry.clear();
}

/// `app` actions dispatched through the registry.
pub struct Dispatcher {
    pub registry: Registry,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppDispatcher for Dispatcher {
    fn prepare(
        &self,
        namespace: &str,
        action: &AppAction,
        spec: &ScheduledJobSpec,
        attempt: &Attempt,
    ) -> Result<Box<dyn PreparedApp>, String> {
        let prepare = pb::Prepare {
            run_id: attempt.run_id.clone(),
            attempt: attempt.attempt,
            scheduled_ms: attempt.scheduled_ms,
            term: attempt.term,
            method: action.method.as_str().to_string(),
            path: action.path.clone(),
            headers: action
                .headers
                .iter()
                .map(|h| pb::Header {
                    name: h.name.clone(),
                    value: h.value.clone().unwrap_or_default(),
                })
                .collect(),
            body: action.body.clone().unwrap_or_default().into_bytes(),
            timeout_ms: spec.timeout_ms().clamp(0, u32::MAX as i64) as u32,
            success_codes: action.success_codes.iter().map(|c| u32::from(*c)).collect(),
            job: format!("{namespace}/{}", attempt.name),
        };
        let placement = match action.placement {
            raftcron_crds::Placement::LeastActive => Placement::LeastActive,
            raftcron_crds::Placement::RoundRobin => Placement::RoundRobin,
        };
        let placed = self
            .registry
            .place(namespace, &action.name, placement, prepare)?;
        Ok(Box::new(Prepared {
            placed: Some(placed),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            run_id: attempt.run_id.clone(),
            attempt: attempt.attempt,
            term: attempt.term,
            scheduled_ms: attempt.scheduled_ms,
        }))
    }
}

struct Prepared {
    placed: Option<registry::Placed>,
    registry: Registry,
    metrics: Arc<crate::metrics::Metrics>,
    run_id: String,
    attempt: u32,
    term: u64,
    scheduled_ms: i64,
}

impl Drop for Prepared {
    /// Not started, timed out or cancelled on the leader: the replica drops
    /// the attempt and its slot is free again.
    fn drop(&mut self) {
        if let Some(p) = self.placed.take() {
            p.cancel(&self.run_id, self.attempt);
            self.registry.release(p.replica, &self.run_id, self.attempt);
        }
    }
}

impl PreparedApp for Prepared {
    fn pod(&self) -> &str {
        self.placed.as_ref().map_or("", |p| p.pod.as_str())
    }

    fn go(mut self: Box<Self>) -> futures::future::BoxFuture<'static, Outcome> {
        async move {
            let Some(placed) = self.placed.as_mut() else {
                return Outcome::lost("the attempt was not placed");
            };
            if !placed.go(&self.run_id, self.attempt, self.term) {
                return Outcome::lost(format!("replica {} is gone", placed.pod));
            }
            let result = placed.result().await;
            // Finished: nothing to cancel on drop.
            let placed = self.placed.take().expect("placed");
            let pod = placed.pod.clone();
            match result {
                Ok(r) => {
                    if r.sent_us > 0 {
                        let late = (r.sent_us - self.scheduled_ms * 1000).max(0) as f64 / 1e6;
                        self.metrics.app_lateness.observe(late);
                    }
                    self.metrics.dispatched(r.outcome.as_str_name());
                    let message = format!("{pod}: {}", r.message);
                    match r.outcome {
                        pb::Outcome::Succeeded => Outcome::ok(Some(message)),
                        pb::Outcome::TimedOut => Outcome {
                            outcome: crate::sm::AttemptOutcome::TimedOut,
                            message: Some(message),
                        },
                        _ => Outcome::failed(message),
                    }
                }
                Err(registry::Unfinished::Detached { pod }) => {
                    self.metrics.dispatched("LOST");
                    Outcome::lost(format!(
                        "replica {pod} detached before reporting the attempt's result"
                    ))
                }
            }
        }
        .boxed()
    }
}
