//! Membership changes, driven through the leader: add a node as a learner,
//! promote it once caught up, remove it; and the join loop a node without a
//! cluster runs to ask for a place in one.
//!
//! A node whose id is a member under another uid is a new incarnation (its
//! data dir was wiped): the old member is removed first, then the new one is
//! added. The cluster runs with one voter fewer in between.

pub mod bootstrap;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;

use crate::ctx::NodeCtx;
use crate::pb::raft::NodeInfoRequest;
use crate::pb::raft::raft_service_client::RaftServiceClient;
use crate::raft::types::{Member, NodeId};
use crate::raft::{ProposeError, write_error};

/// Why a membership change or a leadership transfer was not made. The
/// gRPC layer maps each to a status once (`api::membership_status`).
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A request field is wrong; the message names it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The node to add did not answer.
    #[error("the node at {addr} does not answer: {message}")]
    Unreachable { addr: String, message: String },
    #[error("cannot remove the last voter")]
    LastVoter,
    #[error("no other voter to transfer leadership to")]
    NoOtherVoter,
    #[error("leadership transfer failed: {0}")]
    Transfer(String),
    #[error(transparent)]
    Propose(#[from] ProposeError),
}

/// Asks the node at `addr` who it is.
pub async fn probe(
    ctx: &NodeCtx,
    addr: &str,
) -> Result<crate::pb::raft::NodeInfoReply, MembershipError> {
    let channel = ctx
        .dialer
        .channel(addr)
        .map_err(|e| MembershipError::Invalid {
            field: "addr",
            message: format!("{addr:?}: {e}"),
        })?;
    let mut req = tonic::Request::new(NodeInfoRequest {});
    req.set_timeout(Duration::from_secs(2));
    RaftServiceClient::new(channel)
        .node_info(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| MembershipError::Unreachable {
            addr: addr.to_string(),
            message: s.message().to_string(),
        })
}

fn change_error(
    e: crate::raft::types::RaftError<crate::raft::types::ClientWriteError>,
) -> MembershipError {
    MembershipError::Propose(write_error(e))
}

/// Waits (at most 5 s) until the membership is a single (not joint)
/// configuration and its entry is applied here. openraft refuses a change
/// while the previous one is uncommitted, and `change_membership` can return
/// before the second (uniform) step of a joint change is even appended: a
/// `member add` right after a `member remove` was refused ("already
/// undergoing a configuration change", seen in CI), and a status read right
/// after it could still list the removed node.
async fn settle(ctx: &NodeCtx) {
    // A timeout is not an error here: the change that follows is refused
    // with openraft's own message if the previous one is still pending.
    let _ = ctx
        .raft
        .wait(Some(std::time::Duration::from_secs(5)))
        .metrics(
            |m| {
                m.membership_config.membership().get_joint_config().len() == 1
                    && m.membership_config.log_id().as_ref().map(|l| l.index)
                        <= m.last_applied.as_ref().map(|l| l.index)
            },
            "a uniform membership is applied",
        )
        .await;
}

/// Adds (or re-adds, for a new incarnation) node `id`; with `voter`, promotes it.
pub async fn add_member(
    ctx: &NodeCtx,
    id: NodeId,
    addr: &str,
    uid: &str,
    voter: bool,
) -> Result<(), MembershipError> {
    if id == 0 {
        return Err(MembershipError::Invalid {
            field: "id",
            message: "must be a positive integer".into(),
        });
    }
    let uid = if uid.is_empty() {
        let info = probe(ctx, addr).await?;
        if info.id != id {
            return Err(MembershipError::Invalid {
                field: "id",
                message: format!("the node at {addr} is node {}, not node {id}", info.id),
            });
        }
        info.uid
    } else {
        uid.to_string()
    };
    let member = Member {
        addr: addr.to_string(),
        uid: uid.clone(),
    };
    settle(ctx).await;
    let metrics = crate::raft::metrics(&ctx.raft);
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    match membership.get_node(&id) {
        Some(existing) if existing.uid == uid => {
            if existing.addr != addr {
                tracing::info!(id, from = %existing.addr, to = addr, "member address changed");
                ctx.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, member.clone())])),
                        true,
                    )
                    .await
                    .map_err(change_error)?;
            }
            if voter && !voters.contains(&id) {
                promote(ctx, id).await?;
            }
            return Ok(());
        }
        Some(existing) => {
            tracing::warn!(id, old_uid = %existing.uid, new_uid = %uid, "replacing a member by its new incarnation");
            remove_member(ctx, id).await?;
        }
        None => {}
    }
    ctx.raft
        .add_learner(id, member, true)
        .await
        .map_err(change_error)?;
    tracing::info!(id, addr, "learner added and caught up");
    if voter {
        promote(ctx, id).await?;
    }
    Ok(())
}

async fn promote(ctx: &NodeCtx, id: NodeId) -> Result<(), MembershipError> {
    ctx.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        .await
        .map_err(change_error)?;
    settle(ctx).await;
    tracing::info!(id, "promoted to voter");
    Ok(())
}

/// Removes node `id` from the membership altogether.
pub async fn remove_member(ctx: &NodeCtx, id: NodeId) -> Result<(), MembershipError> {
    settle(ctx).await;
    let metrics = crate::raft::metrics(&ctx.raft);
    let membership = metrics.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Ok(());
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(MembershipError::LastVoter);
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    ctx.raft
        .change_membership(change, false)
        .await
        .map_err(change_error)?;
    settle(ctx).await;
    tracing::info!(id, "member removed");
    Ok(())
}

/// Hands leadership to `to` (0: the most up-to-date other voter) and waits
/// until a new leader is known.
pub async fn transfer_leadership(
    ctx: &NodeCtx,
    to: NodeId,
) -> Result<Option<NodeId>, MembershipError> {
    let m = crate::raft::metrics(&ctx.raft);
    if m.current_leader != Some(ctx.identity.id) {
        return Err(ProposeError::NotLeader {
            leader: m
                .current_leader
                .map(|id| (id, m.membership_config.membership().get_node(&id).cloned())),
        }
        .into());
    }
    let target = if to != 0 {
        to
    } else {
        crate::raft::most_caught_up_other_voter(&m).ok_or(MembershipError::NoOtherVoter)?
    };
    ctx.raft
        .trigger()
        .transfer_leader(target)
        .await
        .map_err(|e| MembershipError::Transfer(e.to_string()))?;
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    let mut rx = ctx.raft.metrics();
    let me = ctx.identity.id;
    let waited = tokio::time::timeout(
        Duration::from_secs(3),
        rx.wait_until(move |m| m.current_leader.is_some_and(|l| l != me)),
    )
    .await;
    match waited {
        Ok(Ok(m)) => Ok(m.current_leader),
        _ => Ok(crate::raft::metrics(&ctx.raft).current_leader),
    }
}
