//! Threads of Raft's own: openraft's core, its replication streams (with
//! their gRPC channels) and its state-machine worker run on a tokio runtime
//! that nothing else uses.
//!
//! On the node's main runtime, a leader saturated by fires (30,000 due each
//! second, or fewer beside another busy process) queued the core's tick and
//! the heartbeats behind thousands of scheduler tasks; the followers' election
//! timers ran out, the leader lost its term, and the fire rate collapsed
//! sevenfold while the new leader settled (issue 16: 724 fires/s and 3
//! elections in 30 s). Here the consensus work waits only for the kernel's
//! scheduler, which favours a thread that mostly sleeps, so a heartbeat goes
//! out on time however far behind the fire loop is; the fire loop sheds its
//! own load (`plan::behind`).
//!
//! openraft spawns every task it starts on the runtime of the task that
//! creates it, so [`ConsensusRuntime::run`] is where `Raft::new` is awaited;
//! the tonic channels to peers are created lazily by the replication tasks
//! (`network.rs`), so their connection tasks live here too.
//!
//! Tried and measured worse: running the node's other threads at nice +5.
//! The state-machine worker is here too, and on a saturated machine the
//! followers' apply then outranked their gRPC server, which receives the
//! heartbeats: 45,000 fires/s offered gave 3,015 fires/s and 2 elections.

use std::future::Future;

/// Four workers, so the core never waits in tokio's queue behind the
/// state-machine worker applying a large batch of run events, or behind
/// replication encoding one: a task is not preempted, and the kernel shares
/// the cores between threads fairly.
const WORKERS: usize = 4;

/// A tokio runtime for one node's Raft. Dropping it stops its tasks without
/// waiting for them (dropping a runtime from async code would panic).
pub struct ConsensusRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl ConsensusRuntime {
    pub fn new(node: u64) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name(format!("raft-{node}"))
            .enable_all()
            .build()?;
        Ok(Self { rt: Some(rt) })
    }

    /// Runs `f` on the consensus threads and waits for it from any runtime.
    pub async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().expect("the runtime lives until drop");
        match rt.spawn(f).await {
            Ok(out) => out,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl Drop for ConsensusRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_consensus_threads_and_spawns_there() {
        let rt = ConsensusRuntime::new(7).unwrap();
        let (outer, inner) = rt
            .run(async {
                let here = std::thread::current().name().map(str::to_string);
                let spawned =
                    tokio::spawn(async { std::thread::current().name().map(str::to_string) })
                        .await
                        .unwrap();
                (here, spawned)
            })
            .await;
        assert_eq!(outer.as_deref(), Some("raft-7"));
        assert_eq!(inner.as_deref(), Some("raft-7"));
        assert_ne!(
            std::thread::current().name(),
            Some("raft-7"),
            "the test itself runs elsewhere"
        );
    }
}
