//! What the Raft log carries: commands proposed by the API and the fire loop,
//! and the responses the state machine returns for them.
//!
//! Every time in a command was read by the proposer (the leader) before it
//! proposed it; the state machine never reads a clock.

use raftcron_crds::ScheduledJobSpec;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A replicated command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Command {
    /// Create or update schedules (one entry for a batch of `apply -f`).
    Upsert {
        items: Vec<UpsertSchedule>,
        now: Millis,
    },
    /// Remove a schedule and its runs. With `uid`, only that incarnation.
    Delete {
        namespace: String,
        name: String,
        uid: Option<String>,
    },
    /// Suspend or resume a schedule.
    SetSuspend {
        namespace: String,
        name: String,
        suspend: bool,
        now: Millis,
    },
    /// The leader claims fires: one entry per look-ahead window.
    Claim {
        term: u64,
        node: u64,
        now: Millis,
        fires: Vec<FireClaim>,
    },
    /// A manual trigger: claims an extra fire at `now`.
    Trigger {
        namespace: String,
        name: String,
        term: u64,
        node: u64,
        now: Millis,
    },
    /// Run transitions, batched by the leader's recorder.
    Record {
        term: u64,
        node: u64,
        events: Vec<RunEvent>,
    },
    /// Set once, right after bootstrap, so every member knows its cluster.
    SetClusterId { cluster_id: String },
    /// A lease of app code acquired, renewed, released or expired (`sm::leases`).
    Lease(super::leases::LeaseCommand),
    /// A job of app code that is complete (its repeats used up, its one
    /// fire done, its ttl passed) leaves the schedules; why is remembered
    /// for a while, so asking for it says so.
    EndJob {
        namespace: String,
        name: String,
        uid: String,
        reason: String,
        at: Millis,
    },
}

impl Command {
    /// Roughly the bytes this command holds in memory: raft-log's budget for
    /// the payloads it caches. A flat 512 per entry let a 1,000-schedule
    /// upsert (~600 KB) count as 512 bytes, and the cache meant to hold 32
    /// MiB held 60 MB of 100,000 schedules' upserts. Inline sizes plus a
    /// guess at the strings each item owns; exact sizes would need an encode
    /// on the append path.
    pub fn approx_bytes(&self) -> u64 {
        use std::mem::size_of;
        let n = match self {
            Command::Upsert { items, .. } => items.len() * (size_of::<UpsertSchedule>() + 256),
            Command::Claim { fires, .. } => fires.len() * (size_of::<FireClaim>() + 64),
            Command::Record { events, .. } => events.len() * (size_of::<RunEvent>() + 96),
            _ => 128,
        };
        (size_of::<Command>() + n) as u64
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Upsert { items, .. } => write!(f, "Upsert({})", items.len()),
            Command::Delete {
                namespace, name, ..
            } => write!(f, "Delete({namespace}/{name})"),
            Command::SetSuspend {
                namespace,
                name,
                suspend,
                ..
            } => {
                write!(f, "SetSuspend({namespace}/{name}, {suspend})")
            }
            Command::Claim { fires, term, .. } => {
                write!(f, "Claim({} fires, term {term})", fires.len())
            }
            Command::Trigger {
                namespace, name, ..
            } => write!(f, "Trigger({namespace}/{name})"),
            Command::Record { events, term, .. } => {
                write!(f, "Record({} events, term {term})", events.len())
            }
            Command::SetClusterId { cluster_id } => write!(f, "SetClusterId({cluster_id})"),
            Command::Lease(c) => write!(f, "Lease({c})"),
            Command::EndJob {
                namespace, name, ..
            } => write!(f, "EndJob({namespace}/{name})"),
        }
    }
}

/// One schedule to create or update.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UpsertSchedule {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    pub spec: ScheduledJobSpec,
    /// Mirrors a Kubernetes ScheduledJob whose status the leader writes.
    #[serde(default)]
    pub kubernetes: bool,
    /// Set for a job created by app code through its sidecar: it is removed
    /// once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_job: Option<AppJob>,
}

/// What a job of app code carries beyond its spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct AppJob {
    /// `ttl`: no instant after this is fired, and the job ends then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Millis>,
}

/// How a fire is disposed of when it is claimed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Start it at its instant.
    Run,
    /// The instant passed while no leader could fire it, and policy says not
    /// to run it. `count` instants up to and including this one are covered.
    Missed { count: u64 },
}

/// A claim of one scheduled instant (or, for `Missed`, a range ending at it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FireClaim {
    pub uid: String,
    pub instant: Millis,
    pub disposition: Disposition,
}

/// Identifies one run: the schedule incarnation and the run id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunRef {
    pub uid: String,
    pub run_id: String,
}

/// How an attempt ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
    /// Its executor lost track of it before a result (an app replica that
    /// detached mid-attempt): it may or may not have run to the end.
    Lost,
}

/// Why a run was not (or no longer) executed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `concurrencyPolicy: Forbid` and a run was active.
    ConcurrencyForbid,
    /// The schedule was suspended when the fire came due.
    Suspended,
}

/// Why a fire was recorded `Missed` instead of started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub enum MissReason {
    /// Not started within `startingDeadlineSeconds`.
    #[default]
    Deadline,
    /// Claimed before the whole cluster stopped, due while it was down, and
    /// `missedRunPolicy` says not to run it.
    Downtime,
    /// An `app` action whose app had no replica attached (or none with room)
    /// until the starting deadline.
    NoReplica { app: String },
}

/// One transition of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum RunEvent {
    /// An attempt started on `node` at `at`.
    Started {
        run: RunRef,
        attempt: u32,
        at: Millis,
        /// `app` actions: the replica (pod) the attempt was dispatched to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
    },
    /// An attempt finished.
    Finished {
        run: RunRef,
        attempt: u32,
        outcome: AttemptOutcome,
        at: Millis,
        message: Option<String>,
    },
    /// The attempt's outcome will never be known: its leader lost leadership.
    /// `started` says whether its start was recorded; an attempt that may
    /// never have run does not count against `maxAttempts`.
    Lost {
        run: RunRef,
        attempt: u32,
        at: Millis,
        started: bool,
    },
    /// The fire was not started: past `startingDeadlineSeconds`, or missed
    /// while the cluster was down and `missedRunPolicy` says not to run it.
    Missed {
        run: RunRef,
        at: Millis,
        /// Entries written before the reason existed were deadline misses.
        #[serde(default)]
        reason: MissReason,
    },
    /// The fire was skipped.
    Skipped {
        run: RunRef,
        at: Millis,
        reason: SkipReason,
    },
    /// `concurrencyPolicy: Replace` stopped this run for a newer one.
    Replaced { run: RunRef, at: Millis },
}

impl RunEvent {
    pub fn run(&self) -> &RunRef {
        match self {
            RunEvent::Started { run, .. }
            | RunEvent::Finished { run, .. }
            | RunEvent::Lost { run, .. }
            | RunEvent::Missed { run, .. }
            | RunEvent::Skipped { run, .. }
            | RunEvent::Replaced { run, .. } => run,
        }
    }
}

/// The state machine's answer to a command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    Upsert(Vec<UpsertOutcome>),
    Delete {
        existed: bool,
    },
    SetSuspend {
        changed: bool,
        found: bool,
    },
    /// Per fire, in order: whether it was claimed.
    Claim(Vec<ClaimOutcome>),
    Trigger(Result<(String, Millis), String>),
    /// Per event, in order: whether it changed the run.
    Record(Vec<bool>),
    SetClusterId {
        cluster_id: String,
    },
    Lease(super::leases::LeaseResponse),
    EndJob {
        existed: bool,
    },
}

/// Result of one upsert.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
    Stale,
}

/// Result of one fire claim.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    /// This instant (or a later one) was already claimed: a retried write
    /// or a second leader. The fire is not claimed twice.
    Duplicate,
    /// No schedule with this uid.
    UnknownSchedule,
}
