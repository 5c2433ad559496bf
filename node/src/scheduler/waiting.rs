//! Deliveries of `app` actions waiting for a free replica: the order they
//! go out in when replicas free up. Pure.
//!
//! Highest priority first, oldest first within a priority; a delivery that
//! has waited is promoted one level per [`AGE_STEP_MS`], so under sustained
//! `High` load a `Low` one waits at most two steps before it competes as a
//! `High` one, and then wins on age: nothing starves.

use raftcron_crds::Priority;

use crate::sm::Millis;

/// Waiting this long raises a delivery's priority by one level.
pub const AGE_STEP_MS: Millis = 5_000;

/// What orders one waiting delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rank {
    pub priority: Priority,
    /// When it first had to wait (now, for one that has not waited yet).
    pub since: Millis,
    /// When it came due: its instant, or its retry time.
    pub due: Millis,
}

fn level(p: Priority) -> i64 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

/// The key to sort by, smallest first: the effective priority (aged)
/// descending, then the oldest due.
pub fn order(r: &Rank, now: Millis) -> (i64, Millis) {
    let aged = level(r.priority) + (now - r.since).max(0) / AGE_STEP_MS;
    (-aged, r.due)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(priority: Priority, since: Millis, due: Millis) -> Rank {
        Rank {
            priority,
            since,
            due,
        }
    }

    fn sorted(mut v: Vec<(&'static str, Rank)>, now: Millis) -> Vec<&'static str> {
        v.sort_by_key(|(_, r)| order(r, now));
        v.into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn higher_priorities_go_first_and_the_oldest_within_a_priority() {
        let now = 1_000;
        let v = vec![
            ("low", rank(Priority::Low, now, 10)),
            ("normal-late", rank(Priority::Normal, now, 30)),
            ("high", rank(Priority::High, now, 50)),
            ("normal-early", rank(Priority::Normal, now, 20)),
        ];
        assert_eq!(
            sorted(v, now),
            vec!["high", "normal-early", "normal-late", "low"]
        );
    }

    #[test]
    fn a_low_delivery_that_waited_two_steps_goes_before_new_high_ones() {
        let now = 100_000;
        let v = vec![
            ("new-high", rank(Priority::High, now, now)),
            (
                "old-low",
                rank(Priority::Low, now - 2 * AGE_STEP_MS, now - 2 * AGE_STEP_MS),
            ),
        ];
        assert_eq!(sorted(v, now), vec!["old-low", "new-high"]);
        // One step of waiting is not enough against High.
        let v = vec![
            ("new-high", rank(Priority::High, now, now)),
            (
                "low",
                rank(Priority::Low, now - AGE_STEP_MS, now - AGE_STEP_MS),
            ),
        ];
        assert_eq!(sorted(v, now), vec!["new-high", "low"]);
    }
}
