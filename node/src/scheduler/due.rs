//! The due index of one leadership term: each schedule's next claimable
//! instant, ordered by time, and what it was computed from.
//!
//! Invariants, kept here rather than by every caller:
//! - a schedule has at most one entry, and `of[uid].at == Some(at)` exactly
//!   when `(at, uid)` is in `by_time`;
//! - `of[uid].basis` is what the entry (or its absence) was computed from;
//!   a schedule whose basis is unchanged needs no next-fire computation,
//!   so run transitions (which leave it unchanged) cost nothing here.

use std::collections::{BTreeSet, HashMap};

use crate::sm::{Millis, ScheduleRecord};

/// What a schedule's next claimable instant depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Basis {
    generation: i64,
    claimed_through: Millis,
    suspend: bool,
}

impl Basis {
    pub fn of(s: &ScheduleRecord) -> Self {
        Self {
            generation: s.generation,
            claimed_through: s.claimed_through,
            suspend: s.spec.suspend,
        }
    }
}

#[derive(Default, Debug)]
pub struct DueIndex {
    by_time: BTreeSet<(Millis, String)>,
    /// One map for both halves of a schedule's entry: two maps keyed by uid
    /// held every uid twice more (~110 bytes per schedule on the leader).
    of: HashMap<String, Of>,
}

/// What the index holds for one schedule.
#[derive(Debug, Default)]
struct Of {
    /// Its listed instant, exactly when `(at, uid)` is in `by_time`.
    at: Option<Millis>,
    /// What that was computed from; `None` once invalidated.
    basis: Option<Basis>,
}

impl DueIndex {
    /// Forgets everything (a snapshot was installed).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Whether `uid`'s entry was computed from `basis`.
    pub fn is_current(&self, uid: &str, basis: &Basis) -> bool {
        self.of.get(uid).and_then(|o| o.basis.as_ref()) == Some(basis)
    }

    /// Replaces `uid`'s entry by `next` (none: nothing to claim), computed from `basis`.
    pub fn set(&mut self, uid: &str, basis: Basis, next: Option<Millis>) {
        if !self.of.contains_key(uid) {
            // Only a new schedule allocates its uid here.
            self.of.insert(uid.to_string(), Of::default());
        }
        let Some(of) = self.of.get_mut(uid) else {
            return;
        };
        of.basis = Some(basis);
        if of.at != next {
            if let Some(at) = of.at.take() {
                self.by_time.remove(&(at, uid.to_string()));
            }
            if let Some(at) = next {
                of.at = Some(at);
                self.by_time.insert((at, uid.to_string()));
            }
        }
    }

    /// Removes `uid` altogether (the schedule was deleted).
    pub fn forget(&mut self, uid: &str) {
        if let Some(Of { at: Some(at), .. }) = self.of.remove(uid) {
            self.by_time.remove(&(at, uid.to_string()));
        }
    }

    /// Makes the next [`is_current`](Self::is_current) of `uid` false, so its
    /// entry is computed again (its claim failed).
    pub fn invalidate(&mut self, uid: &str) {
        if let Some(of) = self.of.get_mut(uid) {
            of.basis = None;
        }
    }

    /// Takes the earliest entry due at or before `horizon`. Its basis stays:
    /// the claim it leads to changes `claimed_through`, and with it the basis.
    pub fn pop_due(&mut self, horizon: Millis) -> Option<(Millis, String)> {
        let (at, _) = self.by_time.first()?;
        if *at > horizon {
            return None;
        }
        let (at, uid) = self.by_time.pop_first()?;
        if let Some(of) = self.of.get_mut(&uid) {
            of.at = None;
        }
        Some((at, uid))
    }

    /// Puts back an entry taken by [`pop_due`](Self::pop_due) but not
    /// claimed (held back), to be considered on the next pass.
    pub fn put_back(&mut self, at: Millis, uid: String) {
        let of = self.of.entry(uid.clone()).or_default();
        if let Some(old) = of.at.replace(at) {
            self.by_time.remove(&(old, uid.clone()));
        }
        self.by_time.insert((at, uid));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis(claimed_through: Millis) -> Basis {
        Basis {
            generation: 1,
            claimed_through,
            suspend: false,
        }
    }

    #[test]
    fn a_schedule_has_one_entry_however_often_it_is_set() {
        let mut d = DueIndex::default();
        d.set("a", basis(0), Some(10));
        d.set("a", basis(10), Some(20));
        d.set("b", basis(0), Some(15));
        assert_eq!(d.len(), 2);
        assert_eq!(d.pop_due(100), Some((15, "b".into())));
        assert_eq!(d.pop_due(100), Some((20, "a".into())));
        assert_eq!(d.pop_due(100), None);
    }

    #[test]
    fn entries_come_out_in_time_order_and_only_up_to_the_horizon() {
        let mut d = DueIndex::default();
        for (uid, at) in [("c", 30), ("a", 10), ("b", 20)] {
            d.set(uid, basis(0), Some(at));
        }
        assert_eq!(d.pop_due(25), Some((10, "a".into())));
        assert_eq!(d.pop_due(25), Some((20, "b".into())));
        assert_eq!(d.pop_due(25), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_popped_entry_keeps_its_basis_until_invalidated() {
        let mut d = DueIndex::default();
        d.set("a", basis(0), Some(10));
        assert_eq!(d.pop_due(10), Some((10, "a".into())));
        assert!(
            d.is_current("a", &basis(0)),
            "the claim changes the basis, not the pop"
        );
        assert!(!d.is_current("a", &basis(10)));
        d.invalidate("a");
        assert!(!d.is_current("a", &basis(0)));
    }

    #[test]
    fn a_held_entry_put_back_is_due_again_and_not_doubled() {
        let mut d = DueIndex::default();
        d.set("a", basis(0), Some(10));
        let (at, uid) = d.pop_due(10).unwrap();
        d.put_back(at, uid.clone());
        d.put_back(at, uid);
        assert_eq!(d.len(), 1);
        assert_eq!(d.pop_due(10), Some((10, "a".into())));
    }

    #[test]
    fn a_forgotten_or_unclaimable_schedule_has_no_entry() {
        let mut d = DueIndex::default();
        d.set("a", basis(0), Some(10));
        d.forget("a");
        assert!(d.is_empty());
        assert!(!d.is_current("a", &basis(0)));
        d.set("b", basis(0), Some(10));
        d.set("b", basis(5), None); // suspended meanwhile
        assert!(d.is_empty());
        assert!(d.is_current("b", &basis(5)));
    }
}
