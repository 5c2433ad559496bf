//! The operator's view of the scheduler cluster: the few calls it makes,
//! behind a trait so reconciler tests can substitute a recording fake.

use std::time::Duration;

use futures::future::BoxFuture;
use raftcron_node::client::{Client, ClientError};
use raftcron_node::pb::scheduler as pb;

/// What the operator asks of the node cluster.
pub trait NodeApi: Send + Sync + 'static {
    /// Registers (or updates) a schedule; idempotent per uid and generation.
    fn upsert(&self, req: pb::UpsertRequest)
    -> BoxFuture<'_, Result<pb::UpsertOutcome, NodeError>>;
    /// Removes the schedule with this uid, if present.
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<bool, NodeError>>;
    /// The cluster's members, from the leader.
    fn members(&self) -> BoxFuture<'_, Result<Vec<pb::Member>, NodeError>>;
    /// Removes a member through the leader.
    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), NodeError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No node answered, or none knows a leader: retry later.
    #[error("the scheduler cluster is unavailable: {0}")]
    Unavailable(String),
    /// The cluster refused the request (e.g. the spec): do not retry as is.
    #[error("the scheduler cluster refused the request: {0}")]
    Refused(String),
}

impl From<ClientError> for NodeError {
    fn from(e: ClientError) -> Self {
        match e.code() {
            Some(
                tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::NotFound,
            ) => NodeError::Refused(e.to_string()),
            _ => NodeError::Unavailable(e.to_string()),
        }
    }
}

/// The real cluster, over gRPC.
pub struct GrpcNodes {
    client: Client,
}

impl GrpcNodes {
    pub fn new(endpoints: Vec<String>, tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        // Short: a reconcile that cannot reach the cluster requeues rather than blocking a worker.
        Self {
            client: Client::new(endpoints, tls).with_deadline(Duration::from_secs(5)),
        }
    }
}

impl NodeApi for GrpcNodes {
    fn upsert(
        &self,
        req: pb::UpsertRequest,
    ) -> BoxFuture<'_, Result<pb::UpsertOutcome, NodeError>> {
        Box::pin(async move {
            let reply = self.client.upsert_batch(vec![req]).await?;
            let outcome = reply.replies.first().map(|r| r.outcome).unwrap_or_default();
            Ok(pb::UpsertOutcome::try_from(outcome).unwrap_or(pb::UpsertOutcome::Unspecified))
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<bool, NodeError>> {
        Box::pin(async move { Ok(self.client.delete(namespace, name, uid).await?.existed) })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<pb::Member>, NodeError>> {
        Box::pin(async move {
            // Any node's view is enough to decide; the removal itself goes to the leader.
            let reply = self
                .client
                .call(|mut c| async move { c.status(pb::StatusRequest {}).await })
                .await?;
            Ok(reply.members)
        })
    }

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            self.client.remove_member(id).await?;
            Ok(())
        })
    }
}
