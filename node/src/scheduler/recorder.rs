//! Batches run transitions into `Command::Record` entries.
//!
//! Entries are submitted in the order events arrive (so a start is applied
//! before its result) without waiting for each to commit: up to
//! `MAX_IN_FLIGHT` entries are pipelined, each carrying everything that
//! queued while the previous one was being submitted, and everything that
//! arrives within [`LINGER`] of its first event.
//!
//! The linger keeps Raft off the send path: at an instant with a thousand
//! fires, the starts used to go to Raft at once, and the entry's append,
//! replication, fsync and apply on three nodes ran on the same cores as the
//! requests still being sent. Lingering, the starts wait until most
//! requests are out, and most of their results ride in the same entry.
//! Nothing waits on a start being recorded (the fire lease, not the log,
//! keeps a successor from running it again: `plan::takeover`), so a start
//! recorded a few milliseconds later changes only when it shows in status.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use openraft::impls::ProgressResponder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::raft::types::{LeaderId, NodeId, Raft, TypeConfig};
use crate::sm::{Command, RunEvent};

/// Events per entry. Smaller entries cost more per event, but a follower
/// appends and applies each in one go, and the heartbeats it must answer
/// wait behind that: at 45,000 fires/s offered (`raftcron-bench fires`,
/// alternating builds) 5,000 gave 12 elections in 4 runs, 1,000 gave 7 in 5,
/// with more fires too.
const MAX_BATCH: usize = 1000;
const MAX_IN_FLIGHT: usize = 64;
/// How long a batch gathers after its first event.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<RunEvent>,
}

impl Recorder {
    /// Queues an event; dropped silently once the term has ended (the next
    /// leader settles the run).
    pub fn record(&self, e: RunEvent) {
        let _ = self.tx.send(e);
    }

    pub fn record_all(&self, events: impl IntoIterator<Item = RunEvent>) {
        for e in events {
            self.record(e);
        }
    }

    pub fn spawn(
        raft: Raft,
        term: u64,
        node: NodeId,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, term, node, rx, cancel));
        (Self { tx }, task)
    }
}

async fn run(
    raft: Raft,
    term: u64,
    node: NodeId,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    cancel: CancellationToken,
) {
    let leader = LeaderId {
        term,
        node_id: node,
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        let first = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => break },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => { report(done); continue }
            _ = cancel.cancelled() => break,
        };
        let mut events = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while events.len() < MAX_BATCH {
            // Biased: whatever is queued is taken before the linger can end the batch.
            tokio::select! {
                biased;
                e = rx.recv() => match e { Some(e) => events.push(e), None => break },
                Some(done) = in_flight.next(), if !in_flight.is_empty() => report(done),
                _ = &mut linger => break,
                _ = cancel.cancelled() => break,
            }
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(done) = in_flight.next().await {
                report(done);
            }
        }
        let (responder, done) = ProgressResponder::<TypeConfig, _>::complete_only();
        let n = events.len();
        let cmd = Command::Record { term, node, events };
        if let Err(e) = raft
            .write(cmd)
            .with_leader(leader)
            .responder(responder)
            .await
        {
            tracing::warn!(error = %e, "raft stopped; run events not recorded");
            break;
        }
        in_flight.push(async move { (n, done.await) });
    }
    while let Some(done) = in_flight.next().await {
        report(done);
    }
}

fn report<T, E: std::fmt::Display, R>(done: (usize, Result<Result<T, E>, R>)) {
    match done {
        (_, Ok(Ok(_))) => {}
        (n, Ok(Err(e))) => {
            tracing::info!(events = n, error = %e, "run events not recorded; the next leader settles these runs")
        }
        (n, Err(_)) => tracing::info!(events = n, "run events dropped with the Raft core"),
    }
}
