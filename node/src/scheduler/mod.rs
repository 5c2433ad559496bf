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

mod leader;
pub use leader::fire_lease;
pub mod plan;
mod recorder;
#[cfg(test)]
mod sim_tests;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::exec::ExecSettings;
use crate::exec::policy::{HttpPolicy, default_deny, loopback, parse_cidrs};
use crate::node::NodeCtx;

/// Scheduler flags shared by `run` and `local`.
#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Allow `exec` actions (they run as the node's own user, in its container).
    #[arg(long, env = "RAFTCRON_ENABLE_EXEC")]
    pub enable_exec: bool,
    /// Addresses HTTP actions may not call, as comma-separated CIDRs.
    /// Default: link-local and cloud-metadata ranges.
    #[arg(long, env = "RAFTCRON_HTTP_DENY")]
    pub http_deny: Option<String>,
    /// Also refuse loopback targets (127.0.0.0/8, ::1); the Helm chart sets it.
    #[arg(long, env = "RAFTCRON_HTTP_DENY_LOOPBACK")]
    pub http_deny_loopback: bool,
    /// How far ahead of their instant fires are claimed.
    #[arg(long, env = "RAFTCRON_LOOKAHEAD", default_value = "1s", value_parser = humantime::parse_duration)]
    pub lookahead: Duration,
    /// A fire not started this long after its instant, when a leader first
    /// gets to it (claiming it late, or taking over a claim that a stopped
    /// cluster left), was missed during downtime and follows missedRunPolicy;
    /// a less late one runs late. It covers failovers (under 1 s measured)
    /// with a wide margin, and is far shorter than any outage worth the name.
    #[arg(long, env = "RAFTCRON_CATCH_UP_WINDOW", default_value = "5s", value_parser = humantime::parse_duration)]
    pub catch_up_window: Duration,
    /// Claim, start and finish every fire as usual but do not execute actions
    /// (each attempt succeeds at once). For checking schedules, and for
    /// measuring the scheduler itself (`raftcron-bench`).
    #[arg(long, env = "RAFTCRON_DRY_RUN")]
    pub dry_run: bool,
    /// Largest clock difference assumed between nodes; widens the window in
    /// which a new leader treats fires as possibly started by the old one.
    #[arg(long, env = "RAFTCRON_MAX_CLOCK_SKEW", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
}

impl SchedulerArgs {
    pub fn into_config(self) -> anyhow::Result<SchedulerConfig> {
        let SchedulerArgs {
            enable_exec,
            http_deny,
            http_deny_loopback,
            lookahead,
            catch_up_window,
            dry_run,
            max_clock_skew,
        } = self;
        let mut deny = match http_deny {
            Some(s) => parse_cidrs(&s).map_err(|e| anyhow::anyhow!("--http-deny: {e}"))?,
            None => default_deny(),
        };
        if http_deny_loopback {
            deny.extend(loopback());
        }
        if catch_up_window < Duration::from_secs(1) {
            // Shorter would treat an ordinary failover as downtime and let
            // Skip / RunOnce drop fires a failover merely delayed.
            anyhow::bail!("--catch-up-window must be at least 1s (a failover takes up to ~1 s)");
        }
        if lookahead < Duration::from_millis(100) {
            anyhow::bail!("--lookahead must be at least 100ms");
        }
        Ok(SchedulerConfig {
            exec: ExecSettings {
                exec_enabled: enable_exec,
                http_policy: HttpPolicy { deny },
                dry_run,
            },
            plan: plan::PlanSettings {
                lookahead_ms: lookahead.as_millis() as i64,
                catch_up_ms: catch_up_window.as_millis() as i64,
                max_instants: 10_000,
            },
            max_clock_skew_ms: max_clock_skew.as_millis() as i64,
        })
    }
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub exec: ExecSettings,
    pub plan: plan::PlanSettings,
    pub max_clock_skew_ms: i64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            exec: ExecSettings {
                exec_enabled: false,
                http_policy: HttpPolicy {
                    deny: default_deny(),
                },
                dry_run: false,
            },
            plan: plan::PlanSettings::default(),
            max_clock_skew_ms: 50,
        }
    }
}

/// Runs the fire loop for every term in which this node leads.
pub async fn run(ctx: Arc<NodeCtx>, mut stop: watch::Receiver<bool>) {
    use openraft::type_config::async_runtime::watch::WatchReceiver;
    let executors = Arc::new(crate::kube::executors(
        ctx.config.scheduler.exec.clone(),
        ctx.config.kube.as_ref(),
    ));
    let mut metrics = ctx.raft.metrics();
    loop {
        let m = metrics.borrow_and_update().clone();
        if m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader {
            let term = m.current_term;
            let cancel = tokio_util::sync::CancellationToken::new();
            let mut task = tokio::spawn(
                leader::LeaderTerm::new(ctx.clone(), term, executors.clone(), cancel.clone()).run(),
            );
            // When to hand leadership on; set once the fire loop has ended
            // while this node still leads.
            let mut handoff: Option<tokio::time::Instant> = None;
            // Until this term ends.
            loop {
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { cancel.cancel(); let _ = task.await; return },
                    _ = crate::node::stopped(&mut stop) => { cancel.cancel(); let _ = task.await; return },
                    _ = &mut task, if handoff.is_none() => {
                        handoff = Some(tokio::time::Instant::now());
                        continue;
                    }
                    _ = tokio::time::sleep_until(handoff.unwrap_or_else(tokio::time::Instant::now)), if handoff.is_some() => {
                        hand_off(&ctx, term).await;
                        handoff = Some(tokio::time::Instant::now() + ctx.config.timing.election_max * 2);
                        continue;
                    }
                }
                let m = metrics.borrow_and_update().clone();
                if m.current_term != term || m.current_leader != Some(m.id) {
                    break;
                }
            }
            tracing::info!(term, "leadership ended; stopping the fire loop");
            cancel.cancel();
            if handoff.is_none() {
                let _ = task.await;
            }
            continue;
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = crate::node::stopped(&mut stop) => return,
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
    let m = crate::raft::metrics(&ctx.raft);
    // The voter furthest along in replication takes over soonest.
    let matched = |id: &crate::raft::types::NodeId| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
    };
    let other = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != m.id)
        .max_by_key(|id| matched(id));
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
