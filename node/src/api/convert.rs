//! Conversions between the state machine's types and the scheduler API's
//! protobuf messages.

use raftcron_crds::ScheduledJobSpec;
use raftcron_crds::schedule::Schedule;
use tonic::Status;

use crate::pb::scheduler as pb;
use crate::raft::types::{Member, NodeId, RaftMetrics};
use crate::sm::runs::{Phase, RunKind, RunRecord};
use crate::sm::{Counters, Millis, ScheduleRecord, UpsertOutcome, UpsertSchedule};

/// Parses and validates an upsert; the error names the field. Returns the
/// parsed schedule too, so the reply's next fire needs no second parse.
pub fn upsert_from_pb(req: &pb::UpsertRequest) -> Result<(UpsertSchedule, Schedule), Status> {
    raftcron_crds::validate::validate_name(&req.namespace, &req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.uid.is_empty() {
        return Err(Status::invalid_argument("uid: must not be empty"));
    }
    let spec: ScheduledJobSpec = serde_json::from_str(&req.spec_json)
        .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
    let valid = raftcron_crds::validate::validate_spec(&spec)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let item = UpsertSchedule {
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        uid: req.uid.clone(),
        generation: req.generation,
        spec,
        kubernetes: req.kubernetes,
        app_job: None,
    };
    Ok((item, valid.schedule))
}

pub fn outcome_to_pb(o: UpsertOutcome) -> pb::UpsertOutcome {
    match o {
        UpsertOutcome::Created => pb::UpsertOutcome::Created,
        UpsertOutcome::Updated => pb::UpsertOutcome::Updated,
        UpsertOutcome::Unchanged => pb::UpsertOutcome::Unchanged,
        UpsertOutcome::Stale => pb::UpsertOutcome::Stale,
    }
}

/// Where a ScheduledJob handed to the scheduler comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The API server (the operator): its uid and generation; the leader
    /// writes its status back.
    Kubernetes,
    /// A file (`raftcronctl apply`, `local`): a uid derived from
    /// namespace/name when the document has none, so re-applying updates it.
    File,
}

/// The upsert request for a ScheduledJob, the one way operator,
/// raftcronctl and local mode build it.
pub fn upsert_request(job: &raftcron_crds::ScheduledJob, origin: Origin) -> pb::UpsertRequest {
    let namespace =
        raftcron_crds::names::namespace_or_default(job.metadata.namespace.as_deref()).to_string();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = match (job.metadata.uid.clone(), origin) {
        (Some(uid), _) => uid,
        (None, Origin::Kubernetes) => String::new(),
        (None, Origin::File) => derived_uid(&namespace, &name),
    };
    pb::UpsertRequest {
        uid,
        generation: job.metadata.generation.unwrap_or(0),
        spec_json: serde_json::to_string(&job.spec).expect("spec serializes"),
        namespace,
        name,
        kubernetes: origin == Origin::Kubernetes,
    }
}

/// The uid a ScheduledJob from a file gets when it has none: stable per
/// namespace/name, so re-applying updates rather than re-creates.
pub fn derived_uid(namespace: &str, name: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6c0f_6d2a_5b1e_4f58_9a3c_2d7e_8b41_c905);
    uuid::Uuid::new_v5(&NS, format!("{namespace}/{name}").as_bytes()).to_string()
}

/// The next fire of `s` after `now` (and after what it already claimed),
/// or None for a suspended schedule or one that is done: it never fires
/// again, its repeats are used up, or its ttl comes first.
pub fn next_fire(s: &ScheduleRecord, now: Millis) -> Option<Millis> {
    if s.spec.suspend {
        return None;
    }
    let p = parsed(&s.spec)?;
    crate::scheduler::plan::next_instant(s, &p, now.max(s.claimed_through))
}

/// Parsed schedules memoized per thread: listing 100,000 schedules would
/// otherwise parse 100,000 expressions, most of them alike.
pub fn parsed(spec: &ScheduledJobSpec) -> Option<std::sync::Arc<Schedule>> {
    use crate::scheduler::parsed::ParsedSchedules;
    thread_local!(static MEMO: std::cell::RefCell<ParsedSchedules> =
        std::cell::RefCell::new(ParsedSchedules::new(1024)));
    MEMO.with(|m| {
        m.borrow_mut()
            .get(&spec.schedule, spec.time_zone.as_deref(), spec.due_ms())
    })
}

fn counters_to_pb(c: &Counters) -> pb::RunCounters {
    pb::RunCounters {
        succeeded: c.succeeded,
        failed: c.failed,
        missed: c.missed,
        lost: c.lost,
        skipped: c.skipped,
        timed_out: c.timed_out,
        retries: c.retries,
    }
}

pub fn schedule_to_pb(s: &ScheduleRecord, now: Millis) -> pb::ScheduleInfo {
    pb::ScheduleInfo {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        uid: s.uid.clone(),
        generation: s.generation,
        schedule: s.spec.schedule.clone(),
        time_zone: s.spec.time_zone.clone().unwrap_or_else(|| "UTC".into()),
        suspend: s.spec.suspend,
        next_fire_ms: next_fire(s, now),
        last_schedule_ms: s.last_schedule,
        last_success_ms: s.last_success,
        spec_json: serde_json::to_string(&s.spec).expect("spec serializes"),
        counters: Some(counters_to_pb(&s.counters)),
        active_runs: s.active.iter().filter(|r| r.phase.is_active()).count() as u32,
    }
}

pub fn run_to_pb(r: &RunRecord) -> pb::Run {
    pb::Run {
        run_id: r.run_id.clone(),
        scheduled_ms: r.instant,
        start_ms: r.start,
        end_ms: r.end,
        node: if r.node == 0 {
            String::new()
        } else {
            r.node.to_string()
        },
        attempt: r.attempt,
        result: r.phase.as_str().to_string(),
        message: r.message.clone().unwrap_or_default(),
        lateness_ms: r.lateness_ms(),
        kind: match r.kind {
            RunKind::Scheduled => "Scheduled".into(),
            RunKind::Manual => "Manual".into(),
        },
        term: r.term,
        pod: r.pod.clone().unwrap_or_default(),
    }
}

/// All runs of a schedule, newest instant first.
pub fn runs_to_pb(s: &ScheduleRecord) -> Vec<pb::Run> {
    let mut runs: Vec<&RunRecord> = s.active.iter().chain(s.history.iter()).collect();
    runs.sort_by(|a, b| b.instant.cmp(&a.instant).then(b.run_id.cmp(&a.run_id)));
    runs.into_iter()
        .filter(|r| r.phase != Phase::Claimed || r.kind == RunKind::Manual)
        .map(run_to_pb)
        .collect()
}

pub fn members_to_pb(m: &RaftMetrics) -> Vec<pb::Member> {
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node): (&NodeId, &Member)| pb::Member {
            id: *id,
            addr: node.addr.clone(),
            uid: node.uid.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

pub fn status_to_pb(
    m: &RaftMetrics,
    uid: &str,
    cluster_id: Option<String>,
    schedules: usize,
) -> pb::StatusReply {
    let members = members_to_pb(m);
    let is_voter = members.iter().any(|x| x.id == m.id && x.voter);
    let state = match m.state {
        openraft::ServerState::Leader => "Leader",
        openraft::ServerState::Candidate => "Candidate",
        openraft::ServerState::Follower if is_voter => "Follower",
        openraft::ServerState::Follower | openraft::ServerState::Learner => "Learner",
        openraft::ServerState::Shutdown => "Shutdown",
    };
    pb::StatusReply {
        id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        members,
        commit_index: m.local_committed.as_ref().map(|l| l.index),
        applied_index: m.last_applied.as_ref().map(|l| l.index),
        uid: uid.to_string(),
        cluster_id: cluster_id.unwrap_or_default(),
        state: state.to_string(),
        schedules: schedules as u64,
        last_log_index: m.last_log_index,
        snapshot_index: m.snapshot.as_ref().map(|l| l.index),
        #[allow(deprecated)]
        millis_since_quorum_ack: m.millis_since_quorum_ack,
    }
}
