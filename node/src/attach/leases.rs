//! The leader's side of leases for app code: the unary lease RPCs of the
//! Attach service (`proto/sidecar.proto`), relayed by each replica's
//! sidecar for its app.
//!
//! ```text
//!  sidecar ──AcquireLease / ReleaseLease / GetLease(wait) / ReleasePodLeases──► LeaseService
//!                          (follower: UNAVAILABLE + leader address)               │ auth (as Attach)
//!                                                                                  ▼
//!            Command::Lease(.., now = leader clock, skew = --max-clock-skew) ──► Raft ──► sm::leases
//!                                                                                  │
//!  GetLease(wait) waiters ◄── `changed` (every lease write of this leader) ◄──────┘
//!  sweeper (every 250 ms, leader only) ── Expire{now} once a grant is free everywhere
//! ```
//!
//! Every lease write is proposed by the leader through this service, and a
//! waiter starts with a read barrier (so the writes of earlier terms are
//! applied): a waiter wakes on `changed`, at the instant the grant it sees
//! becomes free, or when its wait ends.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::auth::Authenticator;
use crate::clock::now_ms;
use crate::ctx::NodeCtx;
use crate::pb::sidecar as pb;
use crate::raft::{ProposeError, propose, read_barrier};
use crate::sm::leases::{self, Grant, Lease, LeaseCommand, LeaseKey, LeaseResponse};
use crate::sm::{Command, Response as SmResponse};

/// Longest a GetLease waits.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How often the leader drops grants that expired everywhere.
const SWEEP: Duration = Duration::from_millis(250);
/// How often a waiter checks that this node still leads.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(250);

/// The lease RPCs; cheap to clone.
#[derive(Clone)]
pub struct LeaseService {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<NodeCtx>,
    auth: Authenticator,
    /// Bumped after every lease write applied here.
    changed: watch::Sender<u64>,
}

/// The caller of a lease (or job) RPC, checked.
pub(super) struct Caller {
    pub namespace: String,
    pub app: String,
    pub pod: String,
}

fn name(field: &str, value: &str) -> Result<(), Status> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "caller.{field}: {value:?} must be 1-253 letters, digits, '-', '.' or '_'"
        )))
    }
}

fn invalid(e: leases::InvalidLease) -> Status {
    Status::invalid_argument(e.to_string())
}

fn unexpected(r: SmResponse) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

/// The wire form of one grant.
pub fn info(key: &LeaseKey, l: &Lease) -> pb::LeaseInfo {
    pb::LeaseInfo {
        namespace: key.namespace.clone(),
        app: key.app.clone(),
        key: key.key.clone(),
        holder: l.holder.clone(),
        token: l.token,
        acquired_ms: l.acquired,
        expires_ms: l.expires,
        ttl_ms: l.ttl_ms.clamp(0, u32::MAX as i64) as u32,
    }
}

impl LeaseService {
    /// Starts the expiry sweeper too; it ends once the service is dropped.
    pub fn new(ctx: Arc<NodeCtx>, auth: Authenticator) -> Self {
        let inner = Arc::new(Inner {
            ctx,
            auth,
            changed: watch::channel(0).0,
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn skew(&self) -> i64 {
        self.inner.ctx.config.scheduler.max_clock_skew_ms.max(0)
    }

    /// UNAVAILABLE with the leader's address unless this node leads.
    fn leading(&self) -> Result<(), Status> {
        let m = crate::raft::metrics(&self.inner.ctx.raft);
        if m.current_leader == Some(self.inner.ctx.identity.id) {
            return Ok(());
        }
        Err(crate::api::propose_status(ProposeError::NotLeader {
            leader: m
                .current_leader
                .map(|id| (id, m.membership_config.membership().get_node(&id).cloned())),
        }))
    }

    /// The leader check, then the caller's fields and credentials (the job
    /// RPCs check their callers with it too).
    pub(super) async fn caller<T>(
        &self,
        req: &Request<T>,
        caller: Option<&pb::LeaseCaller>,
    ) -> Result<Caller, Status> {
        self.leading()?;
        let c = caller.ok_or_else(|| Status::invalid_argument("caller: required"))?;
        name("namespace", &c.namespace)?;
        name("app", &c.app)?;
        name("pod", &c.pod)?;
        let certs = req.peer_certs();
        if let Err(e) = self
            .inner
            .auth
            .check(
                &c.namespace,
                &c.token,
                req.remote_addr(),
                certs.as_deref().map(|c| c.as_slice()),
            )
            .await
        {
            tracing::warn!(namespace = %c.namespace, app = %c.app, pod = %c.pod, error = %e, "lease call refused");
            return Err(Status::permission_denied(e.to_string()));
        }
        Ok(Caller {
            namespace: c.namespace.clone(),
            app: c.app.clone(),
            pod: c.pod.clone(),
        })
    }

    async fn write(&self, cmd: LeaseCommand) -> Result<LeaseResponse, Status> {
        let r = propose(&self.inner.ctx.raft, Command::Lease(cmd))
            .await
            .map_err(crate::api::propose_status)?;
        self.inner.changed.send_modify(|n| *n += 1);
        match r {
            SmResponse::Lease(l) => Ok(l),
            other => Err(unexpected(other)),
        }
    }

    /// The grant of `key` as of `now`; `None` once it is free everywhere.
    fn current(&self, key: &LeaseKey, now: i64) -> Option<Lease> {
        let d = self.inner.ctx.sm.read();
        d.state
            .leases()
            .get(key)
            .filter(|l| !l.free_at(now, self.skew()))
            .cloned()
    }

    fn reply(&self, ok: bool, key: &LeaseKey, lease: Option<&Lease>, now: i64) -> pb::LeaseReply {
        pb::LeaseReply {
            ok,
            lease: lease.map(|l| info(key, l)),
            renewed: false,
            now_ms: now,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn acquire(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        let c = self.caller(&req, req.get_ref().caller.as_ref()).await?;
        let r = req.get_ref();
        leases::validate_key(&r.key).map_err(invalid)?;
        leases::validate_ttl_ms(i64::from(r.ttl_ms)).map_err(invalid)?;
        let key = LeaseKey::new(&c.namespace, &c.app, &r.key);
        let now = now_ms();
        let out = self
            .write(LeaseCommand::Acquire {
                key: key.clone(),
                pod: c.pod.clone(),
                ttl_ms: i64::from(r.ttl_ms),
                now,
                skew_ms: self.skew(),
            })
            .await?;
        let m = &self.inner.ctx.metrics;
        match out {
            LeaseResponse::Granted { lease, how } => {
                m.lease_granted(how);
                if how == Grant::TakenOver {
                    m.lease_ended("expired", 1);
                }
                let mut reply = self.reply(true, &key, Some(&lease), now);
                reply.renewed = how == Grant::Renewed;
                Ok(Response::new(reply))
            }
            LeaseResponse::Refused { lease } => {
                m.lease_refused();
                Ok(Response::new(self.reply(false, &key, Some(&lease), now)))
            }
            LeaseResponse::TooMany { limit } => Err(Status::resource_exhausted(format!(
                "key: app {}/{} holds {limit} leases already, the most one app may hold",
                c.namespace, c.app
            ))),
            other => Err(unexpected(SmResponse::Lease(other))),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn release(
        &self,
        req: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        let c = self.caller(&req, req.get_ref().caller.as_ref()).await?;
        let r = req.get_ref();
        leases::validate_key(&r.key).map_err(invalid)?;
        let key = LeaseKey::new(&c.namespace, &c.app, &r.key);
        let out = self
            .write(LeaseCommand::Release {
                key: key.clone(),
                pod: c.pod.clone(),
            })
            .await?;
        let now = now_ms();
        match out {
            LeaseResponse::Released { released, current } => {
                if released {
                    self.inner.ctx.metrics.lease_ended("released", 1);
                }
                let current = current.filter(|l| !l.free_at(now, self.skew()));
                Ok(Response::new(self.reply(
                    released,
                    &key,
                    current.as_ref(),
                    now,
                )))
            }
            other => Err(unexpected(SmResponse::Lease(other))),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn release_pod(
        &self,
        req: Request<pb::ReleasePodLeasesRequest>,
    ) -> Result<Response<pb::ReleasePodLeasesReply>, Status> {
        let c = self.caller(&req, req.get_ref().caller.as_ref()).await?;
        let out = self
            .write(LeaseCommand::ReleasePod {
                namespace: c.namespace.clone(),
                app: c.app.clone(),
                pod: c.pod.clone(),
            })
            .await?;
        match out {
            LeaseResponse::ReleasedPod { keys } => {
                self.inner
                    .ctx
                    .metrics
                    .lease_ended("shutdown", keys.len() as u64);
                tracing::info!(namespace = %c.namespace, app = %c.app, pod = %c.pod, released = keys.len(), "leases of a pod released: its sidecar is stopping");
                Ok(Response::new(pb::ReleasePodLeasesReply { keys }))
            }
            other => Err(unexpected(SmResponse::Lease(other))),
        }
    }

    /// The lease now, or once its token differs from `since` (a new holder,
    /// released, or expired everywhere), or when the wait is over.
    #[tracing::instrument(skip_all)]
    pub async fn get(
        &self,
        req: Request<pb::GetLeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        let c = self.caller(&req, req.get_ref().caller.as_ref()).await?;
        let r = req.get_ref();
        leases::validate_key(&r.key).map_err(invalid)?;
        let key = LeaseKey::new(&c.namespace, &c.app, &r.key);
        // Everything committed before, earlier terms' writes included, is
        // applied here: from now on every change goes through `write`.
        read_barrier(&self.inner.ctx.raft)
            .await
            .map_err(crate::api::propose_status)?;
        let mut changed = self.inner.changed.subscribe();
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_WAIT);
        let until = tokio::time::Instant::now() + wait;
        let token = |l: &Option<Lease>| l.as_ref().map_or(0, |l| l.token);
        let since = match r.since {
            Some(s) => s,
            None => token(&self.current(&key, now_ms())),
        };
        loop {
            changed.borrow_and_update();
            let now = now_ms();
            let cur = self.current(&key, now);
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if token(&cur) != since || left.is_zero() {
                let mine = cur.as_ref().is_some_and(|l| l.holder == c.pod);
                return Ok(Response::new(self.reply(mine, &key, cur.as_ref(), now)));
            }
            let free_in = cur.as_ref().map_or(left, |l| {
                Duration::from_millis((l.expires + self.skew() - now).max(0) as u64)
            });
            let nap = left.min(free_in).min(LEADERSHIP_CHECK);
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
            self.leading()?;
        }
    }

    /// Leases held now; not authenticated beyond the port, like the
    /// scheduler API's `List`.
    #[tracing::instrument(skip_all)]
    pub async fn list(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesReply>, Status> {
        self.leading()?;
        read_barrier(&self.inner.ctx.raft)
            .await
            .map_err(crate::api::propose_status)?;
        let r = req.get_ref();
        let now = now_ms();
        let d = self.inner.ctx.sm.read();
        let leases = d
            .state
            .leases()
            .of(&r.namespace, &r.app)
            .filter(|(_, l)| !l.free_at(now, self.skew()))
            .map(|(k, l)| info(k, l))
            .collect();
        Ok(Response::new(pb::ListLeasesReply {
            leases,
            now_ms: now,
        }))
    }
}

/// Drops grants that expired on every clock, on the leader, and keeps the
/// lease gauge current on every node.
async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let skew = inner.ctx.config.scheduler.max_clock_skew_ms.max(0);
        let (held, next_free) = {
            let d = inner.ctx.sm.read();
            (d.state.leases().len(), d.state.leases().next_free(skew))
        };
        inner.ctx.metrics.leases_held.set(held as i64);
        let m = crate::raft::metrics(&inner.ctx.raft);
        let now = now_ms();
        if m.current_leader != Some(inner.ctx.identity.id) || next_free.is_none_or(|t| t > now) {
            continue;
        }
        let cmd = Command::Lease(LeaseCommand::Expire { now, skew_ms: skew });
        match propose(&inner.ctx.raft, cmd).await {
            Ok(SmResponse::Lease(LeaseResponse::Expired { keys })) => {
                inner.changed.send_modify(|n| *n += 1);
                inner.ctx.metrics.lease_ended("expired", keys.len() as u64);
                for k in &keys {
                    tracing::debug!(lease = %k, "lease expired");
                }
            }
            Ok(other) => tracing::warn!(response = ?other, "unexpected response to a lease sweep"),
            Err(e) => tracing::debug!(error = %e, "lease sweep not written"),
        }
    }
}
