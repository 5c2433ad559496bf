//! The Raft transport, server side: decodes envelopes, refuses requests meant
//! for another incarnation or another cluster, and hands the rest to openraft.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::Identity;
use crate::pb::raft::raft_service_server::RaftService;
use crate::pb::raft::{Envelope, NodeInfoReply, NodeInfoRequest, Reply, SnapshotChunk};
use crate::raft::types::*;
use crate::raft::wire;
use crate::store::snapshot::Snapshot;
use crate::store::{LogStore, StateMachineStore};

/// Largest snapshot accepted from a peer; beyond it the stream is refused
/// rather than buffered without bound.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    identity: Arc<Identity>,
    log: LogStore,
    /// Where a snapshot from the leader is written as it arrives.
    sm: StateMachineStore,
}

/// A local disk error while taking a snapshot in; the leader retries.
fn storage_status(e: std::io::Error) -> Status {
    Status::unavailable(format!("cannot store the snapshot: {e}"))
}

impl RaftGrpc {
    pub fn new(raft: Raft, identity: Arc<Identity>, log: LogStore, sm: StateMachineStore) -> Self {
        Self {
            raft,
            identity,
            log,
            sm,
        }
    }

    /// A request for another node id, another incarnation of this id (this
    /// node's data dir was wiped since the sender learned of it) or another
    /// cluster is refused with FAILED_PRECONDITION, which the sender treats
    /// as unreachable.
    fn check(&self, env: &Envelope) -> Result<(), Status> {
        let me = &self.identity;
        if env.target_id != me.id {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}; check the member addresses",
                me.id, env.target_id
            )));
        }
        if !env.target_uid.is_empty() && env.target_uid != me.uid {
            return Err(Status::failed_precondition(format!(
                "node {} is a new incarnation (uid {}, expected {}): its data dir was replaced; it must rejoin as a new member",
                me.id,
                short_uid(&me.uid),
                short_uid(&env.target_uid)
            )));
        }
        if let (Some(mine), false) = (me.cluster_id(), env.cluster_id.is_empty())
            && mine != env.cluster_id
        {
            return Err(Status::failed_precondition(format!(
                "node {} belongs to cluster {mine}, the request comes from cluster {}",
                me.id, env.cluster_id
            )));
        }
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, env: &Envelope) -> Result<T, Status> {
        self.check(env)?;
        wire::decode(&env.payload)
            .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
    }
}

fn reply<T: serde::Serialize, E: serde::Serialize>(
    r: Result<T, E>,
) -> Result<Response<Reply>, Status> {
    let payload =
        wire::encode(&r).map_err(|e| Status::internal(format!("encoding a Raft reply: {e}")))?;
    Ok(Response::new(Reply { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn vote(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: VoteRequest = self.decode(req.get_ref())?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: VoteRequest = self.decode(req.get_ref())?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn append_entries(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: AppendEntriesRequest = self.decode(req.get_ref())?;
        reply(self.raft.append_entries(rpc).await)
    }

    type StreamAppendStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<Reply, Status>> + Send + 'static>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<AppendEntriesRequest>(64);
        let (err_tx, err_rx) = tokio::sync::oneshot::channel::<Status>();
        let check = self.clone();
        // Requests are checked and decoded here; the first bad one ends the
        // stream with its error after the replies to the good ones.
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let decoded = item.and_then(|env| check.decode::<AppendEntriesRequest>(&env));
                match decoded {
                    Ok(rpc) => {
                        if tx.send(rpc).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = err_tx.send(status);
                        return;
                    }
                }
            }
        });
        let replies = self
            .raft
            .stream_append(tokio_stream::wrappers::ReceiverStream::new(rx))
            .map(|r| {
                let r: Result<StreamAppendResult, String> = r.map_err(|fatal| fatal.to_string());
                wire::encode(&r)
                    .map(|payload| Reply { payload })
                    .map_err(|e| Status::internal(format!("encoding a reply: {e}")))
            });
        let tail = futures::stream::once(err_rx).filter_map(|r| async move { r.ok().map(Err) });
        Ok(Response::new(Box::pin(replies.chain(tail))))
    }

    async fn transfer_leader(&self, req: Request<Envelope>) -> Result<Response<Reply>, Status> {
        let rpc: TransferLeaderRequest = self.decode(req.get_ref())?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Reply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let env = first
            .envelope
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk has no envelope"))?;
        let (vote, meta): (Vote, SnapshotMeta) = self.decode(&env)?;
        let snapshots = self.sm.snapshots();
        let mut file = snapshots.receive(&meta).map_err(storage_status)?;
        let mut data = first.data;
        loop {
            if file.written() + data.len() as u64 > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot larger than 4 GiB"));
            }
            // Off the async workers, as the sender reads it: writing to a
            // disk under writeback pressure can block.
            file = tokio::task::spawn_blocking(move || file.write_data(&data).map(|()| file))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(storage_status)?;
            match stream.next().await {
                Some(chunk) => data = chunk?.data,
                None => break,
            }
        }
        // Decoded before it is handed to openraft, which panics on an
        // inconsistent snapshot; a malformed one is refused here instead.
        let sm = self.sm.clone();
        let checked = tokio::task::spawn_blocking(move || sm.snapshots().received(file))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let file = checked.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Status::invalid_argument(format!("malformed snapshot: {e}"))
            } else {
                storage_status(e)
            }
        })?;
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        reply(
            self.raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(RaftError::<openraft::errors::Infallible>::Fatal),
        )
    }

    async fn node_info(
        &self,
        _req: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoReply>, Status> {
        let me = &self.identity;
        Ok(Response::new(NodeInfoReply {
            id: me.id,
            uid: me.uid.clone(),
            cluster_id: me.cluster_id().unwrap_or_default(),
            initialized: self.log.is_initialized(),
            addr: me.addr.clone(),
        }))
    }
}
