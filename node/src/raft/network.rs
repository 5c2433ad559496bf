//! The Raft transport, client side: openraft's network traits over tonic.
//!
//! ```text
//!  openraft replication / election ──► PeerClient (one per target) ──► shared Channel per peer
//!        ▲                                    │ RPCOption::soft_ttl as the gRPC deadline
//!        └── Unreachable → openraft backs off ┘ Status → RPCError (see `rpc_error`)
//! ```
//!
//! One long-lived HTTP/2 channel per peer address is shared by all clients
//! openraft creates for that peer (replication, heartbeat, snapshot).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, ReplicationClosed, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::{AnyError, OptionalSend, RPCTypes};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::identity::Identity;
use crate::pb::raft::raft_service_client::RaftServiceClient;
use crate::pb::raft::{Envelope, SnapshotChunk};
use crate::raft::types::*;
use crate::raft::wire;
use crate::store::snapshot::{Snapshot, SnapshotData};

/// Bytes of snapshot data per streamed chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Creates endpoints with the node's TLS settings and timeouts.
#[derive(Clone)]
pub struct Dialer {
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
}

impl Dialer {
    pub fn new(tls: Option<ClientTlsConfig>, connect_timeout: Duration) -> Self {
        Self {
            tls,
            connect_timeout,
        }
    }

    /// A lazily connecting channel to `addr` (`host:port`).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A replication stream has no per-message deadline; keep-alives
            // are what detect a peer that vanished without closing TCP.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone())?;
        }
        Ok(ep.connect_lazy())
    }
}

/// openraft's network factory; cheap to clone.
#[derive(Clone)]
pub struct Network {
    identity: Arc<Identity>,
    dialer: Dialer,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl Network {
    pub fn new(identity: Arc<Identity>, dialer: Dialer) -> Self {
        Self {
            identity,
            dialer,
            channels: Arc::default(),
        }
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("channel map lock");
        if let Some(c) = channels.get(&(target, addr.to_string())) {
            return Ok(c.clone());
        }
        // A member's address may change (pod rescheduled); drop the stale channel.
        channels.retain(|(id, _), _| *id != target);
        let c = self.dialer.channel(addr)?;
        channels.insert((target, addr.to_string()), c.clone());
        Ok(c)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        let client = self
            .channel(target, &node.addr)
            .map(RaftServiceClient::new)
            .map_err(|e| e.to_string());
        PeerClient {
            from: self.identity.clone(),
            target,
            member: node.clone(),
            client,
        }
    }
}

/// Sends Raft RPCs to one member.
pub struct PeerClient {
    from: Arc<Identity>,
    target: NodeId,
    member: Member,
    /// Err when the member's address does not parse; every RPC then fails
    /// as Unreachable and openraft backs off.
    client: Result<RaftServiceClient<Channel>, String>,
}

impl PeerClient {
    fn envelope(&self, payload: Vec<u8>) -> Envelope {
        Envelope {
            target_id: self.target,
            target_uid: self.member.uid.clone(),
            cluster_id: self.from.cluster_id().unwrap_or_default(),
            payload,
        }
    }

    fn client(&self) -> Result<RaftServiceClient<Channel>, RPCError> {
        self.client.clone().map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
                "bad address {:?} for node {}: {e}",
                self.member.addr, self.target
            ))))
        })
    }

    fn rpc_error(&self, action: RPCTypes, timeout: Duration, status: Status) -> RPCError {
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(Timeout {
                action,
                id: self.from.id,
                target: self.target,
                timeout,
            }),
            // Connection refused or reset, or the peer is another incarnation
            // or another cluster: back off instead of hammering it.
            Code::Unavailable | Code::FailedPrecondition | Code::Unknown => RPCError::Unreachable(
                Unreachable::new(&AnyError::error(describe(self.target, &status))),
            ),
            _ => RPCError::Network(NetworkError::new(&AnyError::error(describe(
                self.target,
                &status,
            )))),
        }
    }

    /// Sends one unary RPC and decodes `Result<Resp, RaftError>`.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, tonic::Request<Envelope>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<crate::pb::raft::Reply>, Status>>,
    {
        let payload = wire::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let timeout = option.soft_ttl();
        let mut request = tonic::Request::new(self.envelope(payload));
        request.set_timeout(timeout);
        let reply = call(self.client()?, request)
            .await
            .map_err(|s| self.rpc_error(action, timeout, s))?;
        let result: Result<Resp, RaftError> = wire::decode(&reply.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The remote Raft is shutting down or hit a fatal storage error: treat
        // it like an unreachable node.
        result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

fn describe(target: NodeId, status: &Status) -> String {
    format!("node {target}: {:?}: {}", status.code(), status.message())
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.unary(
            RPCTypes::AppendEntries,
            &rpc,
            &option,
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    /// One bidirectional gRPC stream per follower: requests are pipelined
    /// and each is answered as soon as the follower has it on disk. The
    /// RPC deadline bounds the stream's setup; a dead peer is detected by
    /// HTTP/2 keep-alives.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult, RPCError>>, RPCError>>
    where
        S: Stream<Item = AppendEntriesRequest> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            let (target, uid, cluster) = (
                self.target,
                self.member.uid.clone(),
                self.from.cluster_id().unwrap_or_default(),
            );
            let outbound = input.filter_map(move |req| {
                let env = match wire::encode(&req) {
                    Ok(payload) => Some(Envelope {
                        target_id: target,
                        target_uid: uid.clone(),
                        cluster_id: cluster.clone(),
                        payload,
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode an AppendEntries request");
                        None
                    }
                };
                futures::future::ready(env)
            });
            let setup = option.soft_ttl();
            let response = match tokio::time::timeout(setup, client.stream_append(outbound)).await {
                Ok(Ok(r)) => r,
                Ok(Err(status)) => {
                    return Err(self.rpc_error(RPCTypes::AppendEntries, setup, status));
                }
                Err(_) => {
                    return Err(RPCError::Timeout(Timeout {
                        action: RPCTypes::AppendEntries,
                        id: self.from.id,
                        target,
                        timeout: setup,
                    }));
                }
            };
            let from = self.from.id;
            let replies = response.into_inner().map(move |r| match r {
                Ok(reply) => {
                    let result: Result<StreamAppendResult, String> =
                        wire::decode(&reply.payload)
                            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                    result.map_err(|e| RPCError::Unreachable(Unreachable::new(&AnyError::error(e))))
                }
                Err(status) => Err(match status.code() {
                    Code::DeadlineExceeded | Code::Cancelled => RPCError::Timeout(Timeout {
                        action: RPCTypes::AppendEntries,
                        id: from,
                        target,
                        timeout: setup,
                    }),
                    _ => RPCError::Unreachable(Unreachable::new(&AnyError::error(describe(
                        target, &status,
                    )))),
                }),
            });
            Ok(Box::pin(replies) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.unary(RPCTypes::Vote, &rpc, &option, |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    /// Implemented, not defaulted: the trait's default grants every pre-vote,
    /// which would silently disable pre-vote.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.unary(RPCTypes::Vote, &rpc, &option, |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse, RPCError> {
        self.unary(
            RPCTypes::TransferLeader,
            &req,
            &option,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let header = wire::encode(&(&vote, &snapshot.meta))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let first = SnapshotChunk {
            envelope: Some(self.envelope(header)),
            data: Vec::new(),
        };
        let n_chunks = snapshot.snapshot.data_len().div_ceil(SNAPSHOT_CHUNK as u64) + 1;
        let reader = snapshot
            .snapshot
            .data_reader()
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        // The whole transfer shares one deadline, scaled for its size.
        let timeout = option.soft_ttl() + Duration::from_millis(50 * n_chunks);
        let chunks = futures::stream::once(async { first }).chain(file_chunks(reader));
        let mut request = tonic::Request::new(chunks);
        request.set_timeout(timeout);
        let send = client.install_snapshot(request);
        let reply = tokio::select! {
            r = send => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply =
            reply.map_err(
                |s| match self.rpc_error(RPCTypes::InstallSnapshot, timeout, s) {
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
                },
            )?;
        let result: Result<SnapshotResponse, RaftError> = wire::decode(&reply.into_inner().payload)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

/// The snapshot's data as chunks, each read off the async workers (the
/// file may not be in the page cache, and these workers carry heartbeats).
/// A read error ends the stream early; the receiver then refuses the
/// truncated snapshot when it decodes it.
fn file_chunks(
    reader: impl std::io::Read + Send + 'static,
) -> impl Stream<Item = SnapshotChunk> + Send + 'static {
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let (reader, data) = tokio::task::spawn_blocking(move || {
            let mut data = Vec::with_capacity(SNAPSHOT_CHUNK);
            use std::io::Read;
            let read = (&mut reader)
                .take(SNAPSHOT_CHUNK as u64)
                .read_to_end(&mut data);
            match read {
                Ok(_) => (Some(reader), data),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the snapshot to send stopped");
                    (None, Vec::new())
                }
            }
        })
        .await
        .ok()?;
        if data.is_empty() {
            return None;
        }
        Some((
            SnapshotChunk {
                envelope: None,
                data,
            },
            reader,
        ))
    })
}
