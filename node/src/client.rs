//! The scheduler API client: raftcronctl, the operator, the join loop and the
//! tests use it. It talks to any endpoint and follows the leader:
//!
//! ```text
//!  call ──► current endpoint ──UNAVAILABLE + raftcron-leader-addr──► leader ──► reply
//!             │ transport error / no leader known yet
//!             └──► next endpoint, backoff 50 ms … 1 s, until the deadline
//! ```
//!
//! Every write in the API is idempotent (upserts carry uid and generation,
//! claims and transitions are keyed), so retrying after a lost reply is safe.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

use crate::pb::metadata::{LEADER_ADDR, LEADER_ID};
use crate::pb::scheduler as pb;
use crate::pb::scheduler::scheduler_client::SchedulerClient;
use crate::raft::network::Dialer;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", .0.message())]
    Status(Status),
    #[error("no endpoint answered within {deadline:?}; last error: {last}")]
    Unreachable { deadline: Duration, last: String },
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

impl ClientError {
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

pub struct Client {
    endpoints: Vec<String>,
    dialer: Dialer,
    /// (address, channel) of the node believed to be the leader, or the last one that answered.
    current: Mutex<Option<(String, Channel)>>,
    deadline: Duration,
    request_timeout: Duration,
}

impl Client {
    /// `endpoints` are `host:port` gRPC addresses of any nodes.
    pub fn new(endpoints: Vec<String>, tls: Option<ClientTlsConfig>) -> Self {
        Self {
            endpoints,
            dialer: Dialer::new(tls, Duration::from_secs(2)),
            current: Mutex::new(None),
            deadline: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// How long a call keeps retrying (following leaders, waiting out an election).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn channel_for(&self, addr: &str) -> Result<Channel, ClientError> {
        self.dialer
            .channel(addr)
            .map_err(|e| ClientError::Endpoint {
                endpoint: addr.to_string(),
                reason: e.to_string(),
            })
    }

    /// Runs `f` against the leader (as far as known), retrying as described above.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(SchedulerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut next_endpoint = 0usize;
        let mut last;
        loop {
            let current = self.current.lock().expect("client lock").clone();
            let (addr, channel) = match current {
                Some(c) => c,
                None => {
                    if self.endpoints.is_empty() {
                        return Err(ClientError::Endpoint {
                            endpoint: String::new(),
                            reason: "no endpoints".into(),
                        });
                    }
                    let addr = self.endpoints[next_endpoint % self.endpoints.len()].clone();
                    next_endpoint += 1;
                    let ch = self.channel_for(&addr)?;
                    *self.current.lock().expect("client lock") = Some((addr.clone(), ch.clone()));
                    (addr, ch)
                }
            };
            let client = SchedulerClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20);
            let fut = f(client);
            let result = tokio::time::timeout(self.request_timeout, fut).await;
            let status = match result {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "{addr} did not answer within {:?}",
                    self.request_timeout
                )),
            };
            let leader_addr = status
                .metadata()
                .get(LEADER_ADDR)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {}
                _ => return Err(ClientError::Status(status)),
            }
            last = format!("{addr}: {}", status.message());
            match leader_addr {
                Some(leader) if leader != addr => {
                    let ch = self.channel_for(&leader)?;
                    *self.current.lock().expect("client lock") = Some((leader, ch));
                    continue; // follow at once
                }
                _ => {
                    *self.current.lock().expect("client lock") = None;
                }
            }
            if status.metadata().get(LEADER_ID).is_none() && started.elapsed() < self.deadline {
                tracing::debug!(%last, "retrying");
            }
            if started.elapsed() + backoff > self.deadline {
                return Err(ClientError::Unreachable {
                    deadline: self.deadline,
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Asks one specific endpoint, without following the leader (status).
    pub async fn status_of(&self, addr: &str) -> Result<pb::StatusReply, ClientError> {
        let mut c = SchedulerClient::new(self.channel_for(addr)?);
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(self.request_timeout);
        c.status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(ClientError::Status)
    }

    /// Asks the node at `addr` to hand over its leadership, without following
    /// a redirect (which would move another node's leadership).
    pub async fn transfer_leader_at(
        &self,
        addr: &str,
        to: u64,
    ) -> Result<pb::TransferLeaderReply, ClientError> {
        let mut c = SchedulerClient::new(self.channel_for(addr)?);
        let mut req = tonic::Request::new(pb::TransferLeaderRequest { to });
        req.set_timeout(self.request_timeout);
        c.transfer_leader(req)
            .await
            .map(|r| r.into_inner())
            .map_err(ClientError::Status)
    }

    pub async fn upsert_batch(
        &self,
        items: Vec<pb::UpsertRequest>,
    ) -> Result<pb::UpsertBatchReply, ClientError> {
        self.call(|mut c| {
            let req = pb::UpsertBatchRequest {
                items: items.clone(),
            };
            async move { c.upsert_batch(req).await }
        })
        .await
    }

    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<pb::DeleteReply, ClientError> {
        let req = pb::DeleteRequest {
            r#ref: Some(sref(namespace, name)),
            uid: uid.to_string(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.delete(req).await }
        })
        .await
    }

    pub async fn list(&self, namespace: &str) -> Result<pb::ListReply, ClientError> {
        let req = pb::ListRequest {
            namespace: namespace.to_string(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.list(req).await }
        })
        .await
    }

    pub async fn runs(&self, namespace: &str, name: &str) -> Result<pb::RunsReply, ClientError> {
        let req = pb::RunsRequest {
            r#ref: Some(sref(namespace, name)),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.runs(req).await }
        })
        .await
    }

    pub async fn trigger(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<pb::TriggerReply, ClientError> {
        let req = pb::TriggerRequest {
            r#ref: Some(sref(namespace, name)),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.trigger(req).await }
        })
        .await
    }

    pub async fn set_suspend(
        &self,
        namespace: &str,
        name: &str,
        suspend: bool,
    ) -> Result<pb::SetSuspendReply, ClientError> {
        let req = pb::SetSuspendRequest {
            r#ref: Some(sref(namespace, name)),
            suspend,
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.set_suspend(req).await }
        })
        .await
    }

    pub async fn add_member(
        &self,
        req: pb::AddMemberRequest,
    ) -> Result<pb::MembersReply, ClientError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.add_member(req).await }
        })
        .await
    }

    pub async fn remove_member(&self, id: u64) -> Result<pb::MembersReply, ClientError> {
        self.call(|mut c| async move { c.remove_member(pb::RemoveMemberRequest { id }).await })
            .await
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<pb::TransferLeaderReply, ClientError> {
        self.call(|mut c| async move { c.transfer_leader(pb::TransferLeaderRequest { to }).await })
            .await
    }
}

pub fn sref(namespace: &str, name: &str) -> pb::ScheduleRef {
    pb::ScheduleRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}
