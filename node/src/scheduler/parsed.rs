//! Parsed schedules, memoized by (expression, time zone) and bounded: a
//! parsed cron holds ~5 KB (croner keeps a bitmap of years up to 5000), too
//! much to keep per schedule at 100,000 schedules, and most are alike.

use std::collections::HashMap;
use std::sync::Arc;

use raftcron_crds::schedule::Schedule;

/// (expression, time zone, dueTime in ms): what a schedule is parsed from.
type SpecKey = (String, Option<String>, Option<i64>);

pub struct ParsedSchedules {
    memo: HashMap<SpecKey, Option<Arc<Schedule>>>,
    capacity: usize,
}

impl ParsedSchedules {
    pub fn new(capacity: usize) -> Self {
        Self {
            memo: HashMap::new(),
            capacity,
        }
    }

    /// The parsed schedule of a spec (`schedule`, `timeZone`, `dueTime`
    /// in ms), or `None` if the expression does not parse
    /// (validated on the way in: only a grammar change between releases
    /// gets there; the caller says so).
    pub fn get(&mut self, expr: &str, tz: Option<&str>, due: Option<i64>) -> Option<Arc<Schedule>> {
        let key = (expr.to_string(), tz.map(str::to_string), due);
        if let Some(p) = self.memo.get(&key) {
            return p.clone();
        }
        if self.memo.len() >= self.capacity {
            // Cheaper than LRU bookkeeping; re-parsing costs microseconds.
            self.memo.clear();
        }
        let p = Schedule::for_spec(expr, tz, due).ok().map(Arc::new);
        self.memo.insert(key, p.clone());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::ParsedSchedules;

    #[test]
    fn alike_expressions_share_one_parse_and_the_memo_stays_bounded() {
        let mut p = ParsedSchedules::new(2);
        let a = p.get("* * * * * *", None, None).unwrap();
        let b = p.get("* * * * * *", None, None).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert!(p.get("not cron", None, None).is_none());
        p.get("0 * * * * *", Some("Europe/Berlin"), None).unwrap();
        assert!(p.memo.len() <= 2);
    }
}
