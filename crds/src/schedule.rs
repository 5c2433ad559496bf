//! The schedule grammar: when a `ScheduledJob` fires.
//!
//! ```text
//!  spec.schedule ─┬─ "@every 30s" ──────────────► k · period since the Unix epoch (zone ignored)
//!  spec.timeZone ─┘  "0 30 2 * * *", "@daily" ──► croner on the wall clock of the IANA zone
//!                                                     │
//!                    next_after(ms) / fires_between ◄─┘  instants as i64 ms since the epoch, UTC
//! ```
//!
//! Pure: every function takes the time as an argument, so all nodes compute
//! the same instants and tests need no clock.
//!
//! # Grammar
//!
//! - Five fields `m h dom mon dow` fire at second 0; six fields put seconds
//!   first (`s m h dom mon dow`). A seventh (year) field is refused.
//! - Nicknames: `@yearly` = `@annually` = `0 0 1 1 *`, `@monthly` = `0 0 1 * *`,
//!   `@weekly` = `0 0 * * 0`, `@daily` = `@midnight` = `0 0 * * *`,
//!   `@hourly` = `0 * * * *`.
//! - `@every <duration>` with humantime units (`30s`, `1h30m`, `2d`): a whole
//!   number of seconds, at least one. Month and year units are refused because
//!   humantime reads them as averages (30.44 and 365.25 days) that drift
//!   against the calendar; use `@monthly`, `@yearly` or a cron expression.
//!   Instants are `k * period` since 1970-01-01T00:00:00Z, independent of the
//!   time zone, so `@every 1h` fires on the hour in UTC.
//! - Cron fields mean what they mean to Kubernetes CronJob's parser,
//!   robfig/cron v3: lists, ranges, `*/n`, `a-b/n` and `N/n` (= `N-max/n`)
//!   steps, `?` for `*`, names (`MON`, `jan`) in the month and day-of-week
//!   fields only. When both day-of-month and day-of-week are restricted, a
//!   day matching either one fires; a day field holding `*` or `?` with
//!   step 1 (`*`, `*/1`, `?`) is unrestricted, so the other one decides
//!   alone (`30 6 */1 * */2` fires on Sundays, Tuesdays, Thursdays and
//!   Saturdays). croner's extensions stay: `L`, `W`, `#`, 7 for Sunday and
//!   the `+` day-of-week prefix, which demands both day fields.
//!   `robfig_field` rewrites each field into croner's syntax; docs/cron.md
//!   lists every place where the grammar still differs from CronJob's.
//!
//! # Daylight saving time
//!
//! Cron fields are matched against the wall clock of the time zone. croner
//! sorts a pattern into one of two classes, and the class decides what
//! happens when the clock jumps. A pattern is *fixed-time* when its second,
//! minute and hour fields are each a single value (`0 30 2 * * *`,
//! `30 2 * * *`, `@daily`); every other pattern (a list, a range, a step or a
//! `*` in any of those three fields: `0 */15 * * * *`, `0 30 1,2 * * *`) is
//! an *interval* pattern.
//!
//! | transition | fixed-time pattern | interval pattern |
//! |---|---|---|
//! | spring forward (wall-clock times skipped) | fires once, at the first real instant after the gap (Berlin `0 30 2 * * *` on 2026-03-29 fires at 03:00 CEST) | times in the gap do not exist and are not fired; nothing is moved |
//! | fall back (wall-clock times repeated) | fires once, at the first pass (the earlier offset) | fires at every real instant, both passes (Berlin `0 */15 * * * *` fires 02:00…02:45 CEST and again 02:00…02:45 CET) |
//!
//! This is Vixie cron's rule with croner's classification, which is
//! stricter than Vixie's: Vixie counts any minute and hour fields without a
//! `*` as fixed time, so `30 1,2 * * *` runs at 03:00 after a gap there but
//! is skipped in the gap here. It is what croner 4.0.3 does with
//! `chrono_tz` zones: the tests in `schedule/tests/dst.rs` pin it in
//! Europe/Berlin, America/New_York, Australia/Sydney and
//! Australia/Lord_Howe (whose clock moves by 30 minutes), including starts
//! inside the repeated hour, and property tests in
//! `schedule/tests/properties.rs` compare `next_after` with a
//! second-by-second scan written from this table, around transitions of
//! those zones and of America/Santiago (which changes at midnight).
//! `@every` ignores the zone entirely.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// The nicknames the grammar accepts, with the 5-field pattern each stands for.
const NICKNAMES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// humantime units that are calendar averages rather than fixed lengths.
const DRIFTING_UNITS: &[&str] = &["months", "month", "M", "years", "year", "yr", "yrs", "y"];

/// A search origin from which every schedule that fires at all fires within
/// 400 years (the Gregorian calendar repeats every 400 years, and croner
/// searches up to the year 5000).
const NEVER_FIRES_PROBE_MS: i64 = 946_684_800_000; // 2000-01-01T00:00:00Z

/// Why a schedule or time zone was refused. Each message quotes the text
/// that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule is empty; expected a cron expression such as \"0 30 2 * * *\", a nickname such as \"@daily\" or \"@every 30s\""
    )]
    Empty,

    #[error(
        "invalid cron expression \"{expression}\": it has 7 fields, and a year field is not supported; use 5 fields (m h dom mon dow) or 6 (s m h dom mon dow)"
    )]
    YearField { expression: String },

    #[error(
        "invalid cron expression \"{expression}\": it has {count} {}; expected 5 (m h dom mon dow) or 6 (s m h dom mon dow)",
        if *count == 1 { "field" } else { "fields" }
    )]
    FieldCount { expression: String, count: usize },

    #[error("invalid cron expression \"{expression}\": {reason}")]
    InvalidCron { expression: String, reason: String },

    #[error(
        "unknown schedule nickname \"{expression}\"; expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or \"@every <duration>\""
    )]
    UnknownNickname { expression: String },

    #[error("invalid duration in \"{expression}\": {reason}")]
    InvalidEvery { expression: String, reason: String },

    #[error(
        "unknown time zone \"{name}\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    UnknownTimeZone { name: String },
}

/// A parsed schedule: the instants at which a job fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    time_zone: Tz,
    kind: Kind,
    /// `dueTime`: the first fire; the expression's instants follow after it.
    due_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Shared by every schedule of the same pattern ([`shared_cron`]).
    Cron(Arc<Cron>),
    Every {
        period_ms: i64,
    },
    /// No expression: only the due instant (a one-shot).
    Once,
}

/// Resolves an IANA time zone name; `None` means UTC.
pub fn parse_time_zone(name: Option<&str>) -> Result<Tz, ScheduleError> {
    match name {
        None => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| ScheduleError::UnknownTimeZone {
                name: name.to_string(),
            }),
    }
}

impl Schedule {
    /// Parses `spec.schedule` read in `spec.timeZone` (`None` = UTC).
    ///
    /// The time zone is checked for `@every` schedules too, although they
    /// ignore it: a misspelt zone is a mistake either way.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = parse_time_zone(time_zone)?;
        let expression = expr.trim();
        if expression.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let kind = if expression.starts_with('@') {
            parse_at(expression)?
        } else {
            Kind::Cron(shared_cron(expression, expression)?)
        };
        Ok(Schedule {
            expression: expression.to_string(),
            time_zone: tz,
            kind,
            due_ms: None,
        })
    }

    /// The schedule of a spec: `schedule` read in `timeZone`, first firing
    /// at `dueTime` when set; `dueTime` alone is a one-shot.
    pub fn for_spec(
        expr: &str,
        time_zone: Option<&str>,
        due_ms: Option<i64>,
    ) -> Result<Schedule, ScheduleError> {
        match due_ms {
            Some(due) if expr.trim().is_empty() => Ok(Schedule {
                expression: String::new(),
                time_zone: parse_time_zone(time_zone)?,
                kind: Kind::Once,
                due_ms: Some(due),
            }),
            due => Ok(Schedule {
                due_ms: due,
                ..Schedule::parse(expr, time_zone)?
            }),
        }
    }

    /// The `dueTime` instant, if the schedule has one.
    pub fn due_ms(&self) -> Option<i64> {
        self.due_ms
    }

    /// The expression as written, without surrounding whitespace.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone the cron fields are read in (UTC when none was given).
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// Whether croner treats this as a fixed-time pattern for daylight saving
    /// time (see the module docs). Always false for `@every`.
    pub fn is_fixed_time(&self) -> bool {
        match &self.kind {
            Kind::Cron(cron) => cron.determine_job_type() == croner::JobType::FixedTime,
            Kind::Every { .. } | Kind::Once => false,
        }
    }

    /// The first fire instant strictly after `after_ms`, or `None` when the
    /// schedule never fires again (for example `0 0 30 2 *`, February 30th)
    /// or the instant is beyond the year 5000.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after_ms = match self.due_ms {
            Some(due) if after_ms < due => return Some(due),
            Some(due) => after_ms.max(due),
            None => after_ms,
        };
        match &self.kind {
            Kind::Once => None,
            Kind::Every { period_ms } => after_ms
                .div_euclid(*period_ms)
                .checked_add(1)?
                .checked_mul(*period_ms),
            Kind::Cron(cron) => {
                // Fire instants are whole seconds, so the first one after a
                // fractional instant is the first one after its second.
                let start = DateTime::<Utc>::from_timestamp(after_ms.div_euclid(1000), 0)?
                    .with_timezone(&self.time_zone);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                next.timestamp().checked_mul(1000)
            }
        }
    }

    /// The fire instants in `(after_ms, until_ms]`, oldest first, at most `limit`.
    pub fn fires_between(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut fires = Vec::new();
        let mut cursor = after_ms;
        while fires.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until_ms => {
                    fires.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        fires
    }

    /// The period of an `@every` schedule; `None` for cron schedules, whose
    /// gaps vary (see [`Schedule::typical_interval_ms`]).
    pub fn period_hint_ms(&self) -> Option<i64> {
        match self.kind {
            Kind::Every { period_ms } => Some(period_ms),
            Kind::Cron(_) | Kind::Once => None,
        }
    }

    /// The gap between the next two fires after `from_ms`: a yardstick for
    /// lateness alerts on cron schedules, whose gaps vary (`0 9 * * 1-5`
    /// has one-day and three-day gaps). The period for `@every`.
    pub fn typical_interval_ms(&self, from_ms: i64) -> Option<i64> {
        if let Some(period) = self.period_hint_ms() {
            return Some(period);
        }
        let first = self.next_after(from_ms)?;
        let second = self.next_after(first)?;
        Some(second - first)
    }

    /// Whether the schedule can never fire, such as `0 0 30 2 *`. Parsing
    /// accepts these because each field is valid on its own; validation
    /// refuses them.
    pub fn never_fires(&self) -> bool {
        self.next_after(NEVER_FIRES_PROBE_MS).is_none()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(due) = self.due_ms {
            write!(f, "at {}", crate::names::rfc3339_ms(due))?;
            if self.expression.is_empty() {
                return Ok(());
            }
            f.write_str(", then ")?;
        }
        f.write_str(&self.expression)?;
        if self.time_zone != Tz::UTC && !matches!(self.kind, Kind::Every { .. }) {
            write!(f, " ({})", self.time_zone.name())?;
        }
        Ok(())
    }
}

fn parse_at(expression: &str) -> Result<Kind, ScheduleError> {
    let (word, rest) = match expression.find(char::is_whitespace) {
        Some(at) => (&expression[..at], expression[at..].trim()),
        None => (expression, ""),
    };
    if word.eq_ignore_ascii_case("@every") {
        return parse_every(expression, rest);
    }
    let pattern = NICKNAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(word) && rest.is_empty())
        .map(|(_, pattern)| *pattern)
        .ok_or_else(|| ScheduleError::UnknownNickname {
            expression: expression.to_string(),
        })?;
    Ok(Kind::Cron(shared_cron(expression, pattern)?))
}

fn parse_every(expression: &str, duration: &str) -> Result<Kind, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidEvery {
        expression: expression.to_string(),
        reason,
    };
    if duration.is_empty() {
        return Err(invalid(
            "@every needs a duration, for example \"@every 30s\" or \"@every 1h30m\"".to_string(),
        ));
    }
    if let Some(unit) = duration
        .split(|c: char| !c.is_alphabetic())
        .find(|word| DRIFTING_UNITS.contains(word))
    {
        return Err(invalid(format!(
            "the unit \"{unit}\" is an average length that drifts against the calendar; use @monthly, @yearly or a cron expression"
        )));
    }
    let parsed = humantime::parse_duration(duration).map_err(|e| invalid(e.to_string()))?;
    if parsed.subsec_nanos() != 0 {
        return Err(invalid(
            "the duration must be a whole number of seconds".to_string(),
        ));
    }
    if parsed.as_secs() == 0 {
        return Err(invalid("the duration must be at least 1s".to_string()));
    }
    let period_ms = i64::try_from(parsed.as_secs())
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .ok_or_else(|| invalid("the duration is too long".to_string()))?;
    Ok(Kind::Every { period_ms })
}

/// A cron field, with the bounds robfig/cron v3 (Kubernetes CronJob's
/// parser) gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

/// The fields of a 6-field pattern; a 5-field one lacks the first.
const FIELD_KINDS: [FieldKind; 6] = [
    FieldKind::Second,
    FieldKind::Minute,
    FieldKind::Hour,
    FieldKind::DayOfMonth,
    FieldKind::Month,
    FieldKind::DayOfWeek,
];

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl FieldKind {
    fn name(self) -> &'static str {
        match self {
            FieldKind::Second => "second",
            FieldKind::Minute => "minute",
            FieldKind::Hour => "hour",
            FieldKind::DayOfMonth => "day-of-month",
            FieldKind::Month => "month",
            FieldKind::DayOfWeek => "day-of-week",
        }
    }

    /// robfig's upper bound, which ends an `N/step` range. Day-of-week
    /// stops at 6 (Saturday) there, although croner also reads 7 as Sunday:
    /// `1/2` is Monday, Wednesday, Friday, not Sunday as well.
    fn max(self) -> u32 {
        match self {
            FieldKind::Second | FieldKind::Minute => 59,
            FieldKind::Hour => 23,
            FieldKind::DayOfMonth => 31,
            FieldKind::Month => 12,
            FieldKind::DayOfWeek => 6,
        }
    }

    fn takes_names(self) -> bool {
        matches!(self, FieldKind::Month | FieldKind::DayOfWeek)
    }
}

/// One field rewritten for croner.
struct Rewritten {
    /// What croner parses.
    field: String,
    /// The other elements of a list that also held a `*` element, which
    /// made the whole field `*`; croner still has to accept them.
    beside_star: Option<String>,
}

/// Rewrites one field so that croner reads it as robfig/cron v3 does
/// (`parser.go`, `getField` / `getRange`, v3.0.1):
///
/// - `N/step` means `N-max/step` ("Special handling: \"N/step\" means
///   \"N-max/step\""); croner refuses it.
/// - An element `*` or `?`, alone or with step 1 (`*/1`, `?/1`), sets
///   robfig's star bit, and a field with the star bit is unrestricted for
///   the day-of-month / day-of-week rule (`spec.go`, `dayMatches`: the
///   two are ORed only when neither has it). croner counts only a field
///   that is exactly `*` as unrestricted, so such a field becomes `*`: it
///   matches every value either way.
/// - `?` means `*` in every field, not only the two day fields.
/// - Month names belong to the month field and day names to the
///   day-of-week field; croner would replace them anywhere (`0 0 MON * *`
///   would be the 1st of the month).
///
/// croner's own extensions (`L`, `W`, `#`, the `+` prefix, 7 for Sunday)
/// pass through unchanged. See docs/cron.md for what still differs.
fn robfig_field(kind: FieldKind, text: &str) -> Result<Rewritten, String> {
    let (plus, body) = match text.strip_prefix('+') {
        Some(rest) if kind == FieldKind::DayOfWeek => ("+", rest),
        _ => ("", text),
    };
    check_names(kind, body)?;
    let mut star = false;
    let mut others = Vec::new();
    for element in body.split(',') {
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (element, None),
        };
        let range = if range == "?" { "*" } else { range };
        if range == "*" {
            match step {
                None => star = true,
                // Digits only: croner refuses a sign (`*/+1`) as it
                // refuses `*/+5`, which robfig reads as 5.
                Some(step)
                    if step.bytes().all(|b| b.is_ascii_digit()) && step.parse() == Ok(1u32) =>
                {
                    star = true
                }
                Some(step) => others.push(format!("*/{step}")),
            }
        } else if let Some(step) = step.filter(|_| is_single_value(kind, range)) {
            others.push(format!("{range}-{}/{step}", kind.max()));
        } else {
            others.push(element.to_string());
        }
    }
    let rest = others.join(",");
    Ok(if star {
        Rewritten {
            field: format!("{plus}*"),
            beside_star: others.iter().any(|e| !e.is_empty()).then_some(rest),
        }
    } else {
        Rewritten {
            field: format!("{plus}{rest}"),
            beside_star: None,
        }
    })
}

/// A number, or a name where the field takes names: the `N` of `N/step`.
fn is_single_value(kind: FieldKind, range: &str) -> bool {
    let upper = range.to_ascii_uppercase();
    (!range.is_empty() && range.bytes().all(|b| b.is_ascii_digit()))
        || (kind == FieldKind::Month && MONTH_NAMES.contains(&upper.as_str()))
        || (kind == FieldKind::DayOfWeek && DAY_NAMES.contains(&upper.as_str()))
}

fn check_names(kind: FieldKind, field: &str) -> Result<(), String> {
    for word in field
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        let upper = word.to_ascii_uppercase();
        let month = MONTH_NAMES.contains(&upper.as_str());
        let day = DAY_NAMES.contains(&upper.as_str());
        if (month && kind != FieldKind::Month) || (day && kind != FieldKind::DayOfWeek) {
            let hint = if kind.takes_names() {
                ""
            } else {
                "; this field takes numbers only"
            };
            let home = if month { "month" } else { "day-of-week" };
            return Err(format!(
                "the name \"{word}\" belongs in the {home} field{hint}"
            ));
        }
    }
    Ok(())
}

/// Patterns parsed before, at most this many (then forgotten at once, which
/// is cheaper than tracking use; re-parsing costs microseconds).
const PARSED_MAX: usize = 1024;

/// `parse_cron`, remembered by pattern: croner's `Cron` holds ~5 KB (a
/// bitmap of years) and parsing one was 6 % of the nodes' CPU under 64
/// writing clients (perf), since every upsert is validated and most repeat
/// an expression seen before. A parsed pattern depends on the pattern
/// alone; errors, which name the expression as written, are not kept.
fn shared_cron(expression: &str, pattern: &str) -> Result<Arc<Cron>, ScheduleError> {
    static PARSED: LazyLock<Mutex<HashMap<String, Arc<Cron>>>> = LazyLock::new(Default::default);
    let lock = || PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cron) = lock().get(pattern) {
        return Ok(cron.clone());
    }
    let cron = Arc::new(parse_cron(expression, pattern)?);
    let mut parsed = lock();
    if parsed.len() >= PARSED_MAX {
        parsed.clear();
    }
    parsed.insert(pattern.to_string(), cron.clone());
    Ok(cron)
}

/// Parses a 5- or 6-field pattern; `expression` is what the user wrote (it
/// differs from `pattern` for nicknames) and goes into error messages.
fn parse_cron(expression: &str, pattern: &str) -> Result<Cron, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidCron {
        expression: expression.to_string(),
        reason,
    };
    // robfig reads these prefixes, but Kubernetes refuses them in a new
    // CronJob; here the zone is spec.timeZone alone.
    let upper = pattern.to_ascii_uppercase();
    if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
        return Err(invalid(
            "a TZ= or CRON_TZ= prefix is not supported; set spec.timeZone instead".to_string(),
        ));
    }
    let written: Vec<&str> = pattern.split_whitespace().collect();
    match written.len() {
        5 | 6 => {}
        7 => {
            return Err(ScheduleError::YearField {
                expression: expression.to_string(),
            });
        }
        count => {
            return Err(ScheduleError::FieldCount {
                expression: expression.to_string(),
                count,
            });
        }
    }
    let kinds = &FIELD_KINDS[6 - written.len()..];
    let mut fields = Vec::with_capacity(written.len());
    let mut beside_star = Vec::new();
    for (i, (kind, text)) in kinds.iter().zip(&written).enumerate() {
        let rewritten = robfig_field(*kind, text)
            .map_err(|reason| invalid(format!("{} field \"{text}\": {reason}", kind.name())))?;
        if let Some(rest) = rewritten.beside_star {
            beside_star.push((i, rest));
        }
        fields.push(rewritten.field);
    }
    // croner puts second 0 in front of a 5-field pattern, so minute
    // patterns fire on the minute.
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    for (i, rest) in beside_star {
        let mut alone = vec!["*".to_string(); fields.len()];
        alone[i] = rest;
        if let Err(e) = parser.parse(&alone.join(" ")) {
            return Err(invalid(format!(
                "{} field \"{}\": {}",
                kinds[i].name(),
                written[i],
                croner_reason(&e)
            )));
        }
    }
    let cron = parser
        .parse(&fields.join(" "))
        .map_err(|e| invalid(explain_cron_error(&parser, kinds, &written, &fields, &e)))?;
    // A field such as "," parses to no values at all; croner would then
    // search second by second for a year before giving up.
    let empty = [
        ("second", &cron.pattern.seconds),
        ("minute", &cron.pattern.minutes),
        ("hour", &cron.pattern.hours),
        ("month", &cron.pattern.months),
    ];
    if let Some((name, _)) = empty.iter().find(|(_, field)| field.values().is_empty()) {
        return Err(invalid(format!("the {name} field matches no value")));
    }
    Ok(cron)
}

/// croner's message, lower-cased to read mid-sentence: "Number out of
/// bounds." becomes "number out of bounds"; "CronPattern contains …"
/// keeps its capital.
fn croner_reason(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    let reason = match error {
        CronError::ComponentError(msg)
        | CronError::InvalidPattern(msg)
        | CronError::IllegalCharacters(msg) => msg.clone(),
        other => other.to_string(),
    };
    let reason = reason.trim_end_matches('.');
    let first_word = reason.split(' ').next().unwrap_or_default();
    if first_word.chars().skip(1).all(char::is_lowercase) {
        let mut chars = reason.chars();
        chars
            .next()
            .map(|first| first.to_lowercase().chain(chars).collect())
            .unwrap_or_default()
    } else {
        reason.to_string()
    }
}

/// croner's messages ("Component error: Number out of bounds.") do not say
/// which field is wrong. Parsing each rewritten field on its own, with `*`
/// elsewhere, finds the first one croner refuses; the message quotes that
/// field as written.
fn explain_cron_error(
    parser: &CronParser,
    kinds: &[FieldKind],
    written: &[&str],
    rewritten: &[String],
    error: &croner::errors::CronError,
) -> String {
    let reason = croner_reason(error);
    let culprit = (0..rewritten.len()).find(|&i| {
        let alone: Vec<&str> = (0..rewritten.len())
            .map(|j| if j == i { rewritten[j].as_str() } else { "*" })
            .collect();
        parser.parse(&alone.join(" ")).is_err()
    });
    match culprit {
        Some(i) => format!("{} field \"{}\": {reason}", kinds[i].name(), written[i]),
        None => reason,
    }
}

#[cfg(test)]
mod tests;
