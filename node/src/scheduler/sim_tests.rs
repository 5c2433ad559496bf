//! Seeded simulation of leader terms over the pure core: the state machine
//! and the plan functions the fire loop uses (`takeover`, `pending_start`,
//! `at_start`), with leaders that die at random moments — before their
//! `Started` entry commits, mid-attempt, between claims — and successors that
//! take over one lease later. Thousands of seeded histories run in a second,
//! far more leader changes than the process-level fault runs reach.
//!
//! Checked: no (run, attempt) executes twice; every claimed instant executes
//! at least once; nothing stays active once a leader lives long enough.

use std::collections::HashMap;

use raftcron_crds::ScheduledJobSpec;

use super::plan::{self, StartDecision};
use crate::sm::{
    AttemptOutcome, Command, Disposition, FireClaim, Millis, RunEvent, RunRef, State,
    UpsertSchedule,
};
use crate::testkit::SplitMix64;

const T0: Millis = 1_800_000_000_000;
const UID: &str = "sim";

fn spec() -> ScheduledJobSpec {
    serde_json::from_value(serde_json::json!({
        "schedule": "* * * * * *",
        "action": {"http": {"url": "http://127.0.0.1:9/"}},
        "startingDeadlineSeconds": 600,
        "retry": {"maxAttempts": 4, "initialBackoffSeconds": 1, "jitter": 0.0},
    }))
    .unwrap()
}

fn commit(st: &mut State, term: u64, events: Vec<RunEvent>) {
    if !events.is_empty() {
        st.apply(&Command::Record {
            term,
            node: term,
            events,
        });
    }
}

struct Outcome {
    /// (run id, attempt) → times executed.
    executions: HashMap<(String, u32), u32>,
    instants: Vec<Millis>,
    leaders: u64,
    active_at_end: usize,
}

/// One history: leaders with random lifetimes over `secs` seconds of
/// per-second fires, then one leader that lives until all is settled.
fn simulate(seed: u64, secs: i64) -> Outcome {
    let mut rng = SplitMix64::new(seed);
    let mut st = State::default();
    st.apply(&Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "sim".into(),
            name: "sim".into(),
            uid: UID.into(),
            generation: 1,
            spec: spec(),
            kubernetes: false,
            app_job: None,
        }],
        now: T0,
    });
    let instants: Vec<Millis> = (1..=secs).map(|s| T0 + s * 1000).collect();
    let last = *instants.last().unwrap();
    let mut executions: HashMap<(String, u32), u32> = HashMap::new();
    let (mut t, mut term) = (T0 + 500, 1u64);
    // Attempts executing: (run id, attempt, finishes at, Started committed).
    let mut running: Vec<(String, u32, Millis, bool)> = Vec::new();
    while t < last + 120_000 {
        term += 1;
        let settle = t > last + 20_000; // the last leader never dies
        let death = if settle {
            Millis::MAX
        } else {
            t + rng.range(200, 6_000) as i64
        };
        // Takeover: the previous leader's lease ran out before `t`.
        let rec = st.get_by_uid(UID).unwrap().clone();
        let next = instants.iter().copied().find(|i| *i > rec.claimed_through);
        let takeover = plan::Takeover {
            term,
            at: t,
            max_skew: 0,
            // Leader deaths here are failovers, never an outage.
            downtime_until: None,
        };
        commit(&mut st, term, plan::takeover(&rec, next, &takeover));
        running.clear(); // the old leader's attempts are the takeover's business now
        let mut launched: HashMap<String, u32> = HashMap::new();
        let mut now = t;
        while now < death.min(last + 120_000) {
            // Claim everything due within the look-ahead.
            let through = st.get_by_uid(UID).unwrap().claimed_through;
            let fires: Vec<FireClaim> = instants
                .iter()
                .filter(|i| **i > through && **i <= now + 500)
                .map(|i| FireClaim {
                    uid: UID.into(),
                    instant: *i,
                    disposition: Disposition::Run,
                })
                .collect();
            if !fires.is_empty() && rng.chance(90) {
                st.apply(&Command::Claim {
                    term,
                    node: term,
                    now,
                    fires,
                });
            }
            // Start what is due.
            let rec = st.get_by_uid(UID).unwrap().clone();
            for run in &rec.active {
                let Some(p) = plan::pending_start(run) else {
                    continue;
                };
                if p.at > now || launched.get(&run.run_id).is_some_and(|a| *a >= p.attempt) {
                    continue;
                }
                match plan::at_start(&rec, run, now) {
                    StartDecision::Start => {
                        *executions
                            .entry((run.run_id.clone(), p.attempt))
                            .or_default() += 1;
                        launched.insert(run.run_id.clone(), p.attempt);
                        running.push((
                            run.run_id.clone(),
                            p.attempt,
                            now + rng.range(10, 2_500) as i64,
                            false,
                        ));
                    }
                    StartDecision::Events(events, _) => commit(&mut st, term, events),
                }
            }
            // Records reach the log a moment later, unless the leader dies first.
            let step = 100;
            for r in running.iter_mut() {
                if !r.3 && now + step < death {
                    r.3 = true;
                    let run = RunRef {
                        uid: UID.into(),
                        run_id: r.0.clone(),
                    };
                    commit(
                        &mut st,
                        term,
                        vec![RunEvent::Started {
                            run,
                            attempt: r.1,
                            at: now,
                            pod: None,
                        }],
                    );
                }
            }
            let (done, rest): (Vec<_>, Vec<_>) = running
                .drain(..)
                .partition(|r| r.3 && r.2 <= now && now + step < death);
            running = rest;
            for (run_id, attempt, at, _) in done {
                let outcome = if rng.chance(20) {
                    AttemptOutcome::Failed
                } else {
                    AttemptOutcome::Succeeded
                };
                let run = RunRef {
                    uid: UID.into(),
                    run_id,
                };
                commit(
                    &mut st,
                    term,
                    vec![RunEvent::Finished {
                        run,
                        attempt,
                        outcome,
                        at,
                        message: None,
                    }],
                );
            }
            now += step;
            if settle && now > last + 60_000 && st.get_by_uid(UID).unwrap().active.is_empty() {
                break;
            }
        }
        // The next leader is elected after the old lease (and more) ran out.
        t = now + rng.range(350, 1_500) as i64;
    }
    Outcome {
        executions,
        instants,
        leaders: term - 1,
        active_at_end: st.get_by_uid(UID).unwrap().active.len(),
    }
}

#[test]
fn seeded_leader_deaths_never_run_an_attempt_twice_nor_lose_an_instant() {
    let seeds: u64 = std::env::var("RAFTCRON_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut leaders, mut checked) = (0, 0);
    for seed in 0..seeds {
        let o = simulate(seed, 40);
        leaders += o.leaders;
        for ((run_id, attempt), n) in &o.executions {
            assert_eq!(
                *n, 1,
                "seed {seed}: {run_id} attempt {attempt} executed {n} times"
            );
        }
        for i in &o.instants {
            let id = raftcron_crds::names::run_id(UID, *i);
            assert!(
                o.executions.keys().any(|(r, _)| *r == id),
                "seed {seed}: instant {i} never executed"
            );
            checked += 1;
        }
        assert_eq!(o.active_at_end, 0, "seed {seed}: runs left active");
    }
    println!("{seeds} histories, {leaders} leader terms, {checked} instants checked");
}
