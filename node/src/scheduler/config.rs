//! The scheduler's flags (shared by `run` and `local`) and the typed
//! configuration they are validated into.

use std::time::Duration;

use clap::Args;

use super::plan;
use crate::exec::ExecSettings;
use crate::exec::policy::{HttpPolicy, default_deny, loopback, parse_cidrs};

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
