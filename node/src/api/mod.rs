//! The scheduler gRPC API (`proto/scheduler.proto`).
//!
//! Writes are proposed to Raft; a follower answers UNAVAILABLE with the
//! leader's id and address in metadata (`raftcron-leader-id`,
//! `raftcron-leader-addr`) and the client follows. Reads (list, runs) are
//! linearizable: the leader confirms its read index with a quorum and waits
//! until it has applied it, so a read sees every acknowledged write; a
//! follower refuses them the same way and the client follows.

pub mod convert;

use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::clock::now_ms;
use crate::ctx::NodeCtx;
use crate::membership::{self, MembershipError};
use crate::pb::metadata::{LEADER_ADDR, LEADER_ID};
use crate::pb::scheduler as pb;
use crate::pb::scheduler::scheduler_server::Scheduler;
use crate::raft::{ProposeError, propose, read_barrier};
use crate::sm::{Command, Key, Response as SmResponse};

/// Maps a failed proposal to a status a client can act on.
pub fn propose_status(e: ProposeError) -> Status {
    match &e {
        ProposeError::NotLeader { leader } | ProposeError::Discarded { leader } => {
            let mut s = Status::unavailable(e.to_string());
            if let Some((id, member)) = leader {
                if let Ok(v) = MetadataValue::try_from(id.to_string()) {
                    s.metadata_mut().insert(LEADER_ID, v);
                }
                if let Some(Ok(v)) = member
                    .as_ref()
                    .map(|m| MetadataValue::try_from(m.addr.as_str()))
                {
                    s.metadata_mut().insert(LEADER_ADDR, v);
                }
            }
            s
        }
        ProposeError::Membership(_) => Status::failed_precondition(e.to_string()),
        ProposeError::Stopped(_) | ProposeError::NoQuorum(_) => Status::unavailable(e.to_string()),
    }
}

/// Maps a refused membership change or leadership transfer.
pub fn membership_status(e: MembershipError) -> Status {
    match e {
        MembershipError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        MembershipError::LastVoter | MembershipError::NoOtherVoter => {
            Status::failed_precondition(e.to_string())
        }
        MembershipError::Unreachable { .. } | MembershipError::Transfer(_) => {
            Status::unavailable(e.to_string())
        }
        MembershipError::Propose(p) => propose_status(p),
    }
}

fn unexpected(r: SmResponse) -> Status {
    Status::internal(format!("unexpected state machine response {r:?}"))
}

fn key_of(r: &Option<pb::ScheduleRef>) -> Result<Key, Status> {
    let r = r
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("ref: required"))?;
    if r.name.is_empty() {
        return Err(Status::invalid_argument("ref.name: required"));
    }
    let ns = raftcron_crds::names::namespace_or_default(Some(&r.namespace));
    Ok(Key::new(ns, &r.name))
}

pub struct SchedulerApi {
    ctx: Arc<NodeCtx>,
}

impl SchedulerApi {
    pub fn new(ctx: Arc<NodeCtx>) -> Self {
        Self { ctx }
    }

    async fn write(&self, cmd: Command) -> Result<SmResponse, Status> {
        propose(&self.ctx.raft, cmd).await.map_err(propose_status)
    }

    fn observe<T>(
        &self,
        method: &'static str,
        started: Instant,
        r: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        self.ctx.metrics.observe_grpc(method, started, code);
        r.map(Response::new)
    }

    async fn upsert_items(
        &self,
        reqs: &[pb::UpsertRequest],
    ) -> Result<Vec<pb::UpsertReply>, Status> {
        let mut items = Vec::with_capacity(reqs.len());
        let mut next = Vec::with_capacity(reqs.len());
        let now = now_ms();
        for (i, r) in reqs.iter().enumerate() {
            let (item, schedule) = convert::upsert_from_pb(r).map_err(|s| {
                if reqs.len() == 1 {
                    s
                } else {
                    Status::invalid_argument(format!(
                        "items[{i}] ({}/{}): {}",
                        r.namespace,
                        r.name,
                        s.message()
                    ))
                }
            })?;
            next.push(
                (!item.spec.suspend)
                    .then(|| schedule.next_after(now))
                    .flatten(),
            );
            items.push(item);
        }
        match self.write(Command::Upsert { items, now }).await? {
            SmResponse::Upsert(outcomes) => Ok(outcomes
                .into_iter()
                .zip(next)
                .map(|(o, next_fire_ms)| pb::UpsertReply {
                    outcome: convert::outcome_to_pb(o) as i32,
                    next_fire_ms,
                })
                .collect()),
            r => Err(unexpected(r)),
        }
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerApi {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertReply>, Status> {
        let t = Instant::now();
        let r = self
            .upsert_items(std::slice::from_ref(req.get_ref()))
            .await
            .map(|mut v| v.remove(0));
        self.observe("Upsert", t, r)
    }

    async fn upsert_batch(
        &self,
        req: Request<pb::UpsertBatchRequest>,
    ) -> Result<Response<pb::UpsertBatchReply>, Status> {
        let t = Instant::now();
        let r = self
            .upsert_items(&req.get_ref().items)
            .await
            .map(|replies| pb::UpsertBatchReply { replies });
        self.observe("UpsertBatch", t, r)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let t = Instant::now();
        let r = async {
            let req = req.into_inner();
            let key = key_of(&req.r#ref)?;
            let uid = (!req.uid.is_empty()).then_some(req.uid);
            match self
                .write(Command::Delete {
                    namespace: key.namespace,
                    name: key.name,
                    uid,
                })
                .await?
            {
                SmResponse::Delete { existed } => Ok(pb::DeleteReply { existed }),
                r => Err(unexpected(r)),
            }
        }
        .await;
        self.observe("Delete", t, r)
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let t = Instant::now();
        if let Err(e) = read_barrier(&self.ctx.raft).await {
            return self.observe("List", t, Err(propose_status(e)));
        }
        let ns = &req.get_ref().namespace;
        let now = now_ms();
        let d = self.ctx.sm.read();
        let schedules = d
            .state
            .schedules()
            .filter(|s| ns.is_empty() || &s.namespace == ns)
            .map(|s| convert::schedule_to_pb(s, now))
            .collect();
        drop(d);
        self.observe("List", t, Ok(pb::ListReply { schedules }))
    }

    async fn set_suspend(
        &self,
        req: Request<pb::SetSuspendRequest>,
    ) -> Result<Response<pb::SetSuspendReply>, Status> {
        let t = Instant::now();
        let r = async {
            let req = req.into_inner();
            let key = key_of(&req.r#ref)?;
            let cmd = Command::SetSuspend {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                suspend: req.suspend,
                now: now_ms(),
            };
            match self.write(cmd).await? {
                SmResponse::SetSuspend { found: false, .. } => {
                    Err(Status::not_found(format!("no schedule {key}")))
                }
                SmResponse::SetSuspend { changed, .. } => Ok(pb::SetSuspendReply { changed }),
                r => Err(unexpected(r)),
            }
        }
        .await;
        self.observe("SetSuspend", t, r)
    }

    async fn trigger(
        &self,
        req: Request<pb::TriggerRequest>,
    ) -> Result<Response<pb::TriggerReply>, Status> {
        let t = Instant::now();
        let r = async {
            let key = key_of(&req.get_ref().r#ref)?;
            let term = crate::raft::metrics(&self.ctx.raft).current_term;
            let cmd = Command::Trigger {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                term,
                node: self.ctx.identity.id,
                now: now_ms(),
            };
            match self.write(cmd).await? {
                SmResponse::Trigger(Ok((run_id, scheduled_ms))) => Ok(pb::TriggerReply {
                    run_id,
                    scheduled_ms,
                }),
                SmResponse::Trigger(Err(msg)) => Err(Status::not_found(msg)),
                r => Err(unexpected(r)),
            }
        }
        .await;
        self.observe("Trigger", t, r)
    }

    async fn runs(&self, req: Request<pb::RunsRequest>) -> Result<Response<pb::RunsReply>, Status> {
        let t = Instant::now();
        if let Err(e) = read_barrier(&self.ctx.raft).await {
            return self.observe("Runs", t, Err(propose_status(e)));
        }
        let r = key_of(&req.get_ref().r#ref).and_then(|key| {
            let d = self.ctx.sm.read();
            let s = d
                .state
                .get(&key)
                .ok_or_else(|| Status::not_found(format!("no schedule {key}")))?;
            Ok(pb::RunsReply {
                runs: convert::runs_to_pb(s),
            })
        });
        self.observe("Runs", t, r)
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let t = Instant::now();
        let m = crate::raft::metrics(&self.ctx.raft);
        // The applied state is the authority for the cluster id; node.json
        // catches up with it a moment later (and keeps it across a restart).
        let (n, applied_cluster_id) = {
            let sm = self.ctx.sm.read();
            (sm.state.len(), sm.state.cluster_id.clone())
        };
        let reply = convert::status_to_pb(
            &m,
            &self.ctx.identity.uid,
            applied_cluster_id.or_else(|| self.ctx.identity.cluster_id()),
            n,
        );
        self.observe("Status", t, Ok(reply))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let t = Instant::now();
        let req = req.into_inner();
        let r = membership::add_member(&self.ctx, req.id, &req.addr, &req.uid, req.voter)
            .await
            .map_err(membership_status)
            .map(|()| pb::MembersReply {
                members: convert::members_to_pb(&crate::raft::metrics(&self.ctx.raft)),
            });
        self.observe("AddMember", t, r)
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersReply>, Status> {
        let t = Instant::now();
        let r = membership::remove_member(&self.ctx, req.get_ref().id)
            .await
            .map_err(membership_status)
            .map(|()| pb::MembersReply {
                members: convert::members_to_pb(&crate::raft::metrics(&self.ctx.raft)),
            });
        self.observe("RemoveMember", t, r)
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let t = Instant::now();
        let r = membership::transfer_leadership(&self.ctx, req.get_ref().to)
            .await
            .map_err(membership_status)
            .map(|leader| pb::TransferLeaderReply { leader });
        self.observe("TransferLeader", t, r)
    }
}
