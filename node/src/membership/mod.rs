//! Membership changes, driven through the leader: add a node as a learner,
//! promote it once caught up, remove it; and the join loop a node without a
//! cluster runs to ask for a place in one.
//!
//! A node whose id is a member under another uid is a new incarnation (its
//! data dir was wiped): the old member is removed first, then the new one is
//! added. The cluster runs with one voter fewer in between.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use tonic::Status;

use crate::node::NodeCtx;
use crate::pb::raft::NodeInfoRequest;
use crate::pb::raft::raft_service_client::RaftServiceClient;
use crate::raft::types::{Member, NodeId};
use crate::raft::{ProposeError, write_error};

/// Asks the node at `addr` who it is.
pub async fn probe(ctx: &NodeCtx, addr: &str) -> Result<crate::pb::raft::NodeInfoReply, Status> {
    let channel = ctx
        .dialer
        .channel(addr)
        .map_err(|e| Status::invalid_argument(format!("addr {addr:?}: {e}")))?;
    let mut req = tonic::Request::new(NodeInfoRequest {});
    req.set_timeout(Duration::from_secs(2));
    Ok(RaftServiceClient::new(channel)
        .node_info(req)
        .await?
        .into_inner())
}

pub fn propose_status(e: ProposeError) -> Status {
    crate::api::propose_status(e)
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
) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument("id: must be a positive integer"));
    }
    let uid = if uid.is_empty() {
        let info = probe(ctx, addr).await?;
        if info.id != id {
            return Err(Status::invalid_argument(format!(
                "the node at {addr} is node {}, not node {id}",
                info.id
            )));
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
                    .map_err(|e| propose_status(write_error(e)))?;
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
        .map_err(|e| propose_status(write_error(e)))?;
    tracing::info!(id, addr, "learner added and caught up");
    if voter {
        promote(ctx, id).await?;
    }
    Ok(())
}

async fn promote(ctx: &NodeCtx, id: NodeId) -> Result<(), Status> {
    ctx.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        .await
        .map_err(|e| propose_status(write_error(e)))?;
    settle(ctx).await;
    tracing::info!(id, "promoted to voter");
    Ok(())
}

/// Removes node `id` from the membership altogether.
pub async fn remove_member(ctx: &NodeCtx, id: NodeId) -> Result<(), Status> {
    settle(ctx).await;
    let metrics = crate::raft::metrics(&ctx.raft);
    let membership = metrics.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Ok(());
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(Status::failed_precondition("cannot remove the last voter"));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    ctx.raft
        .change_membership(change, false)
        .await
        .map_err(|e| propose_status(write_error(e)))?;
    settle(ctx).await;
    tracing::info!(id, "member removed");
    Ok(())
}
