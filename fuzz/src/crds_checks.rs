//! The checks behind the `cron` and `scheduled_job` fuzz targets, on
//! raftcron-crds alone.
//!
//! Shared, as source, by the fuzz targets (through the `raftcron_fuzz` lib)
//! and by `crds/tests/fuzz_regressions.rs` (through `#[path]`), so a
//! committed crash input is replayed by `cargo test` with exactly the code
//! the fuzzer ran. A check returns quietly on input it refuses and panics on
//! a broken property: that panic is the bug report.

use raftcron_crds::schedule::Schedule;
use raftcron_crds::validate::{ValidSpec, validate_job, validate_spec};
use raftcron_crds::yaml::parse_documents;
use raftcron_crds::{ScheduledJob, ScheduledJobSpec};

/// 2026-01-01T00:00:00Z: the search start when the input names none.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// `cron` target. The input is text, one field per line:
///
/// ```text
/// <schedule expression>
/// <time zone, or an empty line for UTC>    (optional)
/// <search start, ms since the epoch>       (optional, default 2026-01-01)
/// ```
///
/// Parses the schedule as `spec.schedule` / `spec.timeZone` are parsed, then
/// walks a few fires and checks what the scheduler relies on: each fire is
/// strictly after the cursor, on a whole second (cron) or a multiple of the
/// period (`@every`), the walk is monotonic, and re-parsing the expression
/// gives the same schedule.
pub fn cron(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let expr = lines.next().unwrap_or_default();
    let zone = lines.next().filter(|z| !z.is_empty());
    let start = match lines.next() {
        Some(ms) => match ms.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => return,
        },
        None => DEFAULT_START_MS,
    };
    let Ok(schedule) = Schedule::parse(expr, zone) else {
        return;
    };
    check_schedule(&schedule, zone, start);
}

/// The properties of one parsed schedule, searched from `start`.
pub fn check_schedule(schedule: &Schedule, zone: Option<&str>, start: i64) {
    assert_eq!(schedule.expression(), schedule.expression().trim());
    let _ = schedule.to_string();
    let _ = schedule.is_fixed_time();
    let again = Schedule::parse(schedule.expression(), zone)
        .expect("the expression of a parsed schedule parses again");
    assert_eq!(&again, schedule, "re-parsing gives another schedule");

    let period = schedule.period_hint_ms();
    if let Some(period) = period {
        assert!(period >= 1000 && period % 1000 == 0, "period {period} ms");
    }
    let on_grid = |at: i64| match period {
        Some(period) => at.rem_euclid(period) == 0,
        None => at.rem_euclid(1000) == 0,
    };

    let mut cursor = start;
    let mut fires = Vec::new();
    for _ in 0..4 {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        assert!(
            next > cursor,
            "next_after({cursor}) = {next} is not after it"
        );
        assert!(on_grid(next), "fire {next} is off the grid");
        // Nothing fires between the cursor and `next`, so asking again from
        // just before `next` must find `next` itself.
        assert_eq!(
            schedule.next_after(next - 1),
            Some(next),
            "next_after({}) skips or invents a fire before {next} (cursor {cursor})",
            next - 1
        );
        fires.push(next);
        cursor = next;
    }
    // Monotonic: a later cursor never finds an earlier fire.
    if let (Some(a), Some(b)) = (
        schedule.next_after(start),
        start
            .checked_add(1000)
            .and_then(|later| schedule.next_after(later)),
    ) {
        assert!(a <= b, "next_after({start}) = {a} > next_after(+1s) = {b}");
    }

    let until = start.saturating_add(3 * 86_400_000);
    let window = schedule.fires_between(start, until, 8);
    assert!(window.len() <= 8);
    for pair in window.windows(2) {
        assert!(
            pair[0] < pair[1],
            "fires_between not increasing: {window:?}"
        );
    }
    for at in &window {
        assert!(
            *at > start && *at <= until,
            "{at} outside ({start}, {until}]"
        );
    }
    // The window is the walk above, cut at `until`.
    let walked: Vec<i64> = fires.iter().copied().filter(|at| *at <= until).collect();
    assert_eq!(
        &window[..walked.len().min(window.len())],
        &walked[..walked.len().min(window.len())]
    );

    if let Some(gap) = schedule.typical_interval_ms(start) {
        assert!(gap > 0, "typical interval {gap}");
    }
}

/// `scheduled_job` target: the input is YAML or JSON text, read the three
/// ways raftcron reads a ScheduledJob:
///
/// 1. `parse_documents` (`raftcronctl apply -f`, `raftcron-node local`),
///    whose every job must pass `validate_job` again;
/// 2. a JSON `ScheduledJob` (what the operator's watch decodes), then
///    `validate_job`;
/// 3. a JSON `ScheduledJobSpec` (`UpsertRequest.spec_json` on the node), then
///    `validate_spec`.
///
/// Every spec that validates must survive what the operator and raftcronctl
/// do with it: `serde_json::to_string(spec)`, parsed back by the node into an
/// equal spec that validates again, to the same schedule.
pub fn scheduled_job(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_documents(text, "fuzz.yaml") {
        Ok(jobs) => {
            for job in &jobs {
                let valid = validate_job(job).unwrap_or_else(|e| {
                    panic!("parse_documents returned a job that validate_job refuses: {e}")
                });
                assert!(job.metadata.namespace.is_some(), "namespace not defaulted");
                check_valid_spec(&job.spec, &valid);
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if let Ok(job) = serde_json::from_str::<ScheduledJob>(text)
        && let Ok(valid) = validate_job(&job)
    {
        check_valid_spec(&job.spec, &valid);
    }
    if let Ok(spec) = serde_json::from_str::<ScheduledJobSpec>(text) {
        match validate_spec(&spec) {
            Ok(valid) => check_valid_spec(&spec, &valid),
            Err(errors) => {
                assert!(!errors.0.is_empty(), "refused with no error");
                let _ = errors.to_string();
            }
        }
    }
}

/// What a valid spec must survive on its way from the operator (or
/// raftcronctl) to the node.
pub fn check_valid_spec(spec: &ScheduledJobSpec, valid: &ValidSpec) {
    let json = serde_json::to_string(spec).expect("a valid spec serializes to JSON");
    let back: ScheduledJobSpec = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the node cannot parse the JSON of a valid spec: {e}: {json}"));
    assert_eq!(&back, spec, "JSON round trip changed the spec: {json}");
    let again = validate_spec(&back)
        .unwrap_or_else(|e| panic!("valid spec refused after a JSON round trip: {e}: {json}"));
    assert_eq!(again.action, valid.action);
    assert_eq!(again.schedule, valid.schedule);
    assert!(
        !valid.schedule.never_fires(),
        "validation accepted a schedule that never fires"
    );
    check_schedule(&valid.schedule, spec.time_zone.as_deref(), DEFAULT_START_MS);
}
