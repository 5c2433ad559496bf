//! Writes the seed corpora under `fuzz/seeds/<target>/` (not a fuzz target).
//!
//! ```text
//! cargo +nightly fuzz build -O make_seeds    # or any target build: it builds every bin
//! ../target/fuzz/x86_64-unknown-linux-gnu/release/make_seeds   # from fuzz/
//! ```
//!
//! Sources: the ScheduledJobs of `deploy/examples/*.yaml`, a few hand-written
//! schedules, and Raft messages and snapshots built from them with the node's
//! own types and codecs, so every seed is something a real node sends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;
use raftcron_crds::ScheduledJob;
use raftcron_crds::yaml::parse_documents;
use raftcron_node::pb::raft as rpb;
use raftcron_node::pb::scheduler as spb;
use raftcron_node::raft::types::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, EntryPayload, LeaderId, LogId, Member,
    Membership, RaftError, SnapshotMeta, SnapshotResponse, StoredMembership, TransferLeaderRequest,
    Vote, VoteRequest, VoteResponse,
};
use raftcron_node::raft::wire;
use raftcron_node::scheduler::plan::{self, PlanSettings};
use raftcron_node::sm::{
    AttemptOutcome, Command, RunEvent, RunRef, SkipReason, State, UpsertSchedule,
};
use raftcron_node::store::SmData;

const NOW: i64 = 1_767_225_600_000;

/// Hand-written schedules: expression, zone, search start.
const SCHEDULES: &[(&str, &str, Option<i64>)] = &[
    ("*/10 * * * * *", "", None),
    ("0 30 2 * * *", "Europe/Berlin", Some(1_774_738_800_000)), // 2026-03-28 23:00 UTC, before spring forward
    ("0 */15 * * * *", "Europe/Berlin", Some(1_792_112_400_000)), // 2026-10-25 01:00 UTC, fall back
    ("30 2 * * *", "America/New_York", None),
    ("0 9 * * 1-5", "Australia/Lord_Howe", None),
    ("@every 1h30m", "", None),
    ("@every 30s", "UTC", Some(-1)),
    ("@daily", "America/Santiago", None),
    ("@yearly", "", None),
    ("0 0 L * *", "", None),
    ("0 0 1W * *", "Asia/Kolkata", None),
    ("0 0 * * 5#3", "", None),
    ("0 0 13 * +5", "", None),
    ("0 0 12 1,15 JAN-MAR MON", "Pacific/Chatham", None),
    ("0 0 29 2 *", "", Some(0)),
    ("0 0 30 2 *", "", None),
    (
        "*/7 3-5/2 * * SUN-SAT",
        "Etc/GMT+12",
        Some(253_402_300_799_000),
    ), // 9999-12-31
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn upsert_request(job: &ScheduledJob) -> spb::UpsertRequest {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    spb::UpsertRequest {
        uid: format!("uid-{ns}-{name}"),
        namespace: ns,
        name,
        generation: 1,
        spec_json: serde_json::to_string(&job.spec).expect("spec serializes"),
        kubernetes: false,
    }
}

fn upsert_item(job: &ScheduledJob) -> UpsertSchedule {
    let req = upsert_request(job);
    UpsertSchedule {
        namespace: req.namespace,
        name: req.name,
        uid: req.uid,
        generation: 1,
        spec: job.spec.clone(),
        kubernetes: false,
        app_job: None,
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId {
        leader_id: LeaderId { term, node_id: 1 },
        index,
    }
}

fn membership() -> Membership {
    let members: BTreeMap<u64, Member> = (1..=3)
        .map(|id| {
            (
                id,
                Member {
                    addr: format!("127.0.0.1:{}", 7000 + id),
                    uid: format!("node-uid-{id}"),
                },
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], members).expect("membership")
}

/// A state as a live cluster has it: the examples upserted, fires claimed,
/// runs started, finished, failed and lost, one schedule suspended.
fn commands(jobs: &[ScheduledJob]) -> Vec<Command> {
    let mut state = State::default();
    let mut out = vec![Command::SetClusterId {
        cluster_id: "cluster-seed".into(),
    }];
    out.push(Command::Upsert {
        items: jobs.iter().map(upsert_item).collect(),
        now: NOW,
    });
    for cmd in &out {
        state.apply(cmd);
    }
    let settings = PlanSettings::default();
    let mut now = NOW;
    for step in 0..4u32 {
        now += 61_000;
        let mut fires = Vec::new();
        for s in state.schedules() {
            let schedule = raftcron_crds::schedule::Schedule::parse(
                &s.spec.schedule,
                s.spec.time_zone.as_deref(),
            )
            .expect("example schedules parse");
            fires.extend(plan::claims(s, &schedule, now, &settings));
        }
        let claim = Command::Claim {
            term: 2,
            node: 1,
            now,
            fires,
        };
        state.apply(&claim);
        out.push(claim);
        let mut events = Vec::new();
        for s in state.schedules() {
            for (i, run) in s.active.iter().enumerate() {
                let r = RunRef {
                    uid: s.uid.clone(),
                    run_id: run.run_id.clone(),
                };
                match (i + step as usize) % 4 {
                    0 => {
                        events.push(RunEvent::Started {
                            run: r.clone(),
                            attempt: run.attempt + 1,
                            at: now,
                            pod: None,
                        });
                        events.push(RunEvent::Finished {
                            run: r,
                            attempt: run.attempt + 1,
                            outcome: if i % 2 == 0 {
                                AttemptOutcome::Succeeded
                            } else {
                                AttemptOutcome::Failed
                            },
                            at: now + 20,
                            message: Some("HTTP 200".into()),
                        });
                    }
                    1 => events.push(RunEvent::Started {
                        run: r,
                        attempt: run.attempt + 1,
                        at: now,
                        pod: None,
                    }),
                    2 => events.push(RunEvent::Skipped {
                        run: r,
                        at: now,
                        reason: SkipReason::ConcurrencyForbid,
                    }),
                    _ => {}
                }
            }
        }
        let record = Command::Record {
            term: 2,
            node: 1,
            events,
        };
        state.apply(&record);
        out.push(record);
    }
    if let Some(first) = jobs.first() {
        out.push(Command::SetSuspend {
            namespace: first.metadata.namespace.clone().unwrap_or_default(),
            name: first.metadata.name.clone().unwrap_or_default(),
            suspend: true,
            now: now + 1,
        });
        out.push(Command::Trigger {
            namespace: first.metadata.namespace.clone().unwrap_or_default(),
            name: first.metadata.name.clone().unwrap_or_default(),
            term: 2,
            node: 1,
            now: now + 2,
        });
    }
    out
}

fn snapshot_bytes(cmds: &[Command], applied: usize) -> (Vec<u8>, SnapshotMeta) {
    let mut state = State::default();
    for cmd in &cmds[..applied] {
        state.apply(cmd);
    }
    let last = log_id(2, applied as u64 + 1);
    let data = SmData {
        last_applied: Some(last),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
        state,
    };
    let meta = SnapshotMeta {
        last_log_id: data.last_applied,
        last_membership: data.last_membership.clone(),
    };
    (
        rmp_serde::to_vec_named(&data).expect("snapshot encodes"),
        meta,
    )
}

fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(bytes);
    out
}

fn main() {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = fuzz_dir.join("seeds");
    let examples_dir = fuzz_dir.join("../deploy/examples");

    let mut examples: Vec<PathBuf> = std::fs::read_dir(&examples_dir)
        .expect("deploy/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    let mut jobs = Vec::new();
    for path in &examples {
        let text = std::fs::read_to_string(path).expect("read example");
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        write(
            &seeds.join("scheduled_job"),
            &format!("{name}.yaml"),
            text.as_bytes(),
        );
        let parsed = parse_documents(&text, &name).expect("examples load");
        for (i, job) in parsed.iter().enumerate() {
            let dir = seeds.join("scheduled_job");
            write(
                &dir,
                &format!("{name}-{i}.job.json"),
                serde_json::to_string(job).unwrap().as_bytes(),
            );
            write(
                &dir,
                &format!("{name}-{i}.spec.json"),
                serde_json::to_string(&job.spec).unwrap().as_bytes(),
            );
            let zone = job.spec.time_zone.clone().unwrap_or_default();
            write(
                &seeds.join("cron"),
                &format!("{name}-{i}.txt"),
                format!("{}\n{zone}", job.spec.schedule).as_bytes(),
            );
        }
        jobs.extend(parsed);
    }
    for (i, (expr, zone, start)) in SCHEDULES.iter().enumerate() {
        let text = match start {
            Some(ms) => format!("{expr}\n{zone}\n{ms}"),
            None => format!("{expr}\n{zone}"),
        };
        write(
            &seeds.join("cron"),
            &format!("hand-{i:02}.txt"),
            text.as_bytes(),
        );
    }

    // grpc_scheduler: the upserts raftcronctl would send, and the small requests.
    let dir = seeds.join("grpc_scheduler");
    for (i, job) in jobs.iter().enumerate() {
        write(
            &dir,
            &format!("upsert-{i}"),
            &tagged(0, &upsert_request(job).encode_to_vec()),
        );
    }
    let batch = spb::UpsertBatchRequest {
        items: jobs.iter().map(upsert_request).collect(),
    };
    write(&dir, "upsert-batch", &tagged(1, &batch.encode_to_vec()));
    let r = Some(spb::ScheduleRef {
        namespace: "alarms".into(),
        name: "wake-up".into(),
    });
    write(
        &dir,
        "delete",
        &tagged(
            2,
            &spb::DeleteRequest {
                r#ref: r.clone(),
                uid: "u".into(),
            }
            .encode_to_vec(),
        ),
    );
    write(
        &dir,
        "suspend",
        &tagged(
            3,
            &spb::SetSuspendRequest {
                r#ref: r.clone(),
                suspend: true,
            }
            .encode_to_vec(),
        ),
    );
    write(
        &dir,
        "trigger",
        &tagged(4, &spb::TriggerRequest { r#ref: r }.encode_to_vec()),
    );
    write(
        &dir,
        "list",
        &tagged(
            5,
            &spb::ListRequest {
                namespace: "alarms".into(),
            }
            .encode_to_vec(),
        ),
    );
    write(
        &dir,
        "add-member",
        &tagged(
            6,
            &spb::AddMemberRequest {
                id: 4,
                addr: "127.0.0.1:7004".into(),
                uid: String::new(),
                voter: true,
            }
            .encode_to_vec(),
        ),
    );

    // Raft: requests, replies and snapshots built from the examples.
    let cmds = commands(&jobs);
    let dir = seeds.join("grpc_raft");
    let vote = Vote::new_committed(2, 1);
    let envelope = |payload: Vec<u8>| rpb::Envelope {
        target_id: 2,
        target_uid: "node-uid-2".into(),
        cluster_id: "cluster-seed".into(),
        payload,
    };
    let vote_req = VoteRequest::new(vote, Some(log_id(1, 7)));
    write(
        &dir,
        "vote",
        &tagged(
            0,
            &envelope(wire::encode(&vote_req).unwrap()).encode_to_vec(),
        ),
    );
    let mut entries = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(membership()),
        },
        Entry {
            log_id: log_id(2, 2),
            payload: EntryPayload::Blank,
        },
    ];
    for (i, cmd) in cmds.iter().enumerate() {
        entries.push(Entry {
            log_id: log_id(2, i as u64 + 3),
            payload: EntryPayload::Normal(cmd.clone()),
        });
    }
    let append = AppendEntriesRequest {
        vote,
        prev_log_id: None,
        entries,
        leader_commit: Some(log_id(2, 3)),
    };
    let append_bytes = wire::encode(&append).unwrap();
    write(
        &dir,
        "append-entries",
        &tagged(0, &envelope(append_bytes.clone()).encode_to_vec()),
    );
    write(&dir, "append-entries.raw", &tagged(3, &append_bytes));
    let transfer = TransferLeaderRequest::new(vote, 3, Some(log_id(2, 9)));
    write(
        &dir,
        "transfer-leader",
        &tagged(
            0,
            &envelope(wire::encode(&transfer).unwrap()).encode_to_vec(),
        ),
    );
    let (snap, meta) = snapshot_bytes(&cmds, 3);
    let chunk = rpb::SnapshotChunk {
        envelope: Some(envelope(wire::encode(&(vote, meta)).unwrap())),
        data: snap,
    };
    write(&dir, "install-snapshot", &tagged(1, &chunk.encode_to_vec()));
    let replies: Vec<(&str, Vec<u8>)> = vec![
        (
            "reply-vote",
            wire::encode(&Ok::<_, RaftError>(VoteResponse::new(
                vote,
                Some(log_id(2, 9)),
                true,
            )))
            .unwrap(),
        ),
        (
            "reply-append",
            wire::encode(&Ok::<_, RaftError>(AppendEntriesResponse::Success)).unwrap(),
        ),
        (
            "reply-snapshot",
            wire::encode(&Ok::<_, RaftError>(SnapshotResponse::new(vote))).unwrap(),
        ),
        (
            "reply-stream",
            wire::encode(
                &Ok::<raftcron_node::raft::types::StreamAppendResult, String>(Ok(Some(log_id(
                    2, 9,
                )))),
            )
            .unwrap(),
        ),
    ];
    for (name, payload) in replies {
        write(
            &dir,
            name,
            &tagged(2, &rpb::Reply { payload }.encode_to_vec()),
        );
    }

    // snapshot: the state after several prefixes of the history.
    let dir = seeds.join("snapshot");
    for applied in [0, 2, 4, cmds.len()] {
        let (bytes, _) = snapshot_bytes(&cmds, applied.min(cmds.len()));
        write(&dir, &format!("state-after-{applied}"), &bytes);
    }
    println!("seeds written under {}", seeds.display());
}
