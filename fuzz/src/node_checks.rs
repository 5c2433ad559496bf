//! The checks behind the `grpc_scheduler`, `grpc_raft` and `snapshot` fuzz
//! targets, on raftcron-node's public API.
//!
//! Shared, as source, by the fuzz targets (through the `raftcron_fuzz` lib)
//! and by `node/tests/fuzz_regressions.rs` (through `#[path]`), so a
//! committed crash input is replayed by `cargo test` with exactly the code
//! the fuzzer ran. A check returns quietly on input it refuses and panics on
//! a broken property: that panic is the bug report.

use prost::Message;
use raftcron_crds::schedule::Schedule;
use raftcron_crds::validate::validate_spec;
use raftcron_node::api::convert::{next_fire, runs_to_pb, schedule_to_pb, upsert_from_pb};
use raftcron_node::pb::raft as rpb;
use raftcron_node::pb::scheduler as spb;
use raftcron_node::raft::types::{
    AppendEntriesRequest, AppendEntriesResponse, EntryPayload, RaftError, SnapshotMeta,
    SnapshotResponse, StreamAppendResult, TransferLeaderRequest, TransferLeaderResponse, Vote,
    VoteRequest, VoteResponse,
};
use raftcron_node::raft::wire;
use raftcron_node::scheduler::plan::{self, PlanSettings, StartDecision};
use raftcron_node::sm::{Command, Key, Millis, Response, RunEvent, State, UpsertOutcome};
use raftcron_node::store::{SmData, StateMachineStore};

/// 2026-01-01T00:00:00Z: the clock of every check.
pub const NOW: Millis = 1_767_225_600_000;

/// Decodes `bytes` as protobuf message `M`; on success checks that encoding
/// it again decodes to the same message.
fn prost_round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let msg = M::decode(bytes).ok()?;
    let again = M::decode(msg.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(again, msg, "protobuf round trip changed the message");
    Some(msg)
}

/// `grpc_scheduler` target. The first byte picks the request message of
/// `proto/scheduler.proto`, the rest is its protobuf encoding.
///
/// Upserts (single and batch) go through the node's own conversion,
/// `api::convert::upsert_from_pb`; what it accepts must then survive the
/// rest of the write path: the Raft log codec (`raft::wire`), the state
/// machine (`State::apply`, twice: created, then unchanged), a snapshot
/// (`StateMachineStore::decode` of the encoded state), and the read path
/// (`schedule_to_pb`, whose `spec_json` must parse back to the same spec).
///
/// The other requests are decoded and round-tripped; their handlers need a
/// running node (`api::key_of`, the ScheduleRef check, is private).
pub fn grpc_scheduler(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Some(req) = prost_round_trip::<spb::UpsertRequest>(bytes) {
                check_upserts(&[req]);
            }
        }
        1 => {
            if let Some(batch) = prost_round_trip::<spb::UpsertBatchRequest>(bytes) {
                check_upserts(&batch.items);
            }
        }
        2 => {
            prost_round_trip::<spb::DeleteRequest>(bytes);
        }
        3 => {
            prost_round_trip::<spb::SetSuspendRequest>(bytes);
        }
        4 => {
            prost_round_trip::<spb::TriggerRequest>(bytes);
            prost_round_trip::<spb::RunsRequest>(bytes);
        }
        5 => {
            prost_round_trip::<spb::ListRequest>(bytes);
            prost_round_trip::<spb::StatusRequest>(bytes);
        }
        6 => {
            prost_round_trip::<spb::AddMemberRequest>(bytes);
            prost_round_trip::<spb::RemoveMemberRequest>(bytes);
            prost_round_trip::<spb::TransferLeaderRequest>(bytes);
        }
        _ => {
            // What a client decodes from a node.
            prost_round_trip::<spb::ListReply>(bytes);
            prost_round_trip::<spb::RunsReply>(bytes);
            prost_round_trip::<spb::StatusReply>(bytes);
        }
    }
}

/// The write path of an upsert (or a batch), as the API handler runs it.
pub fn check_upserts(requests: &[spb::UpsertRequest]) {
    let mut items = Vec::new();
    for req in requests {
        match upsert_from_pb(req) {
            Ok((item, schedule)) => {
                let valid = validate_spec(&item.spec).unwrap_or_else(|e| {
                    panic!("upsert_from_pb accepted a spec validate_spec refuses: {e}")
                });
                assert_eq!(valid.schedule, schedule);
                let expected = if item.spec.suspend {
                    None
                } else {
                    schedule.next_after(NOW)
                };
                // The record an upsert at NOW makes, read as List reads it.
                let mut one = State::default();
                one.apply(&Command::Upsert {
                    items: vec![item.clone()],
                    now: NOW,
                });
                let record = one.get_by_uid(&item.uid).expect("upserted");
                assert_eq!(next_fire(record, NOW), expected, "next_fire");
                items.push(item);
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(!status.message().is_empty());
            }
        }
    }
    if items.is_empty() {
        return;
    }

    // The Raft log: the proposer encodes the command, every member decodes it.
    let cmd = Command::Upsert {
        items: items.clone(),
        now: NOW,
    };
    let bytes = wire::encode(&cmd).expect("an accepted upsert encodes for the log");
    let logged: Command = wire::decode(&bytes).unwrap_or_else(|e| {
        panic!("the Raft log cannot decode an upsert the API accepted: {e}: {cmd:?}")
    });
    assert_eq!(logged, cmd, "the Raft log codec changed an accepted upsert");
    let _ = cmd.to_string();

    // The state machine: the same batch twice.
    let mut state = State::default();
    let Response::Upsert(first) = state.apply(&logged) else {
        panic!("an upsert answered with another response");
    };
    assert_eq!(first.len(), items.len());
    let Response::Upsert(second) = state.apply(&logged) else {
        panic!("an upsert answered with another response");
    };
    // A batch naming one object twice leaves the last item stored; a second
    // application changes nothing for any item whose key is not repeated.
    for (item, outcome) in items.iter().zip(&second) {
        let repeated = items
            .iter()
            .filter(|i| i.namespace == item.namespace && i.name == item.name)
            .count()
            > 1;
        if !repeated {
            assert_eq!(*outcome, UpsertOutcome::Unchanged, "re-applying {item:?}");
        }
    }

    // The read path and a snapshot of the state.
    for item in &items {
        let record = state
            .get(&Key::new(&item.namespace, &item.name))
            .expect("an applied upsert is stored");
        assert!(state.get_by_uid(&record.uid).is_some(), "uid index");
        let info = schedule_to_pb(record, NOW);
        let spec: raftcron_crds::ScheduledJobSpec = serde_json::from_str(&info.spec_json)
            .unwrap_or_else(|e| panic!("List returns a spec_json that does not parse: {e}"));
        assert_eq!(&spec, &*record.spec, "List changed the spec");
        let _ = runs_to_pb(record);
    }
    let data = SmData {
        state,
        ..SmData::default()
    };
    check_snapshot_round_trip(&data);
}

/// `grpc_raft` target. The first byte picks what the rest is:
///
/// - 0: an `Envelope` (Vote, PreVote, AppendEntries, StreamAppend,
///   TransferLeader), its payload decoded as each openraft request;
/// - 1: a `SnapshotChunk` (InstallSnapshot): the envelope's payload as
///   `(Vote, SnapshotMeta)`, the data through the snapshot decoder;
/// - 2: a `Reply`, its payload decoded as each response the sender reads;
/// - 3: a bare MessagePack payload, decoded as in 0 and 2 (the fuzzer's
///   short cut past the protobuf layer).
///
/// Whatever decodes must encode and decode back to the same bytes; the
/// commands of decoded entries are applied to a state machine in order.
pub fn grpc_raft(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            if let Some(env) = prost_round_trip::<rpb::Envelope>(bytes) {
                raft_requests(&env.payload);
            }
        }
        1 => {
            if let Some(chunk) = prost_round_trip::<rpb::SnapshotChunk>(bytes) {
                if let Some(env) = &chunk.envelope {
                    wire_round_trip::<(Vote, SnapshotMeta)>(&env.payload);
                }
                snapshot(&chunk.data);
            }
        }
        2 => {
            if let Some(reply) = prost_round_trip::<rpb::Reply>(bytes) {
                raft_replies(&reply.payload);
            }
        }
        _ => {
            raft_requests(bytes);
            raft_replies(bytes);
        }
    }
}

/// Decodes `bytes` with the Raft codec; on success checks that the value
/// encodes to bytes that decode and encode to the same bytes again.
fn wire_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = wire::decode(bytes).ok()?;
    let encoded = wire::encode(&value).expect("a decoded Raft message encodes");
    let again: T = wire::decode(&encoded).unwrap_or_else(|e| {
        panic!(
            "a re-encoded {} does not decode: {e}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        wire::encode(&again).expect("encodes"),
        encoded,
        "{} changes on a codec round trip",
        std::any::type_name::<T>()
    );
    Some(value)
}

fn raft_requests(payload: &[u8]) {
    wire_round_trip::<VoteRequest>(payload);
    wire_round_trip::<TransferLeaderRequest>(payload);
    wire_round_trip::<(Vote, SnapshotMeta)>(payload);
    if let Some(req) = wire_round_trip::<AppendEntriesRequest>(payload) {
        let mut state = State::default();
        for entry in &req.entries {
            if let EntryPayload::Normal(cmd) = &entry.payload {
                let _ = cmd.to_string();
                let _ = state.apply(cmd);
                let _ = state.drain_changes();
            }
        }
        check_state_readers(&state);
    }
}

fn raft_replies(payload: &[u8]) {
    wire_round_trip::<Result<VoteResponse, RaftError>>(payload);
    wire_round_trip::<Result<AppendEntriesResponse, RaftError>>(payload);
    wire_round_trip::<Result<TransferLeaderResponse, RaftError>>(payload);
    wire_round_trip::<Result<SnapshotResponse, RaftError>>(payload);
    wire_round_trip::<Result<StreamAppendResult, String>>(payload);
}

/// `snapshot` target: arbitrary bytes to `StateMachineStore::decode`, the
/// check InstallSnapshot runs before handing a snapshot to openraft.
///
/// What decodes must round-trip (encode as the store does, decode, encode to
/// the same bytes), serve the read API, and survive what a new leader does
/// with it: `plan::takeover` for the runs left over, `plan::claims` for the
/// next fires, `plan::at_start` for pending starts, each applied to the state.
pub fn snapshot(data: &[u8]) {
    let Ok(decoded) = StateMachineStore::decode(data) else {
        return;
    };
    check_snapshot_round_trip(&decoded);
    let mut state = decoded.state;
    check_state_readers(&state);

    // A new leader in the next term takes over.
    let term = decoded
        .last_applied
        .map(|id| id.leader_id.term)
        .unwrap_or(0)
        .saturating_add(1);
    let node = 1;
    let settings = PlanSettings::default();
    let records: Vec<_> = state.schedules().cloned().collect();
    let next_unclaimed: Vec<Option<i64>> = records
        .iter()
        .map(|s| {
            Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref())
                .ok()
                .and_then(|p| p.next_after(s.claimed_through))
        })
        .collect();
    let outage = records
        .iter()
        .zip(&next_unclaimed)
        .map(|(s, next)| plan::outage_evidence(s, *next, NOW))
        .max()
        .unwrap_or(0);
    let downtime_until = (outage > settings.catch_up_ms).then_some(NOW);
    let takeover = plan::Takeover {
        term,
        at: NOW,
        max_skew: 2_000,
        downtime_until,
    };
    let events: Vec<RunEvent> = records
        .iter()
        .zip(&next_unclaimed)
        .flat_map(|(s, next)| plan::takeover(s, *next, &takeover))
        .collect();
    if !events.is_empty() {
        let _ = state.apply(&Command::Record { term, node, events });
    }
    let records: Vec<_> = state.schedules().cloned().collect();
    let mut fires = Vec::new();
    for s in &records {
        if let Ok(schedule) = Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()) {
            let _ = plan::next_claimable(s, &schedule);
            fires.extend(plan::claims(s, &schedule, NOW, &settings, downtime_until));
        }
    }
    if !fires.is_empty() {
        let _ = state.apply(&Command::Claim {
            term,
            node,
            now: NOW,
            fires,
        });
    }
    let records: Vec<_> = state.schedules().cloned().collect();
    let mut events = Vec::new();
    for s in &records {
        for run in &s.active {
            if plan::pending_start(run).is_some()
                && let StartDecision::Events(more, _) = plan::at_start(s, run, NOW)
            {
                events.extend(more);
            }
        }
    }
    if !events.is_empty() {
        let _ = state.apply(&Command::Record { term, node, events });
    }
    check_state_readers(&state);
}

/// Encodes `data` as the store encodes a snapshot, decodes it with the
/// store's decoder and checks nothing changed.
pub fn check_snapshot_round_trip(data: &SmData) {
    let encoded = rmp_serde::to_vec_named(data).expect("a state encodes");
    let back = StateMachineStore::decode(&encoded)
        .unwrap_or_else(|e| panic!("a snapshot the store wrote does not decode: {e}"));
    let again = rmp_serde::to_vec_named(&back).expect("a state encodes");
    assert_eq!(again, encoded, "snapshot round trip changed the bytes");
    assert_eq!(back.last_applied, data.last_applied);
    assert_eq!(back.state.len(), data.state.len());
}

/// The read API over a state: List, Runs, next fires, the uid index.
pub fn check_state_readers(state: &State) {
    for s in state.schedules() {
        let _ = schedule_to_pb(s, NOW);
        let _ = runs_to_pb(s);
        let _ = next_fire(s, NOW);
        let _ = s.has_active_attempt();
        let _ = state.get_by_uid(&s.uid);
    }
}
