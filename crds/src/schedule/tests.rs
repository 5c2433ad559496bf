use super::*;

mod dst;
mod properties;
mod robfig;

/// Milliseconds since the epoch of an RFC 3339 time, so expectations read
/// as wall clock plus offset.
fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_millis()
}

/// An instant as RFC 3339 in the schedule's zone, for readable failures.
fn show(instant_ms: i64, zone: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(instant_ms)
        .expect("instant in range")
        .with_timezone(&zone)
        .to_rfc3339()
}

fn parse(expr: &str) -> Schedule {
    Schedule::parse(expr, None).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn parse_err(expr: &str) -> ScheduleError {
    Schedule::parse(expr, None).expect_err(expr)
}

fn fires(schedule: &Schedule, from: &str, until: &str) -> Vec<String> {
    schedule
        .fires_between(ms(from), ms(until), 100)
        .into_iter()
        .map(|fire| show(fire, schedule.time_zone()))
        .collect()
}

#[test]
fn five_field_patterns_fire_at_second_zero() {
    let schedule = parse("*/15 * * * *");
    assert_eq!(
        fires(&schedule, "2026-01-01T00:00:00Z", "2026-01-01T00:45:00Z"),
        [
            "2026-01-01T00:15:00+00:00",
            "2026-01-01T00:30:00+00:00",
            "2026-01-01T00:45:00+00:00"
        ]
    );
}

#[test]
fn six_field_patterns_put_seconds_first() {
    let schedule = parse("*/20 0 12 * * *");
    assert_eq!(
        fires(&schedule, "2026-01-01T11:59:59Z", "2026-01-01T12:01:00Z"),
        [
            "2026-01-01T12:00:00+00:00",
            "2026-01-01T12:00:20+00:00",
            "2026-01-01T12:00:40+00:00"
        ]
    );
}

#[test]
fn nicknames_fire_like_the_patterns_they_stand_for() {
    let from = ms("2026-05-17T13:14:15.500Z");
    for (nickname, pattern) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ] {
        let until = from + 2 * 366 * 86_400_000;
        assert_eq!(
            parse(nickname).fires_between(from, until, 5),
            parse(pattern).fires_between(from, until, 5),
            "{nickname}"
        );
    }
    assert_eq!(
        show(parse("@weekly").next_after(from).unwrap(), Tz::UTC),
        "2026-05-24T00:00:00+00:00",
        "weeks start on Sunday"
    );
}

#[test]
fn unknown_nicknames_are_refused_naming_them() {
    for expr in ["@reboot", "@daily 5", "@"] {
        let error = parse_err(expr);
        assert!(
            matches!(&error, ScheduleError::UnknownNickname { expression } if expression == expr),
            "{error:?}"
        );
        assert!(error.to_string().contains("@midnight"), "{error}");
    }
}

#[test]
fn seven_field_patterns_are_refused_saying_the_year_field_is_not_supported() {
    let error = parse_err("0 0 0 1 1 * 2030");
    assert_eq!(
        error.to_string(),
        "invalid cron expression \"0 0 0 1 1 * 2030\": it has 7 fields, and a year field is not supported; use 5 fields (m h dom mon dow) or 6 (s m h dom mon dow)"
    );
}

#[test]
fn patterns_with_too_few_or_too_many_fields_are_refused_with_the_count() {
    assert_eq!(
        parse_err("* * * *"),
        ScheduleError::FieldCount {
            expression: "* * * *".to_string(),
            count: 4
        }
    );
    assert!(
        parse_err("1 2 3 4 5 6 7 8")
            .to_string()
            .contains("8 fields")
    );
    assert_eq!(parse_err("   "), ScheduleError::Empty);
}

#[test]
fn invalid_fields_are_refused_naming_the_field_and_quoting_the_expression() {
    for (expr, expected) in [
        ("61 * * * *", "minute field \"61\": number out of bounds"),
        (
            "0 0 32 * *",
            "day-of-month field \"32\": number out of bounds",
        ),
        ("0 0 * 13 *", "month field \"13\": number out of bounds"),
        ("0 0 * * 8", "day-of-week field \"8\": number out of bounds"),
        ("*/0 * * * * *", "second field \"*/0\": step cannot be zero"),
        ("0 /10 * * * *", "minute field \"/10\": invalid step syntax"),
        (
            "0 30/9 * * *",
            "hour field \"30/9\": range is out of bounds",
        ),
        (
            "*,61 * * * *",
            "minute field \"*,61\": number out of bounds",
        ),
        ("0 , * * * *", "the minute field matches no value"),
        ("0 0 * * FOO", "day-of-week field"),
    ] {
        let error = parse_err(expr);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("invalid cron expression \"{expr}\": ")),
            "{text}"
        );
        assert!(text.contains(expected), "{expr}: {text}");
    }
}

#[test]
fn a_single_number_step_runs_from_that_number_to_the_end_of_the_field() {
    // Kubernetes CronJob (robfig/cron v3) reads `N/step` as `N-max/step`.
    assert_eq!(
        fires(
            &parse("0 3/9 * * *"),
            "2026-01-01T00:00:00Z",
            "2026-01-02T04:00:00Z"
        ),
        [
            "2026-01-01T03:00:00+00:00",
            "2026-01-01T12:00:00+00:00",
            "2026-01-01T21:00:00+00:00",
            "2026-01-02T03:00:00+00:00"
        ]
    );
    assert_eq!(
        fires(
            &parse("10/20 5/30 * * * *"),
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:36:00Z"
        ),
        [
            "2026-01-01T00:05:10+00:00",
            "2026-01-01T00:05:30+00:00",
            "2026-01-01T00:05:50+00:00",
            "2026-01-01T00:35:10+00:00",
            "2026-01-01T00:35:30+00:00",
            "2026-01-01T00:35:50+00:00"
        ]
    );
    // The day-of-week field ends at Saturday: 1/2 is Monday, Wednesday,
    // Friday, and not Sunday (7) as well. 2026-06-01 is a Monday.
    assert_eq!(
        fires(
            &parse("0 12 * * 1/2"),
            "2026-06-01T00:00:00Z",
            "2026-06-08T00:00:00Z"
        ),
        [
            "2026-06-01T12:00:00+00:00",
            "2026-06-03T12:00:00+00:00",
            "2026-06-05T12:00:00+00:00"
        ]
    );
    // Names start a step too.
    assert_eq!(
        fires(
            &parse("0 0 1 JAN/4 *"),
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z"
        ),
        [
            "2026-05-01T00:00:00+00:00",
            "2026-09-01T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00"
        ]
    );
}

#[test]
fn a_day_field_written_star_slash_one_is_unrestricted_so_the_other_day_field_decides() {
    // 2026-06-01 is a Monday. `*/1` in day-of-month sets robfig's star bit,
    // so day-of-week alone decides: Sundays, Tuesdays, Thursdays, Saturdays.
    assert_eq!(
        fires(
            &parse("30 6 */1 * */2"),
            "2026-06-01T00:00:00Z",
            "2026-06-08T00:00:00Z"
        ),
        [
            "2026-06-02T06:30:00+00:00",
            "2026-06-04T06:30:00+00:00",
            "2026-06-06T06:30:00+00:00",
            "2026-06-07T06:30:00+00:00"
        ]
    );
    // `*/1` in day-of-week: the 13th only, not also every day.
    assert_eq!(
        fires(
            &parse("0 0 13 * */1"),
            "2026-06-01T00:00:00Z",
            "2026-07-31T00:00:00Z"
        ),
        ["2026-06-13T00:00:00+00:00", "2026-07-13T00:00:00+00:00"]
    );
    // A list holding `*/1` or `?` is unrestricted as well.
    for expr in ["0 0 */1,5 * MON", "0 0 ? * MON", "0 0 ?/1 * MON"] {
        assert_eq!(
            fires(&parse(expr), "2026-06-01T00:00:00Z", "2026-06-22T00:00:00Z"),
            [
                "2026-06-08T00:00:00+00:00",
                "2026-06-15T00:00:00+00:00",
                "2026-06-22T00:00:00+00:00"
            ],
            "{expr}"
        );
    }
}

#[test]
fn a_day_field_with_a_larger_step_or_a_full_range_stays_restricted() {
    // Neither sets robfig's star bit, so a day matching either field fires.
    assert_eq!(
        fires(
            &parse("0 0 */2 * MON"),
            "2026-06-01T00:00:00Z",
            "2026-06-09T00:00:00Z"
        ),
        [
            "2026-06-03T00:00:00+00:00",
            "2026-06-05T00:00:00+00:00",
            "2026-06-07T00:00:00+00:00",
            "2026-06-08T00:00:00+00:00",
            "2026-06-09T00:00:00+00:00"
        ]
    );
    assert_eq!(
        parse("0 0 1-31 * MON").fires_between(
            ms("2026-06-01T00:00:00Z"),
            ms("2026-06-30T00:00:00Z"),
            100
        ),
        parse("0 0 * * *").fires_between(
            ms("2026-06-01T00:00:00Z"),
            ms("2026-06-30T00:00:00Z"),
            100
        ),
    );
}

#[test]
fn a_question_mark_means_star_in_every_field() {
    assert_eq!(
        parse("? ? ? ? ?").fires_between(0, 180_000, 10),
        parse("* * * * *").fires_between(0, 180_000, 10)
    );
}

#[test]
fn names_outside_their_own_field_are_refused() {
    for (expr, expected) in [
        (
            "0 0 MON * *",
            "day-of-month field \"MON\": the name \"MON\" belongs in the day-of-week field; this field takes numbers only",
        ),
        (
            "0 0 * * JAN",
            "day-of-week field \"JAN\": the name \"JAN\" belongs in the month field",
        ),
        (
            "0 0 1 MON-FRI *",
            "month field \"MON-FRI\": the name \"MON\" belongs in the day-of-week field",
        ),
    ] {
        let text = parse_err(expr).to_string();
        assert!(text.ends_with(expected), "{expr}: {text}");
    }
}

#[test]
fn tz_prefixes_are_refused_in_favour_of_the_time_zone_field() {
    for expr in ["TZ=UTC 0 * * * *", "CRON_TZ=Europe/Berlin 0 * * * *"] {
        assert_eq!(
            parse_err(expr).to_string(),
            format!(
                "invalid cron expression \"{expr}\": a TZ= or CRON_TZ= prefix is not supported; set spec.timeZone instead"
            )
        );
    }
}

#[test]
fn croner_extensions_are_accepted() {
    let last_day = parse("0 0 L * *");
    assert_eq!(
        show(
            last_day.next_after(ms("2028-02-01T00:00:00Z")).unwrap(),
            Tz::UTC
        ),
        "2028-02-29T00:00:00+00:00"
    );
    let last_friday = parse("0 0 * * 5#L");
    assert_eq!(
        show(
            last_friday.next_after(ms("2026-01-01T00:00:00Z")).unwrap(),
            Tz::UTC
        ),
        "2026-01-30T00:00:00+00:00"
    );
    let names = parse("0 9 * JAN MON-FRI");
    assert_eq!(
        show(
            names.next_after(ms("2026-01-03T00:00:00Z")).unwrap(),
            Tz::UTC
        ),
        "2026-01-05T09:00:00+00:00"
    );
}

#[test]
fn day_of_month_and_day_of_week_combine_with_or_unless_plus_is_given() {
    // 2026-06-01 is a Monday; so are the 8th and 15th.
    let either = parse("0 0 1,15 * MON");
    assert_eq!(
        fires(&either, "2026-05-31T00:00:00Z", "2026-06-15T00:00:00Z"),
        [
            "2026-06-01T00:00:00+00:00",
            "2026-06-08T00:00:00+00:00",
            "2026-06-15T00:00:00+00:00"
        ]
    );
    let both = parse("0 0 1,15 * +MON");
    assert_eq!(
        fires(&both, "2026-05-31T00:00:00Z", "2026-07-01T00:00:00Z"),
        ["2026-06-01T00:00:00+00:00", "2026-06-15T00:00:00+00:00"]
    );
}

#[test]
fn february_30th_never_fires() {
    let schedule = parse("0 0 30 2 *");
    assert_eq!(schedule.next_after(0), None);
    assert!(schedule.never_fires());
    assert!(schedule.fires_between(0, i64::MAX, 10).is_empty());
    assert_eq!(schedule.typical_interval_ms(0), None);
}

#[test]
fn february_29th_fires_in_leap_years_only() {
    let schedule = parse("0 0 29 2 *");
    assert!(!schedule.never_fires());
    assert_eq!(
        fires(&schedule, "2097-01-01T00:00:00Z", "2105-01-01T00:00:00Z"),
        ["2104-02-29T00:00:00+00:00"],
        "2100 is not a leap year"
    );
}

#[test]
fn next_after_is_strictly_after_with_millisecond_input() {
    let schedule = parse("0 0 * * * *");
    let fire = ms("2026-01-01T10:00:00Z");
    assert_eq!(schedule.next_after(fire - 1), Some(fire));
    assert_eq!(schedule.next_after(fire), Some(fire + 3_600_000));
    assert_eq!(schedule.next_after(fire + 1), Some(fire + 3_600_000));
    assert_eq!(schedule.next_after(fire - 999), Some(fire));
    assert_eq!(schedule.next_after(fire - 1000), Some(fire));
}

#[test]
fn instants_before_the_epoch_work() {
    let schedule = parse("0 30 12 * * *");
    assert_eq!(
        fires(
            &schedule,
            "1969-12-30T00:00:00.250Z",
            "1969-12-31T23:59:59Z"
        ),
        ["1969-12-30T12:30:00+00:00", "1969-12-31T12:30:00+00:00"]
    );
    let every = parse("@every 7s");
    assert_eq!(every.next_after(-1), Some(0));
    assert_eq!(every.next_after(-7000), Some(0));
    assert_eq!(every.next_after(-7001), Some(-7000));
}

#[test]
fn every_fires_on_multiples_of_the_period_since_the_epoch() {
    let schedule = parse("@every 1h30m");
    assert_eq!(schedule.period_hint_ms(), Some(5_400_000));
    assert_eq!(
        fires(&schedule, "2026-01-01T00:00:00Z", "2026-01-01T04:00:00Z"),
        ["2026-01-01T01:30:00+00:00", "2026-01-01T03:00:00+00:00"]
    );
    assert_eq!(parse("@EVERY   1h 30m").period_hint_ms(), Some(5_400_000));
}

#[test]
fn every_ignores_the_time_zone_but_still_checks_it() {
    let utc = parse("@every 1h");
    let kolkata = Schedule::parse("@every 1h", Some("Asia/Kolkata")).unwrap();
    let from = ms("2026-01-01T00:10:00Z");
    assert_eq!(utc.next_after(from), kolkata.next_after(from));
    assert_eq!(
        Schedule::parse("@every 1h", Some("Mars/Base")),
        Err(ScheduleError::UnknownTimeZone {
            name: "Mars/Base".to_string()
        })
    );
}

#[test]
fn every_refuses_sub_second_zero_and_calendar_durations() {
    for (expr, expected) in [
        ("@every 500ms", "whole number of seconds"),
        ("@every 1s 500ms", "whole number of seconds"),
        ("@every 0s", "at least 1s"),
        ("@every 0", "at least 1s"),
        ("@every 1month", "drifts against the calendar"),
        ("@every 1y", "drifts against the calendar"),
        ("@every", "needs a duration"),
        ("@every soon", "soon"),
        ("@every 10000000000000000s", "too long"),
    ] {
        let error = parse_err(expr);
        assert!(
            matches!(&error, ScheduleError::InvalidEvery { expression, .. } if expression == expr),
            "{error:?}"
        );
        assert!(error.to_string().contains(expected), "{expr}: {error}");
    }
}

#[test]
fn unknown_time_zones_are_refused_naming_them() {
    let error = Schedule::parse("0 * * * *", Some("Europe/Atlantis")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown time zone \"Europe/Atlantis\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    );
}

#[test]
fn no_time_zone_means_utc() {
    let schedule = parse("0 0 12 * * *");
    assert_eq!(schedule.time_zone(), Tz::UTC);
    assert_eq!(
        schedule.next_after(ms("2026-07-01T00:00:00Z")),
        Some(ms("2026-07-01T12:00:00Z"))
    );
    let berlin = Schedule::parse("0 0 12 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        berlin.next_after(ms("2026-07-01T00:00:00Z")),
        Some(ms("2026-07-01T12:00:00+02:00"))
    );
}

#[test]
fn fires_between_is_open_at_the_start_closed_at_the_end_and_limited() {
    let schedule = parse("*/10 * * * * *");
    let from = ms("2026-01-01T00:00:00Z");
    assert_eq!(
        schedule.fires_between(from, from + 30_000, 100),
        [from + 10_000, from + 20_000, from + 30_000]
    );
    assert_eq!(
        schedule.fires_between(from, from + 30_000, 2),
        [from + 10_000, from + 20_000]
    );
    assert!(schedule.fires_between(from, from + 9_999, 100).is_empty());
    assert!(schedule.fires_between(from, from - 10_000, 100).is_empty());
    assert!(schedule.fires_between(from, from + 30_000, 0).is_empty());
}

#[test]
fn typical_interval_is_the_gap_between_the_next_two_fires() {
    let weekdays = parse("0 9 * * MON-FRI");
    // From Wednesday: Thursday then Friday, one day apart.
    assert_eq!(
        weekdays.typical_interval_ms(ms("2026-01-07T12:00:00Z")),
        Some(86_400_000)
    );
    // From Thursday noon: Friday then Monday.
    assert_eq!(
        weekdays.typical_interval_ms(ms("2026-01-08T12:00:00Z")),
        Some(3 * 86_400_000)
    );
    assert_eq!(weekdays.period_hint_ms(), None);
    assert_eq!(parse("@every 45s").typical_interval_ms(0), Some(45_000));
}

#[test]
fn the_fixed_time_class_follows_croner() {
    for expr in [
        "0 30 2 * * *",
        "30 2 * * *",
        "@daily",
        "@yearly",
        "0 0 12 * * MON",
    ] {
        assert!(parse(expr).is_fixed_time(), "{expr}");
    }
    for expr in [
        "0 */15 * * * *",
        "* 30 2 * * *",
        "0 30 1,2 * * *",
        "0 30 1-2 * * *",
        "@hourly",
        "@every 1h",
    ] {
        assert!(!parse(expr).is_fixed_time(), "{expr}");
    }
}

#[test]
fn display_shows_the_expression_and_a_non_utc_zone() {
    assert_eq!(parse(" 0 * * * * ").to_string(), "0 * * * *");
    assert_eq!(
        Schedule::parse("0 30 2 * * *", Some("Europe/Berlin"))
            .unwrap()
            .to_string(),
        "0 30 2 * * * (Europe/Berlin)"
    );
    assert_eq!(
        Schedule::parse("@every 5m", Some("Europe/Berlin"))
            .unwrap()
            .to_string(),
        "@every 5m"
    );
}

#[test]
fn instants_beyond_what_chrono_represents_give_none_not_a_panic() {
    assert_eq!(parse("* * * * * *").next_after(i64::MAX), None);
    assert_eq!(parse("* * * * * *").next_after(i64::MIN), None);
    assert_eq!(parse("@every 1s").next_after(i64::MAX), None);
    assert_eq!(
        parse("@every 1s").next_after(i64::MIN),
        Some(i64::MIN / 1000 * 1000)
    );
}

#[test]
fn schedules_of_one_pattern_share_its_parse_and_errors_still_name_the_expression() {
    let a = Schedule::parse("*/5 * * * *", Some("Europe/Berlin")).unwrap();
    let b = Schedule::parse(" */5 * * * * ", None).unwrap();
    match (&a.kind, &b.kind) {
        (Kind::Cron(x), Kind::Cron(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
    // The shared parse changes no instant: each keeps its own zone.
    let t = ms("2026-03-01T10:02:00Z");
    assert_eq!(a.next_after(t), Some(ms("2026-03-01T10:05:00Z")));
    assert_eq!(b.next_after(t), Some(ms("2026-03-01T10:05:00Z")));
    let hourly = Schedule::parse("@hourly", None).unwrap();
    let written = Schedule::parse("0 * * * *", None).unwrap();
    match (&hourly.kind, &written.kind) {
        (Kind::Cron(x), Kind::Cron(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
    for _ in 0..2 {
        match Schedule::parse("61 * * * *", None) {
            Err(ScheduleError::InvalidCron { expression, .. }) => {
                assert_eq!(expression, "61 * * * *")
            }
            other => panic!("{other:?}"),
        }
    }
}
