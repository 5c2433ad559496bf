//! Property tests: `next_after` against a brute-force scan that walks the
//! time line second by second and reads each second's wall clock, with the
//! daylight-saving rules of the module docs written out independently.

use super::*;
use chrono::{Datelike, NaiveDateTime, TimeDelta, TimeZone};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Zones with and without DST, a 30-minute shift (Lord Howe), an offset
/// that is not whole hours (Kolkata, Kathmandu) and changes at midnight
/// (Santiago).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Asia/Kathmandu",
];

const DST_ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
];

/// A generated cron field of second, minute or hour.
#[derive(Clone, Debug)]
enum Field {
    Star,
    Step(u32),
    List(BTreeSet<u32>),
    Range(u32, u32),
}

impl Field {
    fn values(&self, max: u32) -> BTreeSet<u32> {
        match self {
            Field::Star => (0..=max).collect(),
            Field::Step(step) => (0..=max).step_by(*step as usize).collect(),
            Field::List(values) => values.clone(),
            Field::Range(low, high) => (*low..=*high).collect(),
        }
    }

    fn render(&self) -> String {
        match self {
            Field::Star => "*".to_string(),
            Field::Step(step) => format!("*/{step}"),
            Field::List(values) => values
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Field::Range(low, high) => format!("{low}-{high}"),
        }
    }

    fn is_single(&self) -> bool {
        matches!(self, Field::List(values) if values.len() == 1)
    }
}

fn field(max: u32) -> impl Strategy<Value = Field> {
    prop_oneof![
        1 => Just(Field::Star),
        2 => (2..=max / 2).prop_map(Field::Step),
        4 => proptest::collection::btree_set(0..=max, 1..=4).prop_map(Field::List),
        2 => (0..max).prop_flat_map(move |low| (Just(low), low + 1..=max))
            .prop_map(|(low, high)| Field::Range(low, high)),
    ]
}

fn single(max: u32) -> impl Strategy<Value = Field> {
    (0..=max).prop_map(|value| Field::List(BTreeSet::from([value])))
}

/// Second, minute and hour fields with `*` for the date fields, so every
/// pattern fires within about a day. A third are fixed-time patterns,
/// which move out of gaps and skip second passes.
#[derive(Clone, Debug)]
struct Pattern {
    second: Field,
    minute: Field,
    hour: Field,
    five_fields: bool,
}

impl Pattern {
    fn render(&self) -> String {
        if self.five_fields {
            format!("{} {} * * *", self.minute.render(), self.hour.render())
        } else {
            format!(
                "{} {} {} * * *",
                self.second.render(),
                self.minute.render(),
                self.hour.render()
            )
        }
    }

    fn is_fixed_time(&self) -> bool {
        self.second.is_single() && self.minute.is_single() && self.hour.is_single()
    }
}

fn pattern() -> impl Strategy<Value = Pattern> {
    let free = (field(59), field(59), field(23));
    let fixed = (single(59), single(59), single(23));
    (prop_oneof![2 => free, 1 => fixed], any::<bool>()).prop_map(
        |((second, minute, hour), five)| {
            // A 5-field pattern is second 0 of the same pattern.
            let five_fields =
                five && matches!(&second, Field::List(v) if v == &BTreeSet::from([0]));
            Pattern {
                second,
                minute,
                hour,
                five_fields,
            }
        },
    )
}

/// Matches a wall-clock time against the generated fields.
struct Matcher {
    seconds: BTreeSet<u32>,
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    fixed_time: bool,
}

impl Matcher {
    fn new(pattern: &Pattern) -> Matcher {
        Matcher {
            seconds: pattern.second.values(59),
            minutes: pattern.minute.values(59),
            hours: pattern.hour.values(23),
            fixed_time: pattern.is_fixed_time(),
        }
    }

    fn matches(&self, wall: NaiveDateTime) -> bool {
        use chrono::Timelike;
        self.seconds.contains(&wall.second())
            && self.minutes.contains(&wall.minute())
            && self.hours.contains(&wall.hour())
    }
}

fn wall(zone: Tz, second: i64) -> NaiveDateTime {
    DateTime::<Utc>::from_timestamp(second, 0)
        .expect("in range")
        .with_timezone(&zone)
        .naive_local()
}

/// The first fire after `after_ms` by the documented rules, found by
/// looking at every second for three days:
/// - an interval pattern fires at every instant whose wall clock matches;
/// - a fixed-time pattern fires at an instant whose wall clock matches if
///   that wall clock time happens for the first time (first pass), and at
///   the first instant after a gap that skipped a matching wall clock time.
fn brute_force_next(matcher: &Matcher, zone: Tz, after_ms: i64) -> Option<i64> {
    let start = after_ms.div_euclid(1000) + 1;
    let mut previous = wall(zone, start - 1);
    for second in start..start + 3 * 86_400 {
        let now = wall(zone, second);
        if matcher.fixed_time {
            let mut skipped = previous + TimeDelta::seconds(1);
            while skipped < now {
                if matcher.matches(skipped) {
                    return Some(second * 1000);
                }
                skipped += TimeDelta::seconds(1);
            }
            let first_pass = zone
                .from_local_datetime(&now)
                .earliest()
                .is_some_and(|earliest| earliest.timestamp() == second);
            if first_pass && matcher.matches(now) {
                return Some(second * 1000);
            }
        } else if matcher.matches(now) {
            return Some(second * 1000);
        }
        previous = now;
    }
    None
}

/// Instants (seconds) at which `zone` changes its offset in `year`.
fn transitions(zone: Tz, year: i32) -> Vec<i64> {
    let offset =
        |second: i64| wall(zone, second) - DateTime::from_timestamp(second, 0).unwrap().naive_utc();
    let mut found = Vec::new();
    let mut day = Utc
        .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    while DateTime::from_timestamp(day, 0).unwrap().year() == year {
        let (mut low, mut high) = (day, day + 86_400);
        if offset(low) != offset(high) {
            while high - low > 1 {
                let middle = low + (high - low) / 2;
                if offset(middle) == offset(low) {
                    low = middle;
                } else {
                    high = middle;
                }
            }
            found.push(high);
        }
        day += 86_400;
    }
    found
}

/// An instant in 2000–2040, or one within 30 hours of a transition of the
/// zone, so a good share of cases cross a gap or a repeated hour.
#[derive(Clone, Debug)]
struct Start {
    zone: &'static str,
    near_transition: bool,
    year: i32,
    pick: usize,
    offset_ms: i64,
    anywhere_ms: i64,
}

impl Start {
    fn instant_ms(&self) -> i64 {
        let zone: Tz = self.zone.parse().unwrap();
        let candidates = transitions(zone, self.year);
        if self.near_transition && !candidates.is_empty() {
            candidates[self.pick % candidates.len()] * 1000 + self.offset_ms
        } else {
            self.anywhere_ms
        }
    }
}

fn start() -> impl Strategy<Value = Start> {
    (
        proptest::sample::select(ZONES),
        proptest::bool::weighted(0.6),
        2000..2040i32,
        any::<usize>(),
        -30 * 3_600_000..30 * 3_600_000i64,
        946_684_800_000..2_208_988_800_000i64,
    )
        .prop_map(
            |(zone, near_transition, year, pick, offset_ms, anywhere_ms)| Start {
                zone,
                near_transition,
                year,
                pick,
                offset_ms,
                anywhere_ms,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn next_after_matches_a_second_by_second_scan(pattern in pattern(), start in start()) {
        let expr = pattern.render();
        let schedule = Schedule::parse(&expr, Some(start.zone)).unwrap();
        prop_assert_eq!(schedule.is_fixed_time(), pattern.is_fixed_time(), "{}", expr);
        let zone = schedule.time_zone();
        let after = start.instant_ms();
        let expected = brute_force_next(&Matcher::new(&pattern), zone, after);
        prop_assert!(expected.is_some(), "the scan window is too short for {}", expr);
        let actual = schedule.next_after(after);
        prop_assert_eq!(
            actual,
            expected,
            "{} in {} after {}: got {:?}, expected {:?}",
            expr,
            start.zone,
            show(after, zone),
            actual.map(|a| show(a, zone)),
            expected.map(|e| show(e, zone))
        );
    }

    #[test]
    fn consecutive_fires_match_the_scan_across_transitions(pattern in pattern(), start in start()) {
        // Walking fire to fire is how the scheduler uses next_after: each
        // step starts exactly on the previous fire.
        let expr = pattern.render();
        let schedule = Schedule::parse(&expr, Some(start.zone)).unwrap();
        let matcher = Matcher::new(&pattern);
        let zone = schedule.time_zone();
        let mut after = start.instant_ms();
        for _ in 0..6 {
            let expected = brute_force_next(&matcher, zone, after);
            let actual = schedule.next_after(after);
            prop_assert_eq!(actual, expected, "{} in {} after {}", expr, start.zone, show(after, zone));
            after = actual.unwrap();
        }
    }

    #[test]
    fn patterns_aimed_into_gaps_and_repeated_hours_match_the_scan(
        zone in proptest::sample::select(DST_ZONES),
        year in 2000..2040i32,
        pick in any::<usize>(),
        aim_s in -5_400..=5_400i64,
        lead_ms in 0..26 * 3_600_000i64,
        interval in any::<bool>(),
    ) {
        // Random patterns rarely name a wall-clock time that a transition
        // skips or repeats; these are built to, from the last second before
        // the change: up to 90 minutes either side of it covers every gap
        // and repeated range of these zones.
        let tz: Tz = zone.parse().unwrap();
        let candidates = transitions(tz, year);
        prop_assume!(!candidates.is_empty());
        let change = candidates[pick % candidates.len()];
        let aimed = wall(tz, change - 1) + TimeDelta::seconds(aim_s);
        use chrono::Timelike;
        let (s, m, h) = (aimed.second(), aimed.minute(), aimed.hour());
        let hours = if interval {
            Field::List(BTreeSet::from([h, (h + 12) % 24]))
        } else {
            Field::List(BTreeSet::from([h]))
        };
        let pattern = Pattern {
            second: Field::List(BTreeSet::from([s])),
            minute: Field::List(BTreeSet::from([m])),
            hour: hours,
            five_fields: false,
        };
        let expr = pattern.render();
        let schedule = Schedule::parse(&expr, Some(zone)).unwrap();
        let matcher = Matcher::new(&pattern);
        let mut after = change * 1000 - lead_ms;
        for _ in 0..3 {
            let expected = brute_force_next(&matcher, tz, after);
            let actual = schedule.next_after(after);
            prop_assert_eq!(
                actual,
                expected,
                "{} in {} after {}: got {:?}, expected {:?}",
                expr,
                zone,
                show(after, tz),
                actual.map(|a| show(a, tz)),
                expected.map(|e| show(e, tz))
            );
            after = actual.unwrap();
        }
    }

    #[test]
    fn every_fires_are_multiples_of_the_period_and_strictly_increasing(
        period_s in 1..200_000i64,
        after in -4_000_000_000_000..4_000_000_000_000i64,
        zone in proptest::sample::select(ZONES),
    ) {
        let schedule = Schedule::parse(&format!("@every {period_s}s"), Some(zone)).unwrap();
        let period = period_s * 1000;
        prop_assert_eq!(schedule.period_hint_ms(), Some(period));
        let fires = schedule.fires_between(after, after + 10 * period, 100);
        prop_assert_eq!(fires.len(), 10);
        prop_assert!(fires[0] > after && fires[0] - after <= period);
        for fire in &fires {
            prop_assert_eq!(fire.rem_euclid(period), 0);
        }
        prop_assert!(fires.windows(2).all(|w| w[1] - w[0] == period));
    }

    #[test]
    fn next_after_is_always_strictly_later(
        expr in prop_oneof![
            pattern().prop_map(|p| p.render()),
            (field(59), field(23), 1..=28u32, 1..=12u32, 0..=6u32).prop_map(
                |(minute, hour, dom, month, dow)| format!("{} {} {dom} {month} {dow}", minute.render(), hour.render())
            ),
            (1..100_000u32).prop_map(|s| format!("@every {s}s")),
            proptest::sample::select(&["@hourly", "@daily", "@weekly", "@monthly", "@yearly"][..])
                .prop_map(str::to_string),
        ],
        start in start(),
    ) {
        let schedule = Schedule::parse(&expr, Some(start.zone)).unwrap();
        let after = start.instant_ms();
        let next = schedule.next_after(after);
        prop_assert!(next.is_some(), "{} never fires after {}", expr, after);
        prop_assert!(next.unwrap() > after, "{} after {}: {:?}", expr, after, next);
        prop_assert_eq!(next.unwrap() % 1000, 0, "fire instants are whole seconds");
    }
}
