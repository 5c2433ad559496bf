//! Daylight saving time, zone by zone: the spring-forward gap and the
//! repeated fall-back hour, for a fixed-time and an interval pattern.
//! Expectations are wall clock plus the offset in force, so the pass of a
//! repeated hour shows in the offset.

use super::*;

fn in_zone(expr: &str, zone: &str) -> Schedule {
    Schedule::parse(expr, Some(zone)).unwrap_or_else(|e| panic!("{expr} in {zone}: {e}"))
}

#[test]
fn berlin_fixed_time_in_the_spring_forward_gap_fires_at_the_first_instant_after_it() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not happen.
    for expr in ["0 30 2 * * *", "30 2 * * *"] {
        let schedule = in_zone(expr, "Europe/Berlin");
        assert_eq!(
            fires(
                &schedule,
                "2026-03-27T12:00:00+01:00",
                "2026-03-30T12:00:00+02:00"
            ),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ],
            "{expr}"
        );
    }
}

#[test]
fn berlin_fixed_time_in_the_repeated_hour_fires_once_at_the_first_pass() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00–02:59 happens twice.
    let schedule = in_zone("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(
            &schedule,
            "2026-10-24T12:00:00+02:00",
            "2026-10-26T12:00:00+01:00"
        ),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
}

#[test]
fn berlin_interval_pattern_skips_the_gap_and_moves_nothing() {
    let schedule = in_zone("0 */15 * * * *", "Europe/Berlin");
    assert_eq!(
        fires(
            &schedule,
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:30:00+02:00"
        ),
        [
            "2026-03-29T01:45:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:15:00+02:00",
            "2026-03-29T03:30:00+02:00"
        ]
    );
}

#[test]
fn berlin_interval_pattern_fires_in_both_passes_of_the_repeated_hour() {
    let schedule = in_zone("0 */15 * * * *", "Europe/Berlin");
    assert_eq!(
        fires(
            &schedule,
            "2026-10-25T01:50:00+02:00",
            "2026-10-25T03:00:00+01:00"
        ),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:15:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:45:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:15:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T02:45:00+01:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
    // Real time between fires stays 15 minutes across the change.
    let instants = schedule.fires_between(
        ms("2026-10-25T01:50:00+02:00"),
        ms("2026-10-25T03:00:00+01:00"),
        100,
    );
    assert!(instants.windows(2).all(|w| w[1] - w[0] == 900_000));
}

#[test]
fn a_start_inside_the_repeated_hour_keeps_the_documented_behaviour() {
    let fixed = in_zone("0 30 2 * * *", "Europe/Berlin");
    let interval = in_zone("0 */15 * * * *", "Europe/Berlin");
    let next = |schedule: &Schedule, from: &str| {
        show(schedule.next_after(ms(from)).unwrap(), schedule.time_zone())
    };
    // On the second pass, before 02:30 comes round again: no second fire.
    assert_eq!(
        next(&fixed, "2026-10-25T02:10:00+01:00"),
        "2026-10-26T02:30:00+01:00"
    );
    // On the first pass, after 02:30: the next one is tomorrow.
    assert_eq!(
        next(&fixed, "2026-10-25T02:40:00+02:00"),
        "2026-10-26T02:30:00+01:00"
    );
    // A millisecond before the first pass's 02:30.
    assert_eq!(
        next(&fixed, "2026-10-25T02:29:59.999+02:00"),
        "2026-10-25T02:30:00+02:00"
    );
    // Interval patterns continue through the second pass.
    assert_eq!(
        next(&interval, "2026-10-25T02:10:00+01:00"),
        "2026-10-25T02:15:00+01:00"
    );
    assert_eq!(
        next(&interval, "2026-10-25T02:59:59+02:00"),
        "2026-10-25T02:00:00+01:00"
    );
    assert_eq!(
        next(&interval, "2026-10-25T02:45:00.001+01:00"),
        "2026-10-25T03:00:00+01:00"
    );
}

#[test]
fn the_instant_a_gap_fire_was_moved_to_is_not_fired_again() {
    let fixed = in_zone("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fixed.next_after(ms("2026-03-29T03:00:00+02:00")),
        Some(ms("2026-03-30T02:30:00+02:00"))
    );
}

#[test]
fn lists_of_hours_are_interval_patterns_so_their_gap_times_are_skipped() {
    let schedule = in_zone("0 30 1,2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(
            &schedule,
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T02:00:00+02:00"
        ),
        ["2026-03-29T01:30:00+01:00", "2026-03-30T01:30:00+02:00"]
    );
    assert_eq!(
        fires(
            &schedule,
            "2026-10-25T00:00:00+02:00",
            "2026-10-25T12:00:00+01:00"
        ),
        [
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00"
        ]
    );
}

#[test]
fn new_york_fixed_time_moves_out_of_the_gap_and_runs_once_in_the_repeated_hour() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT.
    let gap = in_zone("0 30 2 * * *", "America/New_York");
    assert_eq!(
        fires(
            &gap,
            "2026-03-07T12:00:00-05:00",
            "2026-03-09T12:00:00-04:00"
        ),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00–01:59 happens twice.
    let overlap = in_zone("0 30 1 * * *", "America/New_York");
    assert_eq!(
        fires(
            &overlap,
            "2026-10-31T12:00:00-04:00",
            "2026-11-02T12:00:00-05:00"
        ),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn new_york_interval_pattern_skips_the_gap_and_repeats_the_hour() {
    let schedule = in_zone("0 */15 * * * *", "America/New_York");
    assert_eq!(
        fires(
            &schedule,
            "2026-03-08T01:40:00-05:00",
            "2026-03-08T03:15:00-04:00"
        ),
        [
            "2026-03-08T01:45:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:15:00-04:00"
        ]
    );
    assert_eq!(
        fires(
            &schedule,
            "2026-11-01T00:50:00-04:00",
            "2026-11-01T02:00:00-05:00"
        ),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:15:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
}

#[test]
fn sydney_in_the_southern_hemisphere_springs_forward_in_october_and_falls_back_in_april() {
    // 2026-10-04: 02:00 AEST becomes 03:00 AEDT.
    let fixed = in_zone("0 30 2 * * *", "Australia/Sydney");
    assert_eq!(
        fires(
            &fixed,
            "2026-10-03T12:00:00+10:00",
            "2026-10-05T12:00:00+11:00"
        ),
        ["2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"]
    );
    // 2026-04-05: 03:00 AEDT becomes 02:00 AEST; 02:00–02:59 happens twice.
    assert_eq!(
        fires(
            &fixed,
            "2026-04-04T12:00:00+11:00",
            "2026-04-06T12:00:00+10:00"
        ),
        ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]
    );
    let interval = in_zone("0 */15 * * * *", "Australia/Sydney");
    assert_eq!(
        fires(
            &interval,
            "2026-10-04T01:40:00+10:00",
            "2026-10-04T03:15:00+11:00"
        ),
        [
            "2026-10-04T01:45:00+10:00",
            "2026-10-04T03:00:00+11:00",
            "2026-10-04T03:15:00+11:00"
        ]
    );
    assert_eq!(
        fires(
            &interval,
            "2026-04-05T02:20:00+11:00",
            "2026-04-05T02:45:00+10:00"
        ),
        [
            "2026-04-05T02:30:00+11:00",
            "2026-04-05T02:45:00+11:00",
            "2026-04-05T02:00:00+10:00",
            "2026-04-05T02:15:00+10:00",
            "2026-04-05T02:30:00+10:00",
            "2026-04-05T02:45:00+10:00"
        ]
    );
}

#[test]
fn lord_howe_shifts_by_thirty_minutes_and_the_same_rules_hold() {
    // 2026-10-04: 02:00 (+10:30) becomes 02:30 (+11:00); 02:00–02:29 does not happen.
    let in_gap = in_zone("0 15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(
            &in_gap,
            "2026-10-03T12:00:00+10:30",
            "2026-10-05T12:00:00+11:00"
        ),
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
    // 02:30 itself exists, so a 02:30 job fires on time, at the same instant.
    let after_gap = in_zone("0 30 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        after_gap.next_after(ms("2026-10-04T00:00:00+10:30")),
        Some(ms("2026-10-04T02:30:00+11:00"))
    );
    // 2026-04-05: 02:00 (+11:00) becomes 01:30 (+10:30); 01:30–01:59 happens twice.
    let in_overlap = in_zone("0 45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(
            &in_overlap,
            "2026-04-04T12:00:00+11:00",
            "2026-04-06T12:00:00+10:30"
        ),
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
    );
    let interval = in_zone("0 */15 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(
            &interval,
            "2026-10-04T01:40:00+10:30",
            "2026-10-04T03:00:00+11:00"
        ),
        [
            "2026-10-04T01:45:00+10:30",
            "2026-10-04T02:30:00+11:00",
            "2026-10-04T02:45:00+11:00",
            "2026-10-04T03:00:00+11:00"
        ]
    );
    assert_eq!(
        fires(
            &interval,
            "2026-04-05T01:20:00+11:00",
            "2026-04-05T02:15:00+10:30"
        ),
        [
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30",
            "2026-04-05T02:15:00+10:30"
        ]
    );
}

#[test]
fn every_runs_through_transitions_unchanged() {
    let schedule = in_zone("@every 20m", "Europe/Berlin");
    let instants = schedule.fires_between(
        ms("2026-10-25T01:50:00+02:00"),
        ms("2026-10-25T03:00:00+01:00"),
        100,
    );
    assert_eq!(instants.len(), 7);
    assert!(instants.windows(2).all(|w| w[1] - w[0] == 1_200_000));
}
