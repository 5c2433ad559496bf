//! What the leader writes into a ScheduledJob: the status fields it owns
//! and the Warning Events of runs that ended badly, as pure functions of
//! the replicated [`ScheduleRecord`] and the time.
//!
//! ```text
//!  ScheduleRecord + now ──compute──► ScheduledJobStatus (run fields only)
//!                                        └─apply_body──► SSA body {metadata.uid precondition, status}
//!  ScheduleRecord.history ──failures──► one Warning Event per Failed / TimedOut / Lost / Missed run
//! ```
//!
//! `observedGeneration` and the `Ready` condition belong to the operator
//! (its own field manager); the node applies only the `Complete` condition
//! (`conditions` is a list map keyed by type, so each manager owns its own
//! entries), and none while a schedule has more to do, so a forced apply
//! by the node cannot take the operator's over or remove them.

use std::collections::HashSet;

use raftcron_crds::ScheduledJobStatus;
use raftcron_crds::names::{self, event, result};
use raftcron_crds::types::RunSummary;
use serde_json::json;

use crate::api::convert::next_fire;
use crate::sm::runs::{FinalResult, Phase, RunRecord};
use crate::sm::{Millis, ScheduleRecord};

/// A run that ended longer ago than this is not reported as an Event by a
/// writer that has no record of reporting it (a new leader, a restart): it
/// was most likely reported already, and an old failure announced as new
/// misleads more than a missing one.
pub const EVENT_MAX_AGE_MS: Millis = 10 * 60 * 1000;
/// Kubernetes refuses an Event note over 1 kB.
const MAX_NOTE: usize = 1000;

fn time(ms: Millis) -> String {
    names::rfc3339_ms(ms)
}

/// One run as shown in the status.
pub fn summary(r: &RunRecord) -> RunSummary {
    let result = match r.phase {
        Phase::Claimed => result::PENDING,
        Phase::Running => result::RUNNING,
        Phase::RetryPending { .. } => result::PENDING,
        Phase::Done(res) => res.as_str(),
    };
    RunSummary {
        run_id: r.run_id.clone(),
        scheduled_time: time(r.instant),
        start_time: r.start.map(time),
        completion_time: r.end.map(time),
        result: result.to_string(),
        attempts: r.attempt,
        node: (r.node != 0).then(|| r.node.to_string()),
        pod: r.pod.clone(),
        lateness_ms: r.lateness_ms(),
        message: r.message.clone(),
    }
}

/// The status fields the node owns. `now` only moves `nextScheduleTime`:
/// the next instant after both now and the fires already claimed.
pub fn compute(s: &ScheduleRecord, now: Millis) -> ScheduledJobStatus {
    ScheduledJobStatus {
        observed_generation: None,
        conditions: complete(s, now).into_iter().collect(),
        next_schedule_time: next_fire(s, now).map(time),
        last_schedule_time: s.last_schedule.map(time),
        last_successful_time: s.last_success.map(time),
        // The CRD bounds the list (an apply past it would be refused whole):
        // the oldest active runs are shown; `raftcronctl runs` has them all.
        active: s
            .active
            .iter()
            .filter(|r| r.phase.is_active())
            .take(raftcron_crds::limits::STATUS_ACTIVE_MAX)
            .map(summary)
            .collect(),
        last_run: s.history.front().map(summary),
        recent_runs: s.history.iter().map(summary).collect(),
    }
}

/// The `Complete` condition of a schedule with nothing left to do (a
/// one-shot that fired, `repeats` used up), dated by its last run's end so
/// that it does not change from one write to the next.
fn complete(
    s: &ScheduleRecord,
    now: Millis,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let schedule = crate::api::convert::parsed(&s.spec)?;
    let why = crate::scheduler::plan::completion(s, &schedule, now)?;
    let at = s
        .history
        .front()
        .and_then(|r| r.end)
        .unwrap_or(s.claimed_through);
    let at = k8s_openapi::jiff::Timestamp::from_millisecond(at).ok()?;
    Some(Condition {
        type_: names::COMPLETE.to_string(),
        status: "True".to_string(),
        reason: "Completed".to_string(),
        message: format!("complete: {why}; nothing more will run"),
        last_transition_time: Time(at),
        observed_generation: Some(s.generation),
    })
}

/// The part of a status read from the API server that the node owns, for
/// comparing with [`compute`] (a new leader does not rewrite unchanged ones).
pub fn owned(mut status: ScheduledJobStatus) -> ScheduledJobStatus {
    status.observed_generation = None;
    status.conditions.retain(|c| c.type_ == names::COMPLETE);
    status
}

/// The server-side apply body for the status subresource. `metadata.uid`
/// makes the apply a precondition: a ScheduledJob deleted and re-created
/// under the same name is refused, not written with the old one's runs.
pub fn apply_body(s: &ScheduleRecord, status: &ScheduledJobStatus) -> serde_json::Value {
    let mut status = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(map) = status.as_object_mut() {
        // Only the node's own condition, and no empty list or zero: the
        // forced apply would take those fields from the operator.
        let own: Vec<serde_json::Value> = map
            .get("conditions")
            .and_then(|c| c.as_array())
            .map(|c| {
                c.iter()
                    .filter(|c| c["type"] == names::COMPLETE)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if own.is_empty() {
            map.remove("conditions");
        } else {
            map.insert("conditions".into(), serde_json::Value::Array(own));
        }
        map.remove("observedGeneration");
    }
    json!({
        "apiVersion": raftcron_crds::names::API_VERSION,
        "kind": "ScheduledJob",
        "metadata": {"name": s.name, "namespace": s.namespace, "uid": s.uid},
        "status": status,
    })
}

/// The Event reason of a run result, for the results worth a Warning.
pub fn event_reason(result: FinalResult) -> Option<&'static str> {
    match result {
        FinalResult::Failed => Some(event::RUN_FAILED),
        FinalResult::TimedOut => Some(event::RUN_TIMED_OUT),
        FinalResult::Lost => Some(event::RUN_LOST),
        FinalResult::Missed => Some(event::RUN_MISSED),
        FinalResult::Succeeded | FinalResult::Skipped | FinalResult::Replaced => None,
    }
}

/// A Warning Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub run_id: String,
    pub reason: &'static str,
    pub note: String,
}

fn note(r: &RunRecord, result: FinalResult) -> String {
    let mut text = format!(
        "run {} scheduled for {} ended {}",
        r.run_id,
        time(r.instant),
        result.as_str()
    );
    if r.attempt > 0 {
        text.push_str(&format!(" after attempt {}", r.attempt));
    }
    if let Some(m) = r.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(m);
    }
    if text.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Finished runs of `s` that deserve an Event and are not in `reported`,
/// oldest first (the order they happened).
pub fn failures(s: &ScheduleRecord, reported: &HashSet<String>, now: Millis) -> Vec<Failure> {
    let mut out: Vec<Failure> = s
        .history
        .iter()
        .filter(|r| !reported.contains(&r.run_id))
        .filter(|r| r.end.is_none_or(|end| now - end <= EVENT_MAX_AGE_MS))
        .filter_map(|r| match r.phase {
            Phase::Done(res) => event_reason(res).map(|reason| Failure {
                run_id: r.run_id.clone(),
                reason,
                note: note(r, res),
            }),
            _ => None,
        })
        .collect();
    out.reverse();
    out
}

/// Run ids a status read from the API server shows as ended badly: the
/// writer that wrote it emitted their Events before writing it.
pub fn reported_in(status: &ScheduledJobStatus) -> impl Iterator<Item = &str> {
    let bad = [
        result::FAILED,
        result::TIMED_OUT,
        result::LOST,
        result::MISSED,
    ];
    status
        .last_run
        .iter()
        .chain(status.recent_runs.iter())
        .filter(move |r| bad.contains(&r.result.as_str()))
        .map(|r| r.run_id.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use super::*;
    use crate::sm::Counters;
    use crate::sm::runs::RunKind;

    const UID: &str = "6a1f3c2e-9b1d-4f7e-8a2b-0c5d7e9f1a3b";
    /// 2026-11-22T01:30:00.000Z
    const T: Millis = 1_795_311_000_000;

    fn record(schedule_yaml: &str) -> ScheduleRecord {
        let spec: raftcron_crds::ScheduledJobSpec =
            serde_yaml::from_str(schedule_yaml).expect("fixture parses");
        ScheduleRecord {
            namespace: "billing".into(),
            name: "nightly".into(),
            uid: UID.into(),
            generation: 1,
            spec: Arc::new(spec),
            created: T - 3_600_000,
            updated: T - 3_600_000,
            claimed_through: T,
            kubernetes: true,
            app_job: None,
            fired: 0,
            manual_seq: 0,
            counters: Counters::default(),
            active: Vec::new(),
            history: VecDeque::new(),
            last_schedule: None,
            last_success: None,
        }
    }

    const EVERY_MINUTE: &str = r#"
schedule: "0 * * * * *"
action: {http: {url: "http://target.example/run"}}
"#;

    fn condition() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        serde_json::from_value(serde_json::json!({
            "type": "Ready", "status": "True", "reason": "Registered", "message": "",
            "lastTransitionTime": "2026-11-22T01:30:00Z"
        }))
        .expect("condition")
    }

    fn run(instant: Millis, phase: Phase) -> RunRecord {
        let mut r = RunRecord::new(names::run_id(UID, instant), instant, RunKind::Scheduled, 3);
        r.phase = phase;
        if phase != Phase::Claimed {
            r.attempt = 1;
            r.counted_attempts = 1;
            r.node = 2;
            r.term = 3;
            r.first_start = Some(instant + 2);
            r.start = Some(instant + 2);
        }
        if phase.is_done() {
            r.end = Some(instant + 1_500);
        }
        r
    }

    #[test]
    fn the_status_shows_next_last_active_and_recent_runs_in_rfc3339_with_milliseconds() {
        let mut s = record(EVERY_MINUTE);
        s.last_schedule = Some(T);
        s.last_success = Some(T - 60_000 + 1_500);
        s.active = vec![run(T, Phase::Running), run(T + 60_000, Phase::Claimed)];
        let mut failed = run(T - 60_000 * 2, Phase::Done(FinalResult::Failed));
        failed.message = Some("HTTP 500".into());
        s.history = VecDeque::from(vec![
            run(T - 60_000, Phase::Done(FinalResult::Succeeded)),
            failed,
        ]);
        let status = compute(&s, T + 10_000);
        assert_eq!(
            status.next_schedule_time.as_deref(),
            Some("2026-11-22T01:31:00.000Z")
        );
        assert_eq!(
            status.last_schedule_time.as_deref(),
            Some("2026-11-22T01:30:00.000Z")
        );
        assert_eq!(
            status.last_successful_time.as_deref(),
            Some("2026-11-22T01:29:01.500Z")
        );
        assert_eq!(status.active.len(), 1, "a claimed run is not active");
        assert_eq!(status.active[0].result, "Running");
        assert_eq!(status.active[0].node.as_deref(), Some("2"));
        let last = status.last_run.as_ref().expect("last run");
        assert_eq!(last.result, "Succeeded");
        assert_eq!(last.scheduled_time, "2026-11-22T01:29:00.000Z");
        assert_eq!(last.start_time.as_deref(), Some("2026-11-22T01:29:00.002Z"));
        assert_eq!(
            last.completion_time.as_deref(),
            Some("2026-11-22T01:29:01.500Z")
        );
        assert_eq!(last.lateness_ms, Some(2));
        assert_eq!(last.attempts, 1);
        let results: Vec<&str> = status
            .recent_runs
            .iter()
            .map(|r| r.result.as_str())
            .collect();
        assert_eq!(results, ["Succeeded", "Failed"], "newest first");
        assert_eq!(status.recent_runs[1].message.as_deref(), Some("HTTP 500"));
        assert!(status.conditions.is_empty() && status.observed_generation.is_none());
    }

    #[test]
    fn the_active_list_stops_at_the_bound_the_crd_gives_it() {
        let mut s = record(EVERY_MINUTE);
        let max = raftcron_crds::limits::STATUS_ACTIVE_MAX as i64;
        s.active = (0..max + 5)
            .map(|i| run(T + i * 1000, Phase::Running))
            .collect();
        let status = compute(&s, T);
        assert_eq!(status.active.len(), max as usize);
        assert_eq!(
            status.active[0].scheduled_time,
            time(T),
            "the oldest are kept"
        );
    }

    #[test]
    fn a_run_waiting_for_its_retry_is_active_and_pending() {
        let mut s = record(EVERY_MINUTE);
        s.active = vec![run(T, Phase::RetryPending { at: T + 5_000 })];
        let status = compute(&s, T + 1_000);
        assert_eq!(status.active[0].result, "Pending");
    }

    #[test]
    fn the_next_schedule_time_is_after_the_fires_already_claimed_and_absent_when_suspended() {
        let mut s = record(EVERY_MINUTE);
        s.claimed_through = T + 60_000;
        let status = compute(&s, T + 1);
        assert_eq!(
            status.next_schedule_time.as_deref(),
            Some("2026-11-22T01:32:00.000Z")
        );
        let suspended = record(&format!("{EVERY_MINUTE}suspend: true\n"));
        assert_eq!(compute(&suspended, T).next_schedule_time, None);
    }

    #[test]
    fn a_one_shot_that_ran_has_no_next_run_and_a_complete_condition_only_the_node_applies() {
        let mut s = record(&format!(
            "dueTime: \"{}\"\naction: {{http: {{url: \"http://127.0.0.1:9/\"}}}}",
            time(T)
        ));
        s.claimed_through = T;
        s.fired = 1;
        s.history = VecDeque::from(vec![run(T, Phase::Done(FinalResult::Succeeded))]);
        let status = compute(&s, T + 5_000);
        assert_eq!(status.next_schedule_time, None);
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].type_, names::COMPLETE);
        assert_eq!(status.conditions[0].status, "True");
        // The same on the next write: nothing to rewrite.
        assert_eq!(compute(&s, T + 60_000), status);
        let mut with_ready = status.clone();
        with_ready.conditions.push(condition());
        let body = apply_body(&s, &with_ready);
        let conditions = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "the operator's Ready is not applied");
        assert_eq!(conditions[0]["type"], "Complete");
        // Still due: no condition.
        s.fired = 0;
        s.claimed_through = T - 1;
        assert!(compute(&s, T - 500).conditions.is_empty());
    }

    #[test]
    fn the_apply_body_pins_the_uid_and_never_carries_the_operators_fields() {
        let mut s = record(EVERY_MINUTE);
        s.history = VecDeque::from(vec![run(T, Phase::Done(FinalResult::Succeeded))]);
        let mut status = compute(&s, T);
        status.conditions = vec![condition()];
        status.observed_generation = Some(0);
        let body = apply_body(&s, &status);
        assert_eq!(body["metadata"]["uid"], UID);
        assert_eq!(body["metadata"]["namespace"], "billing");
        assert_eq!(body["kind"], "ScheduledJob");
        let st = body["status"].as_object().expect("status object");
        assert!(!st.contains_key("conditions") && !st.contains_key("observedGeneration"));
        assert_eq!(st["lastRun"]["result"], "Succeeded");
        assert_eq!(st["nextScheduleTime"], "2026-11-22T01:31:00.000Z");
        // Fields that are empty are left out, so the apply removes them.
        assert!(!st.contains_key("active"));
    }

    #[test]
    fn a_status_read_back_compares_equal_to_the_one_computed() {
        let mut s = record(EVERY_MINUTE);
        s.history = VecDeque::from(vec![run(T, Phase::Done(FinalResult::Failed))]);
        let status = compute(&s, T);
        let mut read: ScheduledJobStatus =
            serde_json::from_value(apply_body(&s, &status)["status"].clone()).expect("round trip");
        read.observed_generation = Some(4);
        read.conditions = vec![condition()];
        assert_eq!(owned(read), status);
    }

    #[test]
    fn each_failed_timed_out_lost_or_missed_run_is_reported_once() {
        let mut s = record(EVERY_MINUTE);
        let mut failed = run(T - 60_000, Phase::Done(FinalResult::Failed));
        failed.message = Some("HTTP 503 from http://target.example/run".into());
        s.history = VecDeque::from(vec![
            run(T, Phase::Done(FinalResult::Succeeded)),
            run(T - 30_000, Phase::Done(FinalResult::Skipped)),
            failed.clone(),
            run(T - 120_000, Phase::Done(FinalResult::TimedOut)),
            run(T - 180_000, Phase::Done(FinalResult::Lost)),
            run(T - 240_000, Phase::Done(FinalResult::Missed)),
        ]);
        let now = T + 2_000;
        let all = failures(&s, &HashSet::new(), now);
        let reasons: Vec<&str> = all.iter().map(|f| f.reason).collect();
        assert_eq!(
            reasons,
            ["RunMissed", "RunLost", "RunTimedOut", "RunFailed"]
        );
        let f = all.last().expect("the failed run");
        assert_eq!(f.run_id, failed.run_id);
        assert!(
            f.note.contains("ended Failed after attempt 1: HTTP 503"),
            "{}",
            f.note
        );
        let reported: HashSet<String> = all.iter().map(|f| f.run_id.clone()).collect();
        assert!(failures(&s, &reported, now).is_empty());
    }

    #[test]
    fn a_failure_older_than_the_event_window_is_not_reported_by_a_fresh_writer() {
        let mut s = record(EVERY_MINUTE);
        s.history = VecDeque::from(vec![run(T, Phase::Done(FinalResult::Failed))]);
        let end = T + 1_500;
        assert_eq!(
            failures(&s, &HashSet::new(), end + EVENT_MAX_AGE_MS).len(),
            1
        );
        assert!(failures(&s, &HashSet::new(), end + EVENT_MAX_AGE_MS + 1).is_empty());
    }

    #[test]
    fn runs_a_previous_writer_showed_as_failed_count_as_reported() {
        let mut s = record(EVERY_MINUTE);
        s.history = VecDeque::from(vec![
            run(T, Phase::Done(FinalResult::Succeeded)),
            run(T - 60_000, Phase::Done(FinalResult::Failed)),
        ]);
        let status = compute(&s, T);
        let seen: Vec<&str> = reported_in(&status).collect();
        assert_eq!(seen, [names::run_id(UID, T - 60_000)]);
    }

    #[test]
    fn a_long_message_is_cut_to_fit_an_event_note() {
        let mut r = run(T, Phase::Done(FinalResult::Failed));
        r.message = Some("é".repeat(2_000));
        let n = note(&r, FinalResult::Failed);
        assert!(n.len() <= MAX_NOTE, "{}", n.len());
    }
}
