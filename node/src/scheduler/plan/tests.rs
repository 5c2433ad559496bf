//! Planning decisions with time passed in.

use raftcron_crds::schedule::Schedule;
use raftcron_crds::{ConcurrencyPolicy, MissedRunPolicy, ScheduledJobSpec};

use super::*;
use crate::sm::runs::{Phase, RunKind, RunRecord};
use crate::sm::{Command, Disposition, Response, State, UpsertSchedule};

const T0: Millis = 1_800_000_000_000; // a whole second

fn record(schedule: &str, f: impl FnOnce(&mut ScheduledJobSpec)) -> (ScheduleRecord, Schedule) {
    let mut spec: ScheduledJobSpec = serde_json::from_value(serde_json::json!({
        "schedule": schedule,
        "action": {"http": {"url": "http://127.0.0.1:9/ok"}}
    }))
    .unwrap();
    f(&mut spec);
    let mut st = State::default();
    let cmd = Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "d".into(),
            name: "j".into(),
            uid: "u".into(),
            generation: 1,
            spec,
            kubernetes: false,
            app_job: None,
        }],
        now: T0,
    };
    assert!(matches!(st.apply(&cmd), Response::Upsert(_)));
    let s = st.get_by_uid("u").unwrap().clone();
    let parsed = Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()).unwrap();
    (s, parsed)
}

fn settings() -> PlanSettings {
    PlanSettings {
        lookahead_ms: 1000,
        catch_up_ms: 10_000,
        max_instants: 100_000,
    }
}

/// A takeover after an ordinary failover.
fn at_takeover(term: u64, at: Millis) -> Takeover {
    Takeover {
        term,
        at,
        max_skew: 50,
        downtime_until: None,
    }
}

/// A takeover that ends an outage longer than the catch-up window.
fn after_outage(term: u64, at: Millis) -> Takeover {
    Takeover {
        downtime_until: Some(at),
        ..at_takeover(term, at)
    }
}

fn summary(c: &[FireClaim]) -> Vec<(i64, Disposition)> {
    c.iter()
        .map(|f| ((f.instant - T0) / 1000, f.disposition))
        .collect()
}

#[test]
fn fires_within_the_look_ahead_are_claimed_to_run() {
    let (s, p) = record("* * * * * *", |_| {});
    let c = claims(&s, &p, T0 + 200, &settings(), None);
    assert_eq!(summary(&c), vec![(1, Disposition::Run)]);
    let c = claims(&s, &p, T0 + 2_000, &settings(), None);
    assert_eq!(
        summary(&c),
        vec![
            (1, Disposition::Run),
            (2, Disposition::Run),
            (3, Disposition::Run)
        ]
    );
}

#[test]
fn a_suspended_schedule_claims_nothing() {
    let (s, p) = record("* * * * * *", |s| s.suspend = true);
    assert!(claims(&s, &p, T0 + 5_000, &settings(), None).is_empty());
    assert_eq!(next_claimable(&s, &p), None);
}

#[test]
fn slightly_late_fires_run_late_rather_than_being_missed() {
    // A failover gap of a few seconds: every instant still runs, whatever the policy.
    for policy in [
        MissedRunPolicy::Skip,
        MissedRunPolicy::RunOnce,
        MissedRunPolicy::RunAll,
    ] {
        let (s, p) = record("* * * * * *", |s| s.missed_run_policy = policy);
        let c = claims(&s, &p, T0 + 3_000, &settings(), None);
        assert_eq!(c.len(), 4, "{policy:?}");
        assert!(
            c.iter().all(|f| f.disposition == Disposition::Run),
            "{policy:?}"
        );
    }
}

#[test]
fn after_downtime_run_once_runs_only_the_latest_missed_instant() {
    let (s, p) = record("* * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::RunOnce
    });
    // 60 s down: instants 1..=49 are more than 10 s late, 50..=61 are within the catch-up window.
    let c = claims(&s, &p, T0 + 60_000, &settings(), None);
    let sum = summary(&c);
    assert_eq!(sum[0], (48, Disposition::Missed { count: 48 }));
    assert_eq!(sum[1], (49, Disposition::Run));
    assert!(sum[2..].iter().all(|(_, d)| *d == Disposition::Run));
    assert_eq!(sum.last().unwrap().0, 61);
}

#[test]
fn after_downtime_skip_records_a_missed_range_and_run_all_runs_everything() {
    let (s, p) = record("* * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::Skip
    });
    let sum = summary(&claims(&s, &p, T0 + 60_000, &settings(), None));
    assert_eq!(sum[0], (49, Disposition::Missed { count: 49 }));
    assert_eq!(sum[1], (50, Disposition::Run));
    let (s, p) = record("* * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::RunAll
    });
    let c = claims(&s, &p, T0 + 60_000, &settings(), None);
    assert_eq!(c.len(), 61);
    assert!(c.iter().all(|f| f.disposition == Disposition::Run));
}

#[test]
fn run_all_has_no_hidden_cap_it_continues_on_the_next_pass() {
    let (mut s, p) = record("* * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::RunAll
    });
    let set = PlanSettings {
        max_instants: 1000,
        ..settings()
    };
    let now = T0 + 86_400_000; // a day down: 86,400 instants
    let mut total = 0;
    loop {
        let c = claims(&s, &p, now, &set, None);
        if c.is_empty() {
            break;
        }
        total += c.len();
        s.claimed_through = c.last().unwrap().instant;
    }
    assert_eq!(total, 86_401);
}

#[test]
fn fires_past_the_starting_deadline_are_missed_even_when_slightly_late() {
    let (s, p) = record("* * * * * *", |s| s.starting_deadline_seconds = Some(2));
    let sum = summary(&claims(&s, &p, T0 + 5_000, &settings(), None));
    assert_eq!(
        sum,
        vec![
            (2, Disposition::Missed { count: 2 }),
            (3, Disposition::Run),
            (4, Disposition::Run),
            (5, Disposition::Run),
            (6, Disposition::Run)
        ]
    );
}

fn run(s: &ScheduleRecord, instant: Millis, phase: Phase) -> RunRecord {
    let mut r = RunRecord::new(
        raftcron_crds::names::run_id(&s.uid, instant),
        instant,
        RunKind::Scheduled,
        1,
    );
    r.phase = phase;
    r
}

#[test]
fn forbid_skips_a_fire_while_another_run_is_active_and_replace_replaces_it() {
    let (mut s, _) = record("* * * * * *", |s| {
        s.concurrency_policy = ConcurrencyPolicy::Forbid
    });
    let active = run(&s, T0 + 1000, Phase::Running);
    let next = run(&s, T0 + 2000, Phase::Claimed);
    s.active = vec![active.clone(), next.clone()];
    assert!(
        matches!(at_start(&s, &next, T0 + 2000), StartDecision::Events(ref e, false) if matches!(e[0], RunEvent::Skipped { .. }))
    );
    std::sync::Arc::make_mut(&mut s.spec).concurrency_policy = ConcurrencyPolicy::Replace;
    match at_start(&s, &next, T0 + 2000) {
        StartDecision::Events(e, true) => assert!(
            matches!(&e[..], [RunEvent::Replaced { run, .. }] if run.run_id == active.run_id)
        ),
        d => panic!("{d:?}"),
    }
    std::sync::Arc::make_mut(&mut s.spec).concurrency_policy = ConcurrencyPolicy::Allow;
    assert_eq!(at_start(&s, &next, T0 + 2000), StartDecision::Start);
}

#[test]
fn a_schedule_is_behind_once_enough_due_runs_wait_for_a_start_or_an_applied_result() {
    let (mut s, _) = record("* * * * * *", |s| {
        s.concurrency_policy = ConcurrencyPolicy::Allow
    });
    let now = T0 + 10_000;
    let nowhere = |_: &str| false;
    // Long actions executing here are not a backlog, however many overlap.
    s.active = (1..=5)
        .map(|i| run(&s, T0 + i * 1000, Phase::Running))
        .collect();
    assert!(!behind(&s, now, |_| true));
    // The same runs finished here, results not applied yet: a backlog.
    assert!(behind(&s, now, nowhere));
    // Waiting for their start: one short of the limit is not behind.
    s.active = (1..MAX_BEHIND as i64)
        .map(|i| run(&s, T0 + i * 1000, Phase::Claimed))
        .collect();
    assert!(!behind(&s, now, nowhere));
    s.active.push(run(&s, T0 + 9_000, Phase::Claimed));
    assert!(behind(&s, now, nowhere));
    // Claimed ahead of their instant (the look-ahead) is on time.
    assert!(!behind(&s, T0 + 1_000, nowhere));
    // A retry waits for its own time, not for the leader.
    s.active = (1..=5)
        .map(|i| run(&s, T0 + i * 1000, Phase::RetryPending { at: now + 60_000 }))
        .collect();
    assert!(!behind(&s, now, nowhere));
}

#[test]
fn a_claimed_fire_of_a_schedule_suspended_since_is_skipped() {
    let (mut s, _) = record("* * * * * *", |s| s.suspend = true);
    let next = run(&s, T0 + 1000, Phase::Claimed);
    s.active = vec![next.clone()];
    assert!(
        matches!(at_start(&s, &next, T0 + 1000), StartDecision::Events(ref e, false) if matches!(e[0], RunEvent::Skipped { .. }))
    );
}

#[test]
fn a_new_leader_writes_off_ambiguous_fires_and_marks_recorded_starts_lost() {
    let (mut s, _) = record("* * * * * *", |_| {});
    let takeover_at = T0 + 10_000;
    let mut running = run(&s, T0 + 8000, Phase::Running);
    running.attempt = 1;
    running.term = 1;
    let ambiguous = run(&s, T0 + 9000, Phase::Claimed); // before the takeover: maybe started
    let certain = run(&s, T0 + 10_500, Phase::Claimed); // after: the old lease had expired
    s.active = vec![running.clone(), ambiguous.clone(), certain.clone()];
    let events = takeover(&s, None, &at_takeover(2, takeover_at));
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[0], RunEvent::Lost { run, attempt: 1, started: true, .. } if run.run_id == running.run_id)
    );
    assert!(
        matches!(&events[1], RunEvent::Lost { run, attempt: 1, started: false, .. } if run.run_id == ambiguous.run_id)
    );
    assert_eq!(
        pending_start(&certain),
        Some(Pending {
            at: T0 + 10_500,
            attempt: 1
        })
    );
}

#[test]
fn runs_of_the_current_term_are_left_alone_at_takeover() {
    let (mut s, _) = record("* * * * * *", |_| {});
    let mut mine = run(&s, T0 + 1000, Phase::Running);
    mine.term = 5;
    s.active = vec![mine];
    assert!(takeover(&s, None, &at_takeover(5, T0 + 10_000)).is_empty());
}

/// A whole-cluster stop right after a claim: the claimed fires' instants
/// pass while every node is down, and the first leader after the restart
/// finds them claimed and never started.
fn stopped_with_claims(
    policy: MissedRunPolicy,
    deadline: Option<i64>,
    claimed: &[i64],
) -> ScheduleRecord {
    let (mut s, _) = record("* * * * * *", |s| {
        s.missed_run_policy = policy;
        s.starting_deadline_seconds = deadline;
    });
    s.active = claimed
        .iter()
        .map(|sec| run(&s, T0 + sec * 1000, Phase::Claimed))
        .collect();
    s.claimed_through = T0 + claimed.last().unwrap() * 1000;
    s
}

fn outcomes(events: &[RunEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            RunEvent::Lost { started: false, .. } => "run",
            RunEvent::Missed {
                reason: MissReason::Deadline,
                ..
            } => "missed:deadline",
            RunEvent::Missed {
                reason: MissReason::Downtime,
                ..
            } => "missed:downtime",
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn a_fire_claimed_before_a_whole_cluster_stop_is_missed_once_its_starting_deadline_passed() {
    // Claimed at :00.6 for :01, all nodes stopped, the next leader 10 s later.
    let s = stopped_with_claims(MissedRunPolicy::RunAll, Some(2), &[1]);
    let t = after_outage(2, T0 + 11_000);
    assert_eq!(
        outcomes(&takeover(&s, Some(T0 + 2_000), &t)),
        vec!["missed:deadline"]
    );
    // Within its deadline it still runs (as the next attempt).
    let t = at_takeover(2, T0 + 2_500);
    assert_eq!(outcomes(&takeover(&s, Some(T0 + 2_000), &t)), vec!["run"]);
}

#[test]
fn a_written_off_fire_is_missed_at_its_start_once_the_deadline_passed() {
    let (mut s, _) = record("* * * * * *", |s| s.starting_deadline_seconds = Some(2));
    let mut written_off = run(&s, T0 + 1000, Phase::RetryPending { at: T0 + 1500 });
    written_off.attempt = 1; // burned at a takeover, never recorded as started
    s.active = vec![written_off.clone()];
    assert!(matches!(
        at_start(&s, &written_off, T0 + 3_500),
        StartDecision::Events(ref e, false)
            if matches!(e[0], RunEvent::Missed { reason: MissReason::Deadline, .. })
    ));
    // A retry of a run that did start is not subject to the deadline.
    written_off.first_start = Some(T0 + 1000);
    s.active = vec![written_off.clone()];
    assert_eq!(at_start(&s, &written_off, T0 + 3_500), StartDecision::Start);
}

#[test]
fn claimed_fires_left_by_downtime_follow_the_missed_run_policy() {
    // Two fires claimed before the stop (:01, :02); the restart 20 s later.
    let claimed = [1, 2];
    let t = after_outage(2, T0 + 22_000);
    // The claims that follow find the unclaimed downtime instants (:03…).
    let unclaimed_missed = Some(T0 + 3_000);
    let s = stopped_with_claims(MissedRunPolicy::Skip, None, &claimed);
    assert_eq!(
        outcomes(&takeover(&s, unclaimed_missed, &t)),
        vec!["missed:downtime", "missed:downtime"]
    );
    let s = stopped_with_claims(MissedRunPolicy::RunAll, None, &claimed);
    assert_eq!(
        outcomes(&takeover(&s, unclaimed_missed, &t)),
        vec!["run", "run"]
    );
    // RunOnce: the claims that follow run the newest missed instant, so
    // none of these runs.
    let s = stopped_with_claims(MissedRunPolicy::RunOnce, None, &claimed);
    assert_eq!(
        outcomes(&takeover(&s, unclaimed_missed, &t)),
        vec!["missed:downtime", "missed:downtime"]
    );
    // RunOnce with no unclaimed instant missed (the next is still ahead):
    // the newest claimed one runs.
    assert_eq!(
        outcomes(&takeover(&s, Some(T0 + 22_500), &t)),
        vec!["missed:downtime", "run"]
    );
}

#[test]
fn a_failover_runs_every_claimed_fire_whatever_the_missed_run_policy() {
    // The old leader died right after claiming; its successor took over 1 s later.
    for policy in [
        MissedRunPolicy::Skip,
        MissedRunPolicy::RunOnce,
        MissedRunPolicy::RunAll,
    ] {
        let s = stopped_with_claims(policy, None, &[1, 2]);
        let t = at_takeover(2, T0 + 2_100);
        assert_eq!(
            outcomes(&takeover(&s, Some(T0 + 3_000), &t)),
            vec!["run", "run"],
            "{policy:?}"
        );
    }
}

#[test]
fn manual_runs_left_by_downtime_still_run() {
    let (mut s, _) = record("* * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::Skip
    });
    let mut manual = run(&s, T0 + 1000, Phase::Claimed);
    manual.kind = RunKind::Manual;
    s.active = vec![manual];
    let t = after_outage(2, T0 + 60_000);
    assert_eq!(outcomes(&takeover(&s, None, &t)), vec!["run"]);
}

#[test]
fn an_outage_is_measured_by_the_oldest_unclaimed_instant() {
    let (s, p) = record("*/2 * * * * *", |_| {});
    let next = p.next_after(s.claimed_through);
    assert_eq!(next, Some(T0 + 2_000));
    // A failover: the first unclaimed instant came due 0.8 s before the takeover.
    assert_eq!(outage_evidence(&s, next, T0 + 2_800), 800);
    // Nothing came due unclaimed: no evidence of an outage.
    assert_eq!(outage_evidence(&s, next, T0 + 1_900), 0);
    // A 20 s stop.
    assert_eq!(outage_evidence(&s, next, T0 + 22_000), 20_000);
    // A suspended schedule claims nothing, so its old instants say nothing.
    let (s, _) = record("*/2 * * * * *", |s| s.suspend = true);
    assert_eq!(outage_evidence(&s, next, T0 + 22_000), 0);
}

#[test]
fn every_unclaimed_instant_before_the_end_of_an_outage_follows_the_policy() {
    // A 20 s outage ended at :22 by a takeover; its last seconds are not
    // "merely late": the outage as a whole was downtime.
    let (s, p) = record("*/2 * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::Skip
    });
    let c = claims(&s, &p, T0 + 22_000, &settings(), Some(T0 + 22_000));
    assert!(
        c.iter()
            .all(|f| f.instant < T0 + 22_000 || f.disposition == Disposition::Run)
    );
    assert_eq!(
        summary(&c),
        vec![
            (20, Disposition::Missed { count: 10 }),
            (22, Disposition::Run)
        ]
    );
    let (s, p) = record("*/2 * * * * *", |s| {
        s.missed_run_policy = MissedRunPolicy::RunOnce
    });
    let c = claims(&s, &p, T0 + 22_000, &settings(), Some(T0 + 22_000));
    assert_eq!(
        summary(&c),
        vec![
            (18, Disposition::Missed { count: 9 }),
            (20, Disposition::Run),
            (22, Disposition::Run)
        ]
    );
}

fn record_with(spec: serde_json::Value, created: Millis) -> (ScheduleRecord, Schedule) {
    let spec: ScheduledJobSpec = serde_json::from_value(spec).unwrap();
    let mut st = State::default();
    st.apply(&Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "d".into(),
            name: "j".into(),
            uid: "u".into(),
            generation: 1,
            spec,
            kubernetes: false,
            app_job: None,
        }],
        now: created,
    });
    let s = st.get_by_uid("u").unwrap().clone();
    let parsed = Schedule::for_spec(&s.spec.schedule, None, s.spec.due_ms()).unwrap();
    (s, parsed)
}

#[test]
fn a_one_shot_fires_once_at_its_due_time_then_is_complete() {
    let due = raftcron_crds::names::rfc3339_ms(T0 + 5_000);
    let (mut s, p) = record_with(
        serde_json::json!({"dueTime": due, "action": {"http": {"url": "http://127.0.0.1:9/"}}}),
        T0,
    );
    assert_eq!(next_claimable(&s, &p), Some(T0 + 5_000));
    let c = claims(&s, &p, T0 + 4_500, &settings(), None);
    assert_eq!(summary(&c), vec![(5, Disposition::Run)]);
    s.claimed_through = T0 + 5_000;
    s.fired = 1;
    assert_eq!(next_claimable(&s, &p), None);
    assert!(claims(&s, &p, T0 + 60_000, &settings(), None).is_empty());
    assert_eq!(completion(&s, &p, T0 + 6_000), Some("its dueTime fired"));
}

#[test]
fn a_one_shot_created_after_its_due_time_fires_at_once() {
    let due = raftcron_crds::names::rfc3339_ms(T0);
    let (s, p) = record_with(
        serde_json::json!({"dueTime": due, "action": {"http": {"url": "http://127.0.0.1:9/"}}}),
        T0 + 30,
    );
    assert_eq!(next_claimable(&s, &p), Some(T0));
    let c = claims(&s, &p, T0 + 30, &settings(), None);
    assert_eq!(summary(&c), vec![(0, Disposition::Run)]);
}

#[test]
fn repeats_bound_the_instants_claimed_to_run_and_then_the_schedule_is_complete() {
    let (mut s, p) = record_with(
        serde_json::json!({"schedule": "* * * * * *", "repeats": 2,
                           "action": {"http": {"url": "http://127.0.0.1:9/"}}}),
        T0,
    );
    let c = claims(&s, &p, T0 + 4_000, &settings(), None);
    assert_eq!(
        summary(&c),
        vec![(1, Disposition::Run), (2, Disposition::Run)],
        "two of the five due instants"
    );
    s.claimed_through = T0 + 2_000;
    s.fired = 2;
    assert_eq!(next_claimable(&s, &p), None);
    assert!(claims(&s, &p, T0 + 9_000, &settings(), None).is_empty());
    assert_eq!(
        completion(&s, &p, T0 + 9_000),
        Some("its repeats are used up")
    );
    // Not complete while a run is still going.
    s.active = vec![run(&s, T0 + 2_000, Phase::Running)];
    assert_eq!(completion(&s, &p, T0 + 9_000), None);
}

#[test]
fn a_due_time_with_a_schedule_fires_first_at_the_due_time_then_on_the_schedule() {
    let due = raftcron_crds::names::rfc3339_ms(T0 + 2_500);
    let (s, p) = record_with(
        serde_json::json!({"schedule": "* * * * * *", "dueTime": due,
                           "action": {"http": {"url": "http://127.0.0.1:9/"}}}),
        T0,
    );
    let c = claims(&s, &p, T0 + 3_000, &settings(), None);
    let at: Vec<Millis> = c.iter().map(|f| f.instant - T0).collect();
    assert_eq!(at, vec![2_500, 3_000, 4_000]);
}
