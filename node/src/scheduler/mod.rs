//! The fire loop: on the leader, claim upcoming fires in one batched entry,
//! start each at its instant after checking the lease, record starts and
//! results; on a new leader, settle what the previous one left behind.
//!
//! ```text
//!  leadership watch ──► LeaderTerm (one per term)
//!                          ├─ takeover: Lost / written-off attempts (plan::takeover)
//!                          ├─ claim tick: plan::claims ──► Command::Claim (one entry)
//!                          ├─ start queue: at instant, lease check, plan::at_start ──► executors
//!                          └─ recorder: RunEvents batched ──► Command::Record (ordered, pipelined)
//! ```

pub mod config;
mod due;
mod firer;
mod leader;
pub use config::{SchedulerArgs, SchedulerConfig};
pub use firer::fire_lease;
pub mod parsed;
pub mod plan;
mod recorder;
#[cfg(test)]
mod sim_tests;
mod waiting;

use std::sync::Arc;

use crate::ctx::{Leadership, NodeCtx, Stop, TermEnd};

/// Runs the fire loop for every term in which this node leads.
pub async fn run(ctx: Arc<NodeCtx>, stop: Stop) {
    let executors = Arc::new(
        crate::kube::executors(ctx.config.scheduler.exec.clone(), ctx.config.kube.as_ref())
            .with_apps(Arc::new(crate::attach::Dispatcher {
                registry: ctx.attachments.clone(),
                metrics: ctx.metrics.clone(),
            })),
    );
    let mut leadership = Leadership::new(&ctx, stop);
    while let Some(term) = leadership.next_term().await {
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut task = tokio::spawn(
            leader::LeaderTerm::new(ctx.clone(), term, executors.clone(), cancel.clone()).run(),
        );
        // When to hand leadership on; set once the fire loop has ended
        // while this node still leads.
        let mut handoff: Option<tokio::time::Instant> = None;
        let end = loop {
            tokio::select! {
                end = leadership.term_over(term) => break end,
                _ = &mut task, if handoff.is_none() => {
                    handoff = Some(tokio::time::Instant::now());
                }
                _ = tokio::time::sleep_until(handoff.unwrap_or_else(tokio::time::Instant::now)), if handoff.is_some() => {
                    hand_off(&ctx, term).await;
                    handoff = Some(tokio::time::Instant::now() + ctx.config.timing.election_max * 2);
                }
            }
        };
        cancel.cancel();
        if end == TermEnd::Stopping {
            let _ = task.await;
            return;
        }
        tracing::info!(term, "leadership ended; stopping the fire loop");
        if handoff.is_none() {
            let _ = task.await;
        }
    }
}

/// The fire loop of `term` ended (a write or a read failed) while this node
/// still leads: hand leadership on rather than lead without firing.
///
/// Restarting the loop inside the same term would be unsafe: the new loop
/// could not tell which claimed fires the old one had started without the
/// start reaching the log. A new term settles them the usual way
/// (`plan::takeover`). Another voter gets leadership by transfer; a sole
/// voter starts an election of its own, which it wins in a new term.
async fn hand_off(ctx: &NodeCtx, term: u64) {
    let other = crate::raft::most_caught_up_other_voter(&crate::raft::metrics(&ctx.raft));
    tracing::warn!(
        term,
        to = other,
        "the fire loop stopped while this node still leads; handing leadership on"
    );
    let r = match other {
        Some(to) => ctx.raft.trigger().transfer_leader(to).await,
        None => ctx.raft.trigger().elect(false).await,
    };
    if let Err(e) = r {
        tracing::warn!(term, error = %e, "could not hand leadership on");
    }
}
