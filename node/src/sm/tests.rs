//! The state machine fed commands with explicit times.

use raftcron_crds::{ConcurrencyPolicy, RetryPolicy, ScheduledJobSpec};

use super::runs::{FinalResult, Phase, retry_delay_ms};
use super::*;

const T0: Millis = 1_800_000_000_000; // 2027-01-15T08:00:00Z, a whole second

fn spec(schedule: &str) -> ScheduledJobSpec {
    serde_json::from_value(serde_json::json!({
        "schedule": schedule,
        "action": {"http": {"url": "http://127.0.0.1:9/ok"}}
    }))
    .unwrap()
}

fn upsert(
    state: &mut State,
    name: &str,
    uid: &str,
    generation: i64,
    spec: ScheduledJobSpec,
    now: Millis,
) -> UpsertOutcome {
    let cmd = Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            generation,
            spec,
            kubernetes: false,
            app_job: None,
        }],
        now,
    };
    match state.apply(&cmd) {
        Response::Upsert(v) => v[0],
        r => panic!("unexpected {r:?}"),
    }
}

fn claim(state: &mut State, uid: &str, instant: Millis, term: u64) -> ClaimOutcome {
    let cmd = Command::Claim {
        term,
        node: 1,
        now: instant - 500,
        fires: vec![FireClaim {
            uid: uid.into(),
            instant,
            disposition: Disposition::Run,
        }],
    };
    match state.apply(&cmd) {
        Response::Claim(v) => v[0],
        r => panic!("unexpected {r:?}"),
    }
}

fn record(state: &mut State, term: u64, node: u64, e: RunEvent) -> bool {
    match state.apply(&Command::Record {
        term,
        node,
        events: vec![e],
    }) {
        Response::Record(v) => v[0],
        r => panic!("unexpected {r:?}"),
    }
}

fn rref(uid: &str, instant: Millis) -> RunRef {
    RunRef {
        uid: uid.into(),
        run_id: raftcron_crds::names::run_id(uid, instant),
    }
}

fn with_one(schedule: &str) -> State {
    let mut s = State::default();
    assert_eq!(
        upsert(&mut s, "job", "u1", 1, spec(schedule), T0),
        UpsertOutcome::Created
    );
    s
}

#[test]
fn a_fire_is_claimed_once_and_a_second_claim_for_the_same_fire_is_refused() {
    let mut s = with_one("* * * * * *");
    assert_eq!(claim(&mut s, "u1", T0 + 1000, 1), ClaimOutcome::Claimed);
    assert_eq!(
        claim(&mut s, "u1", T0 + 1000, 1),
        ClaimOutcome::Duplicate,
        "retried write"
    );
    assert_eq!(
        claim(&mut s, "u1", T0 + 1000, 2),
        ClaimOutcome::Duplicate,
        "a new leader"
    );
    assert_eq!(
        claim(&mut s, "u1", T0 + 500, 2),
        ClaimOutcome::Duplicate,
        "an earlier instant after a later claim"
    );
    assert_eq!(claim(&mut s, "u1", T0 + 2000, 2), ClaimOutcome::Claimed);
    assert_eq!(s.get_by_uid("u1").unwrap().active.len(), 2);
}

#[test]
fn claims_before_the_creation_time_are_refused() {
    let mut s = with_one("* * * * * *");
    assert_eq!(claim(&mut s, "u1", T0, 1), ClaimOutcome::Duplicate);
    assert_eq!(
        claim(&mut s, "nope", T0 + 1000, 1),
        ClaimOutcome::UnknownSchedule
    );
}

#[test]
fn a_run_moves_from_claimed_to_started_to_succeeded_and_into_history() {
    let mut s = with_one("* * * * * *");
    claim(&mut s, "u1", T0 + 1000, 1);
    let r = rref("u1", T0 + 1000);
    assert!(record(
        &mut s,
        1,
        2,
        RunEvent::Started {
            run: r.clone(),
            attempt: 1,
            at: T0 + 1002,
            pod: None
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!(rec.active[0].phase, Phase::Running);
    assert_eq!(rec.active[0].lateness_ms(), Some(2));
    assert_eq!(rec.last_schedule, Some(T0 + 1000));
    assert!(record(
        &mut s,
        1,
        2,
        RunEvent::Finished {
            run: r.clone(),
            attempt: 1,
            outcome: AttemptOutcome::Succeeded,
            at: T0 + 1100,
            message: None
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert!(rec.active.is_empty());
    assert_eq!(rec.history[0].phase, Phase::Done(FinalResult::Succeeded));
    assert_eq!(rec.history[0].node, 2);
    assert_eq!(rec.counters.succeeded, 1);
    assert_eq!(rec.last_success, Some(T0 + 1100));
    // A duplicate result (retried write) changes nothing.
    assert!(!record(
        &mut s,
        1,
        2,
        RunEvent::Finished {
            run: r,
            attempt: 1,
            outcome: AttemptOutcome::Failed,
            at: T0 + 1200,
            message: None
        }
    ));
    assert_eq!(
        s.get_by_uid("u1").unwrap().counters,
        Counters {
            succeeded: 1,
            ..Default::default()
        }
    );
}

#[test]
fn a_result_for_a_run_that_never_started_is_refused() {
    let mut s = with_one("* * * * * *");
    claim(&mut s, "u1", T0 + 1000, 1);
    let r = rref("u1", T0 + 1000);
    assert!(!record(
        &mut s,
        1,
        1,
        RunEvent::Finished {
            run: r,
            attempt: 1,
            outcome: AttemptOutcome::Succeeded,
            at: T0 + 1100,
            message: None
        }
    ));
}

#[test]
fn a_failed_attempt_is_retried_with_backoff_until_attempts_run_out() {
    let mut sp = spec("* * * * * *");
    sp.retry = Some(Box::new(RetryPolicy {
        max_attempts: 2,
        initial_backoff_seconds: 1.0,
        jitter: 0.0,
        ..Default::default()
    }));
    let mut s = State::default();
    upsert(&mut s, "job", "u1", 1, sp, T0);
    claim(&mut s, "u1", T0 + 1000, 1);
    let r = rref("u1", T0 + 1000);
    record(
        &mut s,
        1,
        1,
        RunEvent::Started {
            run: r.clone(),
            attempt: 1,
            at: T0 + 1000,
            pod: None,
        },
    );
    record(
        &mut s,
        1,
        1,
        RunEvent::Finished {
            run: r.clone(),
            attempt: 1,
            outcome: AttemptOutcome::Failed,
            at: T0 + 1500,
            message: Some("HTTP 500".into()),
        },
    );
    let run = &s.get_by_uid("u1").unwrap().active[0];
    assert_eq!(run.phase, Phase::RetryPending { at: T0 + 2500 });
    assert_eq!(s.get_by_uid("u1").unwrap().counters.retries, 1);
    assert!(
        !record(
            &mut s,
            1,
            1,
            RunEvent::Started {
                run: r.clone(),
                attempt: 1,
                at: T0 + 2500,
                pod: None
            }
        ),
        "attempt numbers are not reused"
    );
    assert!(record(
        &mut s,
        1,
        1,
        RunEvent::Started {
            run: r.clone(),
            attempt: 2,
            at: T0 + 2500,
            pod: None
        }
    ));
    record(
        &mut s,
        1,
        1,
        RunEvent::Finished {
            run: r,
            attempt: 2,
            outcome: AttemptOutcome::TimedOut,
            at: T0 + 3000,
            message: None,
        },
    );
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!(rec.history[0].phase, Phase::Done(FinalResult::TimedOut));
    assert_eq!(rec.history[0].attempt, 2);
    assert_eq!(rec.counters.timed_out, 1);
}

#[test]
fn retry_delays_grow_are_capped_and_jitter_is_deterministic() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff_seconds: 1.0,
        max_backoff_seconds: 5.0,
        multiplier: 2.0,
        jitter: 0.0,
    };
    let d: Vec<_> = (2..=6).map(|a| retry_delay_ms(&p, "r", a)).collect();
    assert_eq!(d, vec![1000, 2000, 4000, 5000, 5000]);
    let j = RetryPolicy { jitter: 0.5, ..p };
    for a in 2..20 {
        let x = retry_delay_ms(&j, "run-x", a);
        assert_eq!(
            x,
            retry_delay_ms(&j, "run-x", a),
            "same inputs, same delay on every replica"
        );
        let base = retry_delay_ms(&p, "run-x", a) as f64;
        assert!(
            (x as f64) >= base * 0.5 - 1.0 && (x as f64) <= base * 1.5 + 1.0,
            "{x} vs {base}"
        );
    }
}

#[test]
fn a_recorded_start_lost_with_its_leader_is_retried_and_counted_against_attempts() {
    let mut sp = spec("* * * * * *");
    sp.retry = Some(Box::new(RetryPolicy {
        max_attempts: 2,
        ..Default::default()
    }));
    let mut s = State::default();
    upsert(&mut s, "job", "u1", 1, sp, T0);
    claim(&mut s, "u1", T0 + 1000, 1);
    let r = rref("u1", T0 + 1000);
    record(
        &mut s,
        1,
        1,
        RunEvent::Started {
            run: r.clone(),
            attempt: 1,
            at: T0 + 1000,
            pod: None,
        },
    );
    assert!(record(
        &mut s,
        2,
        2,
        RunEvent::Lost {
            run: r.clone(),
            attempt: 1,
            at: T0 + 2000,
            started: true
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert!(matches!(rec.active[0].phase, Phase::RetryPending { .. }));
    assert_eq!(rec.counters.lost, 1);
    record(
        &mut s,
        2,
        2,
        RunEvent::Started {
            run: r.clone(),
            attempt: 2,
            at: T0 + 3000,
            pod: None,
        },
    );
    assert!(record(
        &mut s,
        3,
        3,
        RunEvent::Lost {
            run: r,
            attempt: 2,
            at: T0 + 4000,
            started: true
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!(rec.history[0].phase, Phase::Done(FinalResult::Lost));
    assert_eq!(rec.counters.lost, 2);
}

#[test]
fn an_unrecorded_attempt_is_written_off_without_using_up_the_attempts() {
    // maxAttempts defaults to one: the run must still execute once after the write-off.
    let mut s = with_one("* * * * * *");
    claim(&mut s, "u1", T0 + 1000, 1);
    let r = rref("u1", T0 + 1000);
    assert!(record(
        &mut s,
        2,
        2,
        RunEvent::Lost {
            run: r.clone(),
            attempt: 1,
            at: T0 + 1500,
            started: false
        }
    ));
    let run = &s.get_by_uid("u1").unwrap().active[0];
    assert_eq!(
        (run.phase, run.attempt, run.counted_attempts),
        (Phase::RetryPending { at: T0 + 1500 }, 1, 0)
    );
    assert!(record(
        &mut s,
        2,
        2,
        RunEvent::Started {
            run: r.clone(),
            attempt: 2,
            at: T0 + 1500,
            pod: None
        }
    ));
    assert!(record(
        &mut s,
        2,
        2,
        RunEvent::Finished {
            run: r,
            attempt: 2,
            outcome: AttemptOutcome::Succeeded,
            at: T0 + 1600,
            message: None
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!(rec.history[0].phase, Phase::Done(FinalResult::Succeeded));
    assert_eq!((rec.counters.lost, rec.counters.succeeded), (1, 1));
}

#[test]
fn missed_ranges_are_recorded_with_their_count() {
    let mut s = with_one("* * * * * *");
    let cmd = Command::Claim {
        term: 1,
        node: 1,
        now: T0 + 100_000,
        fires: vec![FireClaim {
            uid: "u1".into(),
            instant: T0 + 90_000,
            disposition: Disposition::Missed { count: 90 },
        }],
    };
    assert_eq!(s.apply(&cmd), Response::Claim(vec![ClaimOutcome::Claimed]));
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!(rec.counters.missed, 90);
    assert_eq!(rec.history[0].phase, Phase::Done(FinalResult::Missed));
    assert_eq!(rec.claimed_through, T0 + 90_000);
}

#[test]
fn history_is_bounded_separately_for_successful_and_failed_runs() {
    let mut sp = spec("* * * * * *");
    sp.successful_runs_history_limit = Some(2);
    sp.failed_runs_history_limit = Some(1);
    let mut s = State::default();
    upsert(&mut s, "job", "u1", 1, sp, T0);
    for i in 1..=6 {
        let at = T0 + i * 1000;
        claim(&mut s, "u1", at, 1);
        let r = rref("u1", at);
        record(
            &mut s,
            1,
            1,
            RunEvent::Started {
                run: r.clone(),
                attempt: 1,
                at,
                pod: None,
            },
        );
        let outcome = if i % 2 == 0 {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        };
        record(
            &mut s,
            1,
            1,
            RunEvent::Finished {
                run: r,
                attempt: 1,
                outcome,
                at: at + 10,
                message: None,
            },
        );
    }
    let rec = s.get_by_uid("u1").unwrap();
    let kept: Vec<_> = rec
        .history
        .iter()
        .map(|r| (r.instant - T0, r.phase))
        .collect();
    assert_eq!(
        kept,
        vec![
            (6000, Phase::Done(FinalResult::Succeeded)),
            (5000, Phase::Done(FinalResult::Failed)),
            (4000, Phase::Done(FinalResult::Succeeded)),
        ]
    );
    assert_eq!(
        (rec.counters.succeeded, rec.counters.failed),
        (3, 3),
        "counters are not bounded"
    );
}

#[test]
fn upserts_are_ordered_by_generation_and_a_new_uid_replaces_the_old_incarnation() {
    let mut s = with_one("* * * * * *");
    assert_eq!(
        upsert(&mut s, "job", "u1", 1, spec("* * * * * *"), T0 + 5),
        UpsertOutcome::Unchanged
    );
    assert_eq!(
        upsert(&mut s, "job", "u1", 3, spec("*/2 * * * * *"), T0 + 10),
        UpsertOutcome::Updated
    );
    assert_eq!(
        upsert(&mut s, "job", "u1", 2, spec("*/5 * * * * *"), T0 + 20),
        UpsertOutcome::Stale
    );
    assert_eq!(s.get_by_uid("u1").unwrap().spec.schedule, "*/2 * * * * *");
    claim(&mut s, "u1", T0 + 2000, 1);
    assert_eq!(
        upsert(&mut s, "job", "u2", 1, spec("* * * * * *"), T0 + 3000),
        UpsertOutcome::Updated
    );
    assert!(s.get_by_uid("u1").is_none());
    let rec = s.get_by_uid("u2").unwrap();
    assert!(rec.active.is_empty(), "the old incarnation's runs are gone");
    assert_eq!(rec.claimed_through, T0 + 3000);
    let changes = s.drain_changes();
    assert!(changes.contains(&Change::Deleted {
        uid: "u1".into(),
        key: Key::new("default", "job")
    }));
}

#[test]
fn updating_a_schedule_never_reopens_claimed_instants() {
    let mut s = with_one("* * * * * *");
    claim(&mut s, "u1", T0 + 1000, 1);
    claim(&mut s, "u1", T0 + 2000, 1);
    upsert(&mut s, "job", "u1", 2, spec("*/2 * * * * *"), T0 + 500);
    assert_eq!(claim(&mut s, "u1", T0 + 2000, 1), ClaimOutcome::Duplicate);
    // Updated later than the last claim: nothing before the update counts as missed.
    upsert(&mut s, "job", "u1", 3, spec("* * * * * *"), T0 + 60_000);
    assert_eq!(s.get_by_uid("u1").unwrap().claimed_through, T0 + 60_000);
}

#[test]
fn resuming_skips_the_instants_that_passed_while_suspended() {
    let mut s = with_one("* * * * * *");
    let r = s.apply(&Command::SetSuspend {
        namespace: "default".into(),
        name: "job".into(),
        suspend: true,
        now: T0 + 10,
    });
    assert_eq!(
        r,
        Response::SetSuspend {
            changed: true,
            found: true
        }
    );
    let r = s.apply(&Command::SetSuspend {
        namespace: "default".into(),
        name: "job".into(),
        suspend: false,
        now: T0 + 50_000,
    });
    assert_eq!(
        r,
        Response::SetSuspend {
            changed: true,
            found: true
        }
    );
    assert_eq!(s.get_by_uid("u1").unwrap().claimed_through, T0 + 50_000);
    let r = s.apply(&Command::SetSuspend {
        namespace: "default".into(),
        name: "nope".into(),
        suspend: true,
        now: T0,
    });
    assert_eq!(
        r,
        Response::SetSuspend {
            changed: false,
            found: false
        }
    );
}

#[test]
fn forbid_and_replace_outcomes_are_recorded_as_skipped_and_replaced() {
    let mut sp = spec("* * * * * *");
    sp.concurrency_policy = ConcurrencyPolicy::Forbid;
    let mut s = State::default();
    upsert(&mut s, "job", "u1", 1, sp, T0);
    claim(&mut s, "u1", T0 + 1000, 1);
    claim(&mut s, "u1", T0 + 2000, 1);
    record(
        &mut s,
        1,
        1,
        RunEvent::Started {
            run: rref("u1", T0 + 1000),
            attempt: 1,
            at: T0 + 1000,
            pod: None,
        },
    );
    assert!(record(
        &mut s,
        1,
        1,
        RunEvent::Skipped {
            run: rref("u1", T0 + 2000),
            at: T0 + 2000,
            reason: SkipReason::ConcurrencyForbid
        }
    ));
    assert!(record(
        &mut s,
        1,
        1,
        RunEvent::Replaced {
            run: rref("u1", T0 + 1000),
            at: T0 + 2000
        }
    ));
    let rec = s.get_by_uid("u1").unwrap();
    assert_eq!((rec.counters.skipped, rec.counters.replaced), (1, 1));
    assert!(rec.active.is_empty());
}

#[test]
fn a_manual_trigger_creates_a_distinct_run_each_time() {
    let mut s = with_one("0 0 1 1 *");
    let a = s.apply(&Command::Trigger {
        namespace: "default".into(),
        name: "job".into(),
        term: 1,
        node: 1,
        now: T0 + 5,
    });
    let b = s.apply(&Command::Trigger {
        namespace: "default".into(),
        name: "job".into(),
        term: 1,
        node: 1,
        now: T0 + 5,
    });
    let (Response::Trigger(Ok((ra, _))), Response::Trigger(Ok((rb, _)))) = (a, b) else {
        panic!()
    };
    assert_ne!(ra, rb);
    assert_eq!(s.get_by_uid("u1").unwrap().active.len(), 2);
    let missing = s.apply(&Command::Trigger {
        namespace: "x".into(),
        name: "y".into(),
        term: 1,
        node: 1,
        now: T0,
    });
    assert!(matches!(missing, Response::Trigger(Err(_))));
}

#[test]
fn the_first_cluster_id_wins() {
    let mut s = State::default();
    assert_eq!(
        s.apply(&Command::SetClusterId {
            cluster_id: "a".into()
        }),
        Response::SetClusterId {
            cluster_id: "a".into()
        }
    );
    assert_eq!(
        s.apply(&Command::SetClusterId {
            cluster_id: "b".into()
        }),
        Response::SetClusterId {
            cluster_id: "a".into()
        }
    );
}

#[test]
fn a_snapshot_round_trip_restores_the_same_state_and_index() {
    let mut s = with_one("* * * * * *");
    upsert(&mut s, "other", "u2", 1, spec("*/5 * * * * *"), T0);
    claim(&mut s, "u1", T0 + 1000, 1);
    record(
        &mut s,
        1,
        1,
        RunEvent::Started {
            run: rref("u1", T0 + 1000),
            attempt: 1,
            at: T0 + 1001,
            pod: None,
        },
    );
    s.apply(&Command::SetClusterId {
        cluster_id: "c".into(),
    });
    let bytes = rmp_serde::to_vec_named(&s).unwrap();
    let mut back: State = rmp_serde::from_slice(&bytes).unwrap();
    back.reindex();
    assert_eq!(back, s);
    assert_eq!(
        back.get_by_uid("u2").unwrap().name,
        "other",
        "the uid index is rebuilt"
    );
    // And it keeps working identically after the restore.
    assert_eq!(
        claim(&mut back, "u1", T0 + 1000, 2),
        ClaimOutcome::Duplicate
    );
}

#[test]
fn deleting_with_a_uid_precondition_spares_a_newer_incarnation() {
    let mut s = with_one("* * * * * *");
    let r = s.apply(&Command::Delete {
        namespace: "default".into(),
        name: "job".into(),
        uid: Some("old".into()),
    });
    assert_eq!(r, Response::Delete { existed: false });
    let r = s.apply(&Command::Delete {
        namespace: "default".into(),
        name: "job".into(),
        uid: Some("u1".into()),
    });
    assert_eq!(r, Response::Delete { existed: true });
    assert!(s.is_empty());
}
