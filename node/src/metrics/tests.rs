//! Metrics: labels pre-initialised, and what each run event counts.

use super::*;
use crate::sm::{
    AttemptOutcome, Command, Disposition, FireClaim, Millis, Response, RunRef, State,
    UpsertSchedule,
};

const T0: Millis = 1_800_000_000_000;
const UID: &str = "u1";

fn state(max_attempts: u32) -> State {
    let spec = serde_json::from_value(serde_json::json!({
        "schedule": "* * * * * *",
        "action": {"http": {"url": "http://127.0.0.1:9/"}},
        "startingDeadlineSeconds": 600,
        "retry": {"maxAttempts": max_attempts, "initialBackoffSeconds": 0, "jitter": 0.0},
        "successfulRunsHistoryLimit": 100000,
        "failedRunsHistoryLimit": 100000,
    }))
    .unwrap();
    let mut st = State::default();
    st.apply(&Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "ns".into(),
            name: "job".into(),
            uid: UID.into(),
            generation: 1,
            spec,
            kubernetes: false,
            app_job: None,
        }],
        now: T0 - 10_000,
    });
    st
}

fn claim(st: &mut State, instant: Millis) -> RunRef {
    let r = st.apply(&Command::Claim {
        term: 1,
        node: 1,
        now: instant - 100,
        fires: vec![FireClaim {
            uid: UID.into(),
            instant,
            disposition: Disposition::Run,
        }],
    });
    assert_eq!(r, Response::Claim(vec![crate::sm::ClaimOutcome::Claimed]));
    RunRef {
        uid: UID.into(),
        run_id: raftcron_crds::names::run_id(UID, instant),
    }
}

fn active(st: &State, run: &RunRef) -> bool {
    let s = st.get_by_uid(UID).unwrap();
    s.active.iter().any(|r| r.run_id == run.run_id)
}

fn final_phase(st: &State, run: &RunRef) -> Option<FinalResult> {
    st.get_by_uid(UID)
        .unwrap()
        .history
        .iter()
        .find(|r| r.run_id == run.run_id)
        .and_then(|r| match r.phase {
            runs::Phase::Done(res) => Some(res),
            _ => None,
        })
}

/// Tallies `e` against the state before it, applies it, and checks the
/// tally said exactly what the state machine did to the run.
fn apply(st: &mut State, m: &Metrics, term: u64, e: RunEvent) {
    let t = tally(st.get_by_uid(UID), &e);
    apply_tallied(st, m, term, e, t);
}

fn apply_tallied(st: &mut State, m: &Metrics, term: u64, e: RunEvent, t: Tally) {
    let run = e.run().clone();
    let was_active = active(st, &run);
    let r = st.apply(&Command::Record {
        term,
        node: 1,
        events: vec![e.clone()],
    });
    assert_eq!(r, Response::Record(vec![true]), "{e:?} refused");
    let ended = was_active && !active(st, &run);
    assert_eq!(
        t.run,
        ended.then(|| final_phase(st, &run).unwrap()),
        "{e:?}"
    );
    m.count(t);
}

fn get(v: &IntCounterVec, label: &str) -> u64 {
    v.with_label_values(&[label]).get()
}

fn started(run: &RunRef, attempt: u32, at: Millis) -> RunEvent {
    RunEvent::Started {
        run: run.clone(),
        attempt,
        at,
        pod: None,
    }
}

fn finished(run: &RunRef, attempt: u32, outcome: AttemptOutcome, at: Millis) -> RunEvent {
    RunEvent::Finished {
        run: run.clone(),
        attempt,
        outcome,
        at,
        message: None,
    }
}

#[test]
fn a_run_that_succeeds_at_attempt_3_counts_once_as_succeeded() {
    let m = Metrics::new(1);
    for n in 0..4 {
        let mut st = state(3);
        let at = T0 + n * 1000;
        let run = claim(&mut st, at);
        for (attempt, outcome) in [
            (1, AttemptOutcome::Failed),
            (2, AttemptOutcome::Failed),
            (3, AttemptOutcome::Succeeded),
        ] {
            apply(&mut st, &m, 1, started(&run, attempt, at));
            apply(&mut st, &m, 1, finished(&run, attempt, outcome, at + 5));
        }
    }
    // The case: 4 runs, each Succeeded at attempt 3, showed Failed 8.
    assert_eq!(get(&m.runs, "Succeeded"), 4);
    assert_eq!(get(&m.runs, "Failed"), 0);
    assert_eq!(get(&m.attempts, "Failed"), 8);
    assert_eq!(get(&m.attempts, "Succeeded"), 4);
}

#[test]
fn a_result_that_arrives_before_its_start_is_applied_is_judged_after_that_start() {
    // The leader tallies a Finished when the action returns; its Started
    // may still be in flight. Attempt 2 of 2 failing ends the run Failed.
    let m = Metrics::new(1);
    let mut st = state(2);
    let run = claim(&mut st, T0);
    let s1 = started(&run, 1, T0);
    let f1 = finished(&run, 1, AttemptOutcome::TimedOut, T0 + 5);
    let t = tally(st.get_by_uid(UID), &f1);
    apply(&mut st, &m, 1, s1);
    apply_tallied(&mut st, &m, 1, f1, t);
    let f2 = finished(&run, 2, AttemptOutcome::Failed, T0 + 10);
    let t = tally(st.get_by_uid(UID), &f2);
    assert_eq!(t.run, Some(FinalResult::Failed));
    apply(&mut st, &m, 1, started(&run, 2, T0 + 6));
    apply_tallied(&mut st, &m, 1, f2, t);
    assert_eq!(get(&m.runs, "Failed"), 1);
    assert_eq!(get(&m.runs, "TimedOut"), 0);
    assert_eq!(get(&m.attempts, "TimedOut"), 1);
    assert_eq!(get(&m.attempts, "Failed"), 1);
}

#[test]
fn last_attempts_end_runs_timed_out_or_lost_and_earlier_ones_retry() {
    let m = Metrics::new(1);
    let mut st = state(2);
    let a = claim(&mut st, T0);
    apply(&mut st, &m, 1, started(&a, 1, T0));
    apply(
        &mut st,
        &m,
        1,
        finished(&a, 1, AttemptOutcome::TimedOut, T0 + 5),
    );
    apply(&mut st, &m, 1, started(&a, 2, T0 + 6));
    apply(
        &mut st,
        &m,
        1,
        finished(&a, 2, AttemptOutcome::TimedOut, T0 + 9),
    );
    // Lost twice: by a leader that died mid-attempt, and again.
    let b = claim(&mut st, T0 + 1000);
    for (term, attempt) in [(2, 1), (3, 2)] {
        apply(&mut st, &m, term - 1, started(&b, attempt, T0 + 1000));
        let lost = RunEvent::Lost {
            run: b.clone(),
            attempt,
            at: T0 + 1500,
            started: true,
        };
        apply(&mut st, &m, term, lost);
    }
    // Written off (its start never recorded): no attempt, no run counted.
    let c = claim(&mut st, T0 + 2000);
    let off = RunEvent::Lost {
        run: c.clone(),
        attempt: 1,
        at: T0 + 2500,
        started: false,
    };
    assert_eq!(tally(st.get_by_uid(UID), &off), Tally::default());
    apply(&mut st, &m, 2, off);
    apply(
        &mut st,
        &m,
        2,
        RunEvent::Replaced {
            run: c,
            at: T0 + 2600,
        },
    );
    assert_eq!(get(&m.runs, "TimedOut"), 1);
    assert_eq!(get(&m.runs, "Lost"), 1);
    assert_eq!(get(&m.runs, "Replaced"), 1);
    assert_eq!(get(&m.attempts, "TimedOut"), 2);
    assert_eq!(get(&m.attempts, "Lost"), 2);
    let total: u64 = RUN_RESULTS.iter().map(|r| get(&m.runs, r.as_str())).sum();
    assert_eq!(total, 3);
}

#[test]
fn an_event_the_state_machine_will_refuse_counts_no_run() {
    let st = state(3);
    let ghost = RunRef {
        uid: UID.into(),
        run_id: "never-claimed".into(),
    };
    let t = tally(
        st.get_by_uid(UID),
        &finished(&ghost, 1, AttemptOutcome::Failed, T0),
    );
    // The attempt ran (its action returned), the run is not this state's.
    assert_eq!(t.attempt, Some(FinalResult::Failed));
    assert_eq!(t.run, None);
    assert_eq!(tally(None, &missed(&ghost, T0)), Tally::default());
}

/// `Missed` through serde: its fields other than run and time default.
fn missed(run: &RunRef, at: Millis) -> RunEvent {
    serde_json::from_value(serde_json::json!({"Missed": {"run": run, "at": at}})).unwrap()
}

/// splitmix64: a seed names one history.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

#[test]
fn seeded_histories_count_every_run_once_by_the_result_the_state_machine_gives_it() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let max_attempts = 1 + rng.below(4) as u32;
        let mut st = state(max_attempts);
        let m = Metrics::new(1);
        let runs = 1 + rng.below(12) as i64;
        let mut term = 1;
        for k in 0..runs {
            let at = T0 + k * 1000;
            let run = claim(&mut st, at);
            match rng.below(10) {
                0 => apply(&mut st, &m, term, missed(&run, at + 1)),
                1 => {
                    let skip = RunEvent::Skipped {
                        run: run.clone(),
                        at,
                        reason: crate::sm::SkipReason::ConcurrencyForbid,
                    };
                    apply(&mut st, &m, term, skip)
                }
                _ => {}
            }
            let mut attempt = 1;
            while active(&st, &run) {
                if rng.below(12) == 0 {
                    apply(
                        &mut st,
                        &m,
                        term,
                        RunEvent::Replaced {
                            run: run.clone(),
                            at,
                        },
                    );
                    break;
                }
                let s = started(&run, attempt, at);
                let end = match rng.below(4) {
                    0 => {
                        term += 1;
                        RunEvent::Lost {
                            run: run.clone(),
                            attempt,
                            at,
                            started: true,
                        }
                    }
                    o => {
                        let outcome = [
                            AttemptOutcome::Succeeded,
                            AttemptOutcome::Failed,
                            AttemptOutcome::TimedOut,
                        ][o as usize - 1];
                        finished(&run, attempt, outcome, at + 1)
                    }
                };
                let early = matches!(end, RunEvent::Finished { .. }) && rng.below(2) == 0;
                if early {
                    // The action returned before its Started applied.
                    let t = tally(st.get_by_uid(UID), &end);
                    apply(&mut st, &m, term, s);
                    apply_tallied(&mut st, &m, term, end, t);
                } else {
                    apply(&mut st, &m, term, s);
                    apply(&mut st, &m, term, end);
                }
                attempt += 1;
            }
        }
        let sched = st.get_by_uid(UID).unwrap();
        assert!(sched.active.is_empty());
        for r in RUN_RESULTS {
            let ended = sched
                .history
                .iter()
                .filter(|h| h.phase == runs::Phase::Done(r))
                .count() as u64;
            assert_eq!(get(&m.runs, r.as_str()), ended, "seed {seed}: {r:?}");
        }
        let c = &sched.counters;
        assert_eq!(get(&m.runs, "Succeeded"), c.succeeded, "seed {seed}");
        assert_eq!(get(&m.runs, "Failed"), c.failed, "seed {seed}");
        assert_eq!(get(&m.runs, "TimedOut"), c.timed_out, "seed {seed}");
        // The state machine's lost counter counts attempts.
        assert_eq!(get(&m.attempts, "Lost"), c.lost, "seed {seed}");
        let attempts: u64 = ATTEMPT_RESULTS
            .iter()
            .map(|r| get(&m.attempts, r.as_str()))
            .sum();
        let by_attempt: u64 = ATTEMPT_RESULTS
            .iter()
            .map(|r| get(&m.runs, r.as_str()))
            .sum();
        assert_eq!(attempts - by_attempt, c.retries, "seed {seed}");
    }
}

/// Fails to compile when a result is added and not listed.
fn listed(r: FinalResult) -> bool {
    use FinalResult::*;
    match r {
        Succeeded | Failed | TimedOut | Lost | Missed | Skipped | Replaced => {
            RUN_RESULTS.contains(&r)
        }
    }
}

#[test]
fn a_fresh_registry_shows_every_label_value_at_zero() {
    let text = Metrics::new(7).render();
    // name → label sets (sorted "k=\"v\"" pairs) of the samples at 0.
    let mut zeros: std::collections::BTreeSet<(String, Vec<String>)> = Default::default();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = l.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut labels: Vec<String> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        labels.sort();
        if value == "0" {
            zeros.insert((name.to_string(), labels));
        }
    }
    let zero = |name: &str, labels: &[(&str, &str)]| {
        let mut want: Vec<String> = labels
            .iter()
            .chain([&("node", "7")])
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        want.sort();
        assert!(
            zeros.contains(&(name.to_string(), want.clone())),
            "{name}{want:?} missing or not 0 in\n{text}"
        );
    };
    for r in RUN_RESULTS {
        assert!(listed(r));
        zero("raftcron_node_runs_total", &[("result", r.as_str())]);
    }
    for r in ATTEMPT_RESULTS {
        zero("raftcron_node_attempts_total", &[("result", r.as_str())]);
    }
    for r in ["ok", "error", "gone"] {
        zero("raftcron_node_status_patches_total", &[("result", r)]);
    }
    for r in DISPATCH_RESULTS {
        zero("raftcron_node_dispatches_total", &[("result", r)]);
    }
    for k in LEASE_GRANTS {
        zero("raftcron_node_lease_grants_total", &[("kind", k)]);
    }
    for r in LEASE_ENDS {
        zero("raftcron_node_lease_ends_total", &[("reason", r)]);
    }
    for method in GRPC_METHODS {
        for code in GRPC_CODES {
            zero(
                "raftcron_node_grpc_requests_total",
                &[("method", method), ("code", code_name(code))],
            );
        }
        zero(
            "raftcron_node_grpc_request_duration_seconds_count",
            &[("method", method)],
        );
    }
    // No other labelled counter: each one needs its values listed above.
    let labelled: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(','))
        .filter_map(|l| l.split('{').next())
        .filter(|n| n.ends_with("_total"))
        .collect();
    assert_eq!(
        labelled.into_iter().collect::<Vec<_>>(),
        [
            "raftcron_node_attempts_total",
            "raftcron_node_dispatches_total",
            "raftcron_node_grpc_requests_total",
            "raftcron_node_lease_ends_total",
            "raftcron_node_lease_grants_total",
            "raftcron_node_runs_total",
            "raftcron_node_status_patches_total",
        ]
    );
}

#[test]
fn the_grpc_method_list_is_every_method_the_api_observes() {
    let src = include_str!("../api/mod.rs");
    let used: std::collections::BTreeSet<&str> = src
        .split("self.observe(\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    let listed: std::collections::BTreeSet<&str> = GRPC_METHODS.into_iter().collect();
    assert_eq!(used, listed);
}

#[test]
fn app_jobs_are_counted_by_namespace_and_app_and_an_app_without_jobs_has_no_series() {
    let job = |namespace: &str, app: &str, name: &str| UpsertSchedule {
        namespace: namespace.into(),
        name: format!("{app}/{name}"),
        uid: format!("{namespace}-{app}-{name}"),
        generation: 1,
        spec: serde_json::from_value(serde_json::json!({
            "schedule": "@every 1h",
            "action": {"app": {"name": app}},
        }))
        .unwrap(),
        kubernetes: false,
        app_job: Some(crate::sm::AppJob { expires: None }),
    };
    let mut st = state(1);
    st.apply(&Command::Upsert {
        items: vec![
            job("shop", "web", "a"),
            job("shop", "web", "b"),
            job("shop", "worker", "a"),
            job("bank", "web", "a"),
        ],
        now: T0,
    });
    let m = Metrics::new(1);
    m.count_app_jobs(st.schedules());
    let series = |m: &Metrics| -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = m
            .registry
            .gather()
            .into_iter()
            .filter(|f| f.name() == "raftcron_node_app_jobs")
            .flat_map(|f| f.get_metric().to_vec())
            .map(|x| {
                let label = |n: &str| {
                    x.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                (
                    label("namespace"),
                    label("app"),
                    x.get_gauge().get_value() as i64,
                )
            })
            .collect();
        v.sort();
        v
    };
    // The ScheduledJob "ns/job" of `state` is not an app job.
    assert_eq!(
        series(&m),
        vec![
            ("bank".into(), "web".into(), 1),
            ("shop".into(), "web".into(), 2),
            ("shop".into(), "worker".into(), 1),
        ]
    );
    st.apply(&Command::Delete {
        namespace: "shop".into(),
        name: "worker/a".into(),
        uid: None,
    });
    m.count_app_jobs(st.schedules());
    assert_eq!(
        series(&m),
        vec![
            ("bank".into(), "web".into(), 1),
            ("shop".into(), "web".into(), 2)
        ]
    );
}
