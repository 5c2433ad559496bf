//! A differential table against Kubernetes CronJob's parser.
//!
//! CronJob parses `spec.schedule` with robfig/cron v3 (`cron.ParseStandard`,
//! v3.0.1 as vendored by Kubernetes) and fires at `Schedule.Next` of the last
//! schedule time; a `timeZone` is applied as a `TZ=<zone>` prefix. Every
//! expectation below is what robfig v3.0.1 returns: `ParseStandard` then
//! `Next` applied repeatedly from the start instant, run outside this
//! repository. They agree with its source:
//!
//! - `parser.go`, `getRange`: `N/step` is `N-max/step` ("Special handling");
//!   an element whose range is `*` or `?` sets `starBit` unless its step is
//!   greater than 1; `getField` ORs the elements of a list, so one such
//!   element marks the whole field; names (`parseIntOrName`) are looked up
//!   lower-cased in the month and day-of-week bounds only; the bounds are
//!   those of `spec.go` (day-of-week 0-6).
//! - `spec.go`, `dayMatches`: day-of-month and day-of-week are ORed only when
//!   neither has the star bit, and ANDed otherwise.
//! - `spec.go`, `Next`: hours and minutes advance on the absolute time line
//!   in the zone, so an interval pattern fires at every real instant across
//!   a daylight-saving change, as here.
//!
//! What raftcron accepts beyond this table, or does differently, is listed
//! in docs/cron.md and pinned by `documented_differences_from_cronjob`.

use super::*;
use chrono::SecondsFormat;

/// (expression, time zone, start, robfig's next fires from the start).
const AGREES: &[(&str, Option<&str>, &str, &[&str])] = &[
    (
        "0 3/9 * * *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T03:00:00Z",
            "2026-01-01T12:00:00Z",
            "2026-01-01T21:00:00Z",
            "2026-01-02T03:00:00Z",
        ],
    ),
    (
        "5/15 * * * *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-01T00:05:00Z",
            "2026-01-01T00:20:00Z",
            "2026-01-01T00:35:00Z",
            "2026-01-01T00:50:00Z",
        ],
    ),
    (
        "0 0 10/7 * *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-10T00:00:00Z",
            "2026-01-17T00:00:00Z",
            "2026-01-24T00:00:00Z",
            "2026-01-31T00:00:00Z",
            "2026-02-10T00:00:00Z",
        ],
    ),
    (
        "0 0 1 2/3 *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-02-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "2026-08-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
        ],
    ),
    (
        "0 0 1 JAN/4 *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-05-01T00:00:00Z",
            "2026-09-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ],
    ),
    (
        "0 12 * * 1/2",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-01T12:00:00Z",
            "2026-06-03T12:00:00Z",
            "2026-06-05T12:00:00Z",
            "2026-06-08T12:00:00Z",
        ],
    ),
    (
        "0 12 * * MON/2",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-01T12:00:00Z",
            "2026-06-03T12:00:00Z",
            "2026-06-05T12:00:00Z",
            "2026-06-08T12:00:00Z",
        ],
    ),
    (
        "0 12 * * 3/1",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-03T12:00:00Z",
            "2026-06-04T12:00:00Z",
            "2026-06-05T12:00:00Z",
            "2026-06-06T12:00:00Z",
            "2026-06-10T12:00:00Z",
        ],
    ),
    (
        "0 0 1/1 * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-02T00:00:00Z",
            "2026-06-03T00:00:00Z",
            "2026-06-04T00:00:00Z",
        ],
    ),
    (
        "0 0 1,15/5 * *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-15T00:00:00Z",
            "2026-01-20T00:00:00Z",
            "2026-01-25T00:00:00Z",
            "2026-01-30T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-02-15T00:00:00Z",
        ],
    ),
    (
        "30 6 */1 * */2",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-02T06:30:00Z",
            "2026-06-04T06:30:00Z",
            "2026-06-06T06:30:00Z",
            "2026-06-07T06:30:00Z",
            "2026-06-09T06:30:00Z",
        ],
    ),
    (
        "0 0 */1 * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-08T00:00:00Z",
            "2026-06-15T00:00:00Z",
            "2026-06-22T00:00:00Z",
        ],
    ),
    (
        "0 0 13 * */1",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-13T00:00:00Z",
            "2026-07-13T00:00:00Z",
            "2026-08-13T00:00:00Z",
        ],
    ),
    (
        "0 0 ? * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-08T00:00:00Z",
            "2026-06-15T00:00:00Z",
            "2026-06-22T00:00:00Z",
        ],
    ),
    (
        "0 0 13 * ?",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-13T00:00:00Z",
            "2026-07-13T00:00:00Z",
            "2026-08-13T00:00:00Z",
        ],
    ),
    (
        "0 0 */1,5 * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-08T00:00:00Z",
            "2026-06-15T00:00:00Z",
            "2026-06-22T00:00:00Z",
        ],
    ),
    (
        "0 0 13 * 5,*/1",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-13T00:00:00Z",
            "2026-07-13T00:00:00Z",
            "2026-08-13T00:00:00Z",
        ],
    ),
    (
        "0 0 */2 * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-03T00:00:00Z",
            "2026-06-05T00:00:00Z",
            "2026-06-07T00:00:00Z",
            "2026-06-08T00:00:00Z",
            "2026-06-09T00:00:00Z",
        ],
    ),
    (
        "0 0 1-31 * MON",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-06-02T00:00:00Z",
            "2026-06-03T00:00:00Z",
            "2026-06-04T00:00:00Z",
        ],
    ),
    (
        "0 0 13 * 5",
        None,
        "2026-02-01T00:00:00Z",
        &[
            "2026-02-06T00:00:00Z",
            "2026-02-13T00:00:00Z",
            "2026-02-20T00:00:00Z",
            "2026-02-27T00:00:00Z",
        ],
    ),
    (
        "0 0 13 * FRI",
        None,
        "2026-02-01T00:00:00Z",
        &[
            "2026-02-06T00:00:00Z",
            "2026-02-13T00:00:00Z",
            "2026-02-20T00:00:00Z",
            "2026-02-27T00:00:00Z",
        ],
    ),
    (
        "? ? ? ? ?",
        None,
        "2026-01-01T00:00:00Z",
        &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"],
    ),
    (
        "*/61 * * * *",
        None,
        "2026-01-01T00:00:00Z",
        &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"],
    ),
    (
        "0 9-17/4 * * 1-5",
        None,
        "2026-06-05T00:00:00Z",
        &[
            "2026-06-05T09:00:00Z",
            "2026-06-05T13:00:00Z",
            "2026-06-05T17:00:00Z",
            "2026-06-08T09:00:00Z",
        ],
    ),
    (
        "0 9 * jan,jul mon",
        None,
        "2026-06-01T00:00:00Z",
        &[
            "2026-07-06T09:00:00Z",
            "2026-07-13T09:00:00Z",
            "2026-07-20T09:00:00Z",
        ],
    ),
    (
        "00 09 * * 01",
        None,
        "2026-06-01T00:00:00Z",
        &["2026-06-01T09:00:00Z", "2026-06-08T09:00:00Z"],
    ),
    (
        "0 0 31 * *",
        None,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-31T00:00:00Z",
            "2026-03-31T00:00:00Z",
            "2026-05-31T00:00:00Z",
        ],
    ),
    (
        "0 0 29 2 *",
        None,
        "2026-01-01T00:00:00Z",
        &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
    ),
    (
        "@hourly",
        None,
        "2026-05-17T13:14:15Z",
        &["2026-05-17T14:00:00Z", "2026-05-17T15:00:00Z"],
    ),
    (
        "@daily",
        None,
        "2026-05-17T13:14:15Z",
        &["2026-05-18T00:00:00Z", "2026-05-19T00:00:00Z"],
    ),
    (
        "@midnight",
        None,
        "2026-05-17T13:14:15Z",
        &["2026-05-18T00:00:00Z", "2026-05-19T00:00:00Z"],
    ),
    (
        "@weekly",
        None,
        "2026-05-17T13:14:15Z",
        &["2026-05-24T00:00:00Z", "2026-05-31T00:00:00Z"],
    ),
    (
        "@monthly",
        None,
        "2026-05-17T13:14:15Z",
        &["2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z"],
    ),
    (
        "@yearly",
        None,
        "2026-05-17T13:14:15Z",
        &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
    ),
    (
        "@annually",
        None,
        "2026-05-17T13:14:15Z",
        &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
    ),
    (
        "15 2 * * *",
        Some("America/New_York"),
        "2026-06-01T00:00:00Z",
        &["2026-06-01T06:15:00Z", "2026-06-02T06:15:00Z"],
    ),
    (
        "*/30 * * * *",
        Some("Europe/Berlin"),
        "2026-10-24T23:45:00Z",
        &[
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z",
        ],
    ),
    (
        "*/30 * * * *",
        Some("Europe/Berlin"),
        "2026-03-29T00:15:00Z",
        &[
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ],
    ),
];

/// (expression, robfig's error). Kubernetes refuses these at admission.
const REFUSED: &[(&str, &str)] = &[
    (
        "5-2 * * * *",
        "beginning of range (5) beyond end of range (2): 5-2",
    ),
    ("61 * * * *", "end of range (61) above maximum (59): 61"),
    ("0 24 * * *", "end of range (24) above maximum (23): 24"),
    ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("0 0 32 * *", "end of range (32) above maximum (31): 32"),
    ("0 0 * 13 *", "end of range (13) above maximum (12): 13"),
    (
        "*/0 * * * *",
        "step of range should be a positive number: */0",
    ),
    ("0 0 * * 8", "end of range (8) above maximum (6): 8"),
    (
        "0 30/9 * * *",
        "beginning of range (30) beyond end of range (23): 30/9",
    ),
    (
        "0 0 MON * *",
        "failed to parse int from MON: strconv.Atoi: parsing \"MON\": invalid syntax",
    ),
    (
        "0 0 * * JAN",
        "failed to parse int from JAN: strconv.Atoi: parsing \"JAN\": invalid syntax",
    ),
    (
        "0 0 1 MON *",
        "failed to parse int from MON: strconv.Atoi: parsing \"MON\": invalid syntax",
    ),
    (
        "0 MON * * *",
        "failed to parse int from MON: strconv.Atoi: parsing \"MON\": invalid syntax",
    ),
    ("1/2/3 * * * *", "too many slashes: 1/2/3"),
    ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
    (
        "/5 * * * *",
        "failed to parse int from : strconv.Atoi: parsing \"\": invalid syntax",
    ),
    (
        "a * * * *",
        "failed to parse int from a: strconv.Atoi: parsing \"a\": invalid syntax",
    ),
    ("@reboot", "unrecognized descriptor: @reboot"),
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    (
        "0 0 0 1 1 * 2030",
        "expected exactly 5 fields, found 7: [0 0 0 1 1 * 2030]",
    ),
    ("*,61 * * * *", "end of range (61) above maximum (59): 61"),
    ("0 0 */1,40 * *", "end of range (40) above maximum (31): 40"),
];

fn utc(instant_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(instant_ms)
        .expect("instant in range")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[test]
fn next_fire_times_agree_with_kubernetes_cronjob() {
    let mut wrong = Vec::new();
    for (expr, zone, from, expected) in AGREES {
        let got: Vec<String> = match Schedule::parse(expr, *zone) {
            Ok(schedule) => {
                let mut cursor = ms(from);
                let mut got = Vec::new();
                for _ in 0..expected.len() {
                    match schedule.next_after(cursor) {
                        Some(next) => {
                            got.push(utc(next));
                            cursor = next;
                        }
                        None => break,
                    }
                }
                got
            }
            Err(error) => vec![error.to_string()],
        };
        if got != *expected {
            wrong.push(format!(
                "{expr} ({zone:?}) from {from}: got {got:?}, CronJob {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn expressions_kubernetes_cronjob_refuses_are_refused() {
    let accepted: Vec<&str> = REFUSED
        .iter()
        .filter(|(expr, _)| Schedule::parse(expr, None).is_ok())
        .map(|(expr, _)| *expr)
        .collect();
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

/// raftcron's side of every difference docs/cron.md lists; robfig's side is
/// in the comment beside each.
#[test]
fn documented_differences_from_cronjob() {
    let next = |expr: &str, zone: Option<&str>, from: &str| {
        let schedule = Schedule::parse(expr, zone).unwrap_or_else(|e| panic!("{expr}: {e}"));
        utc(schedule.next_after(ms(from)).expect("fires"))
    };
    let refused = |expr: &str| Schedule::parse(expr, None).is_err();

    // A seconds field (robfig: "expected exactly 5 fields, found 6").
    assert_eq!(
        next("30 0 0 * * *", None, "2026-01-01T00:00:00Z"),
        "2026-01-01T00:00:30Z"
    );
    // Nicknames in any case (robfig: "unrecognized descriptor: @DAILY").
    assert_eq!(
        next("@DAILY", None, "2026-01-01T12:00:00Z"),
        "2026-01-02T00:00:00Z"
    );
    // 7 is Sunday, also in ranges (robfig: "end of range (7) above maximum (6)").
    // 2026-01-04 is a Sunday.
    assert_eq!(
        next("0 0 * * 7", None, "2026-01-01T00:00:00Z"),
        "2026-01-04T00:00:00Z"
    );
    assert_eq!(
        next("0 0 * * 5-7", None, "2026-01-03T00:00:00Z"),
        "2026-01-04T00:00:00Z"
    );
    // A range through Sunday by name (robfig: "beginning of range (5) beyond end of range (0)").
    assert_eq!(
        next("0 0 * * FRI-SUN", None, "2026-01-03T00:00:00Z"),
        "2026-01-04T00:00:00Z"
    );
    // croner's L, W, # and + (robfig: "failed to parse int from L").
    assert_eq!(
        next("0 0 L * *", None, "2026-02-01T00:00:00Z"),
        "2026-02-28T00:00:00Z"
    );
    assert_eq!(
        next("0 0 15W * *", None, "2026-02-01T00:00:00Z"),
        "2026-02-16T00:00:00Z"
    );
    assert_eq!(
        next("0 0 * * 5#L", None, "2026-01-01T00:00:00Z"),
        "2026-01-30T00:00:00Z"
    );
    assert_eq!(
        next("0 0 1 * +MON", None, "2026-01-01T00:00:00Z"),
        "2026-06-01T00:00:00Z"
    );
    // `*-5` (robfig: read as `*`, every minute), a field of empty elements
    // (robfig: accepted, never fires), and a schedule that never fires
    // (robfig: accepted; the CronJob controller reports an error at run
    // time). validate_spec refuses the last one.
    assert!(refused("*-5 * * * *"));
    assert!(refused(", * * * *"));
    // A sign in a number (robfig: strconv.Atoi reads "+5" as 5).
    assert!(refused("*/+5 * * * *"));
    assert!(refused("*/+1 * * * *"));
    assert!(Schedule::parse("0 0 30 2 *", None).unwrap().never_fires());
    // robfig searches five years ahead, so from 2097 it never finds the
    // next 29 February (2104); raftcron does.
    assert_eq!(
        next("0 0 29 2 *", None, "2097-01-01T00:00:00Z"),
        "2104-02-29T00:00:00Z"
    );
    // A fixed-time schedule across daylight-saving changes. robfig skips
    // 2026-03-29 (next 2026-03-30T00:30:00Z) and fires twice on
    // 2026-10-25 (00:30Z and 01:30Z).
    assert_eq!(
        next("30 2 * * *", Some("Europe/Berlin"), "2026-03-28T12:00:00Z"),
        "2026-03-29T01:00:00Z"
    );
    let fall_back = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        fall_back
            .fires_between(ms("2026-10-24T12:00:00Z"), ms("2026-10-25T12:00:00Z"), 10)
            .into_iter()
            .map(utc)
            .collect::<Vec<_>>(),
        ["2026-10-25T00:30:00Z"]
    );
    // `@every` counts from the Unix epoch (robfig: from the previous fire,
    // which CronJob starts at its creation time: 01:30:07 from 00:00:07).
    assert_eq!(
        next("@every 90m", None, "2026-01-01T00:00:07Z"),
        "2026-01-01T01:30:00Z"
    );
    // Durations: days and spaces accepted (robfig: `unknown unit "d"`),
    // fractions of a second refused (robfig: truncated, at least 1s).
    assert_eq!(
        next("@every 1d", None, "2026-01-01T00:00:07Z"),
        "2026-01-02T00:00:00Z"
    );
    assert_eq!(
        next("@every 1h 30m", None, "2026-01-01T00:00:07Z"),
        "2026-01-01T01:30:00Z"
    );
    assert!(refused("@every 500ms"));
    assert!(refused("@every 1.5s"));
}
