//! The replicated state machine, pure: commands in, responses and change
//! notes out; time arrives inside the commands.
//!
//! ```text
//!  Raft log ──► State::apply(&Command) ──► Response (to the proposer)
//!                    │
//!                    └──► changes (drained by the store, fed to the fire loop
//!                         and the status writer)
//! ```
//!
//! Invariants:
//! - A fire is (schedule uid, instant). Each schedule keeps `claimed_through`,
//!   the latest instant it has claimed; a claim at or before it is refused, so
//!   a fire is claimed once no matter how many leaders or retries propose it.
//! - `claimed_through` never decreases; updating or resuming a schedule moves
//!   it to the proposer's `now` so old instants are not mistaken for misses.

pub mod command;
pub mod leases;
pub mod runs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use raftcron_crds::ScheduledJobSpec;
use serde::{Deserialize, Serialize};

pub use command::*;
use runs::{Effect, FinalResult, Phase, RunKind, RunRecord};

/// `namespace/name`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Per-schedule totals since it was created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub lost: u64,
    pub missed: u64,
    pub skipped: u64,
    pub replaced: u64,
    pub retries: u64,
}

impl Counters {
    fn count(&mut self, result: FinalResult, n: u64) {
        let c = match result {
            FinalResult::Succeeded => &mut self.succeeded,
            FinalResult::Failed => &mut self.failed,
            FinalResult::TimedOut => &mut self.timed_out,
            FinalResult::Lost => &mut self.lost,
            FinalResult::Missed => &mut self.missed,
            FinalResult::Skipped => &mut self.skipped,
            FinalResult::Replaced => &mut self.replaced,
        };
        *c += n;
    }
}

/// One schedule and its runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScheduleRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
    /// Shared with the attempts executing it, so run transitions copy a pointer.
    pub spec: Arc<ScheduledJobSpec>,
    pub created: Millis,
    pub updated: Millis,
    /// The latest instant claimed (or the creation / resume time).
    pub claimed_through: Millis,
    /// Mirrors a Kubernetes ScheduledJob (its status is written back).
    #[serde(default)]
    pub kubernetes: bool,
    /// A job of app code (removed once complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_job: Option<AppJob>,
    /// Instants claimed to run, for `repeats`.
    #[serde(default)]
    pub fired: u64,
    pub manual_seq: u64,
    pub counters: Counters,
    /// Runs not finished, oldest instant first.
    pub active: Vec<RunRecord>,
    /// Finished runs, newest first, bounded by the history limits.
    pub history: VecDeque<RunRecord>,
    pub last_schedule: Option<Millis>,
    pub last_success: Option<Millis>,
}

impl ScheduleRecord {
    pub fn key(&self) -> Key {
        Key::new(&self.namespace, &self.name)
    }

    pub fn run(&self, run_id: &str) -> Option<&RunRecord> {
        self.active
            .iter()
            .chain(self.history.iter())
            .find(|r| r.run_id == run_id)
    }

    /// Whether an attempt is executing or waiting for a retry.
    pub fn has_active_attempt(&self) -> bool {
        self.active.iter().any(|r| r.phase.is_active())
    }

    fn push_history(&mut self, run: RunRecord) {
        self.history.push_front(run);
        let ok_limit = self.spec.successful_history_limit() as usize;
        let failed_limit = self.spec.failed_history_limit() as usize;
        let (mut ok, mut failed) = (0usize, 0usize);
        self.history.retain(|r| {
            let success = matches!(r.phase, Phase::Done(res) if res.is_success());
            let n = if success { &mut ok } else { &mut failed };
            *n += 1;
            *n <= if success { ok_limit } else { failed_limit }
        });
    }
}

/// What changed, for the fire loop and the status writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Created, updated, suspended/resumed, or its runs changed.
    Schedule {
        uid: String,
    },
    Deleted {
        uid: String,
        key: Key,
    },
}

/// The whole replicated state.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct State {
    pub cluster_id: Option<String>,
    /// Behind `Arc`s so a snapshot copies pointers; writes copy one record.
    schedules: BTreeMap<Key, Arc<ScheduleRecord>>,
    /// Leases of app code (`leases`); absent from older snapshots.
    #[serde(default)]
    leases: leases::Leases,
    /// Jobs of app code that ended, newest last, bounded ([`ENDED_JOBS`]).
    #[serde(default)]
    ended_jobs: VecDeque<EndedJob>,
    #[serde(skip)]
    by_uid: HashMap<String, Key>,
    #[serde(skip)]
    changes: Vec<Change>,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.cluster_id == other.cluster_id
            && self.schedules == other.schedules
            && self.leases == other.leases
            && self.ended_jobs == other.ended_jobs
    }
}

/// Ended jobs of app code remembered, so that asking for one says why it
/// is gone.
pub const ENDED_JOBS: usize = 1000;

/// A job of app code that ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EndedJob {
    pub key: Key,
    pub uid: String,
    pub reason: String,
    pub at: Millis,
}

/// What a snapshot holds of the state, taken under the read lock without
/// copying the state: the records by pointer, in key order (a clone of the
/// state copied every key and the whole uid index, ~300 MB at 1,000,000
/// schedules, while applying waited). Encodes exactly as [`State`] does.
pub struct StateView {
    cluster_id: Option<String>,
    records: Vec<Arc<ScheduleRecord>>,
    leases: leases::Leases,
    ended_jobs: VecDeque<EndedJob>,
}

impl Serialize for StateView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // The derive of `State`: its serialized fields, in their order.
        let mut st = s.serialize_struct("State", 4)?;
        st.serialize_field("cluster_id", &self.cluster_id)?;
        st.serialize_field("schedules", &RecordsByKey(&self.records))?;
        st.serialize_field("leases", &self.leases)?;
        st.serialize_field("ended_jobs", &self.ended_jobs)?;
        st.end()
    }
}

/// Records in key order, as the map `State::schedules` serializes to.
struct RecordsByKey<'a>(&'a [Arc<ScheduleRecord>]);

impl Serialize for RecordsByKey<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// [`Key`] borrowed from its record; serializes as `Key` does.
        #[derive(Serialize)]
        #[serde(rename = "Key")]
        struct KeyOf<'a> {
            namespace: &'a str,
            name: &'a str,
        }
        s.collect_map(self.0.iter().map(|r| {
            let key = KeyOf {
                namespace: &r.namespace,
                name: &r.name,
            };
            (key, r)
        }))
    }
}

impl State {
    /// What a snapshot of this state holds, without copying the state.
    pub fn view(&self) -> StateView {
        StateView {
            cluster_id: self.cluster_id.clone(),
            records: self.schedules.values().cloned().collect(),
            leases: self.leases.clone(),
            ended_jobs: self.ended_jobs.clone(),
        }
    }

    /// A state from the parts of a snapshot decoded apart (schedules in
    /// key order, as a snapshot holds them); [`Self::reindex`] follows.
    pub fn from_parts(
        cluster_id: Option<String>,
        schedules: Vec<(Key, Arc<ScheduleRecord>)>,
        leases: leases::Leases,
        ended_jobs: VecDeque<EndedJob>,
    ) -> Self {
        Self {
            cluster_id,
            // Already sorted, so this builds the tree in one pass.
            schedules: schedules.into_iter().collect(),
            leases,
            ended_jobs,
            by_uid: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// Rebuilds the derived index after deserializing a snapshot.
    pub fn reindex(&mut self) {
        // Sized once: grown by doubling it rehashes ~2 million entries more.
        let mut by_uid = HashMap::with_capacity(self.schedules.len());
        by_uid.extend(self.schedules.values().map(|s| (s.uid.clone(), s.key())));
        self.by_uid = by_uid;
    }

    pub fn len(&self) -> usize {
        self.schedules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    pub fn get(&self, key: &Key) -> Option<&ScheduleRecord> {
        self.schedules.get(key).map(|s| &**s)
    }

    pub fn get_by_uid(&self, uid: &str) -> Option<&ScheduleRecord> {
        self.by_uid
            .get(uid)
            .and_then(|k| self.schedules.get(k))
            .map(|s| &**s)
    }

    /// The shared record, for readers that outlive the state lock (executors).
    pub fn get_arc_by_uid(&self, uid: &str) -> Option<Arc<ScheduleRecord>> {
        self.by_uid
            .get(uid)
            .and_then(|k| self.schedules.get(k))
            .cloned()
    }

    /// Why a job of app code is gone, if it ended recently.
    pub fn ended_job(&self, key: &Key) -> Option<&EndedJob> {
        self.ended_jobs.iter().rev().find(|e| &e.key == key)
    }

    pub fn schedules(&self) -> impl Iterator<Item = &ScheduleRecord> {
        self.schedules.values().map(|s| &**s)
    }

    pub fn leases(&self) -> &leases::Leases {
        &self.leases
    }

    /// Changes since the last call.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn get_mut_by_uid(&mut self, uid: &str) -> Option<&mut ScheduleRecord> {
        let key = self.by_uid.get(uid)?;
        self.schedules.get_mut(key).map(Arc::make_mut)
    }

    fn touched(&mut self, uid: &str) {
        self.changes.push(Change::Schedule {
            uid: uid.to_string(),
        });
    }

    /// Applies one command.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        match cmd {
            Command::Upsert { items, now } => {
                Response::Upsert(items.iter().map(|i| self.upsert(i, *now)).collect())
            }
            Command::Delete {
                namespace,
                name,
                uid,
            } => Response::Delete {
                existed: self.delete(&Key::new(namespace, name), uid.as_deref()),
            },
            Command::SetSuspend {
                namespace,
                name,
                suspend,
                now,
            } => self.set_suspend(&Key::new(namespace, name), *suspend, *now),
            Command::Claim { term, fires, .. } => {
                Response::Claim(fires.iter().map(|f| self.claim(f, *term)).collect())
            }
            Command::Trigger {
                namespace,
                name,
                term,
                now,
                ..
            } => Response::Trigger(self.trigger(&Key::new(namespace, name), *term, *now)),
            Command::Record { term, node, events } => Response::Record(
                events
                    .iter()
                    .map(|e| self.record(e, *term, *node))
                    .collect(),
            ),
            Command::SetClusterId { cluster_id } => {
                // The first id wins: a retried or duplicated bootstrap cannot rename the cluster.
                let id = self
                    .cluster_id
                    .get_or_insert_with(|| cluster_id.clone())
                    .clone();
                Response::SetClusterId { cluster_id: id }
            }
            Command::Lease(c) => Response::Lease(self.leases.apply(c)),
            Command::EndJob {
                namespace,
                name,
                uid,
                reason,
                at,
            } => {
                let key = Key::new(namespace, name);
                let existed = self.delete(&key, Some(uid));
                if existed {
                    if self.ended_jobs.len() >= ENDED_JOBS {
                        self.ended_jobs.pop_front();
                    }
                    self.ended_jobs.push_back(EndedJob {
                        key,
                        uid: uid.clone(),
                        reason: reason.clone(),
                        at: *at,
                    });
                }
                Response::EndJob { existed }
            }
        }
    }

    fn upsert(&mut self, item: &UpsertSchedule, now: Millis) -> UpsertOutcome {
        let key = Key::new(&item.namespace, &item.name);
        if let Some(existing) = self.schedules.get_mut(&key).map(Arc::make_mut) {
            if existing.uid == item.uid {
                if item.generation < existing.generation {
                    return UpsertOutcome::Stale;
                }
                if item.generation == existing.generation && *existing.spec == item.spec {
                    return UpsertOutcome::Unchanged;
                }
                existing.generation = item.generation;
                existing.spec = Arc::new(item.spec.clone());
                existing.updated = now;
                // Instants already claimed keep their claims; the new spec
                // takes over after them, and nothing before `now` counts as missed.
                existing.claimed_through = existing.claimed_through.max(now);
                self.touched(&item.uid);
                return UpsertOutcome::Updated;
            }
            // Same name, new object: the old incarnation and its runs go.
            let old_uid = existing.uid.clone();
            self.by_uid.remove(&old_uid);
            self.changes.push(Change::Deleted {
                uid: old_uid,
                key: key.clone(),
            });
        }
        let record = ScheduleRecord {
            namespace: item.namespace.clone(),
            name: item.name.clone(),
            uid: item.uid.clone(),
            generation: item.generation,
            spec: Arc::new(item.spec.clone()),
            created: now,
            updated: now,
            // A dueTime already past when the schedule is created fires at
            // once (the sidecar's "enqueue", a one-shot applied late):
            // everything before it counts as claimed, not the due instant.
            claimed_through: item.spec.due_ms().map_or(now, |due| now.min(due - 1)),
            kubernetes: item.kubernetes,
            app_job: item.app_job.clone(),
            fired: 0,
            manual_seq: 0,
            counters: Counters::default(),
            active: Vec::new(),
            history: VecDeque::new(),
            last_schedule: None,
            last_success: None,
        };
        let replaced = self
            .schedules
            .insert(key.clone(), Arc::new(record))
            .is_some();
        self.by_uid.insert(item.uid.clone(), key);
        self.touched(&item.uid);
        if replaced {
            UpsertOutcome::Updated
        } else {
            UpsertOutcome::Created
        }
    }

    fn delete(&mut self, key: &Key, uid: Option<&str>) -> bool {
        match self.schedules.get(key) {
            Some(s) if uid.is_none_or(|u| u == s.uid) => {
                let s = self.schedules.remove(key).expect("present");
                self.by_uid.remove(&s.uid);
                self.changes.push(Change::Deleted {
                    uid: s.uid.clone(),
                    key: key.clone(),
                });
                true
            }
            _ => false,
        }
    }

    fn set_suspend(&mut self, key: &Key, suspend: bool, now: Millis) -> Response {
        let Some(s) = self.schedules.get_mut(key).map(Arc::make_mut) else {
            return Response::SetSuspend {
                changed: false,
                found: false,
            };
        };
        if s.spec.suspend == suspend {
            return Response::SetSuspend {
                changed: false,
                found: true,
            };
        }
        Arc::make_mut(&mut s.spec).suspend = suspend;
        s.updated = now;
        if !suspend {
            // Fires that came due while suspended are skipped, not caught up.
            s.claimed_through = s.claimed_through.max(now);
        }
        let uid = s.uid.clone();
        self.touched(&uid);
        Response::SetSuspend {
            changed: true,
            found: true,
        }
    }

    fn claim(&mut self, fire: &FireClaim, term: u64) -> ClaimOutcome {
        let Some(s) = self.get_mut_by_uid(&fire.uid) else {
            return ClaimOutcome::UnknownSchedule;
        };
        if fire.instant <= s.claimed_through {
            return ClaimOutcome::Duplicate;
        }
        s.claimed_through = fire.instant;
        let run_id = raftcron_crds::names::run_id(&s.uid, fire.instant);
        match fire.disposition {
            Disposition::Run => {
                s.fired += 1;
                s.active.push(RunRecord::new(
                    run_id,
                    fire.instant,
                    RunKind::Scheduled,
                    term,
                ));
            }
            Disposition::Missed { count } => {
                let mut run = RunRecord::new(run_id, fire.instant, RunKind::Scheduled, term);
                run.finish(
                    FinalResult::Missed,
                    fire.instant,
                    Some(format!(
                        "{count} instant(s) up to this one passed while no leader could fire them"
                    )),
                );
                s.counters.count(FinalResult::Missed, count.max(1));
                s.last_schedule = Some(fire.instant);
                s.push_history(run);
            }
        }
        let uid = fire.uid.clone();
        self.touched(&uid);
        ClaimOutcome::Claimed
    }

    fn trigger(&mut self, key: &Key, term: u64, now: Millis) -> Result<(String, Millis), String> {
        let Some(s) = self.schedules.get_mut(key).map(Arc::make_mut) else {
            return Err(format!("no schedule {key}"));
        };
        s.manual_seq += 1;
        let run_id = format!(
            "{}-manual-{}",
            raftcron_crds::names::run_id(&s.uid, now),
            s.manual_seq
        );
        s.active
            .push(RunRecord::new(run_id.clone(), now, RunKind::Manual, term));
        let uid = s.uid.clone();
        self.touched(&uid);
        Ok((run_id, now))
    }

    fn record(&mut self, event: &RunEvent, term: u64, node: u64) -> bool {
        let run_ref = event.run();
        let Some(s) = self.get_mut_by_uid(&run_ref.uid) else {
            return false;
        };
        let Some(idx) = s.active.iter().position(|r| r.run_id == run_ref.run_id) else {
            return false;
        };
        let policy = s.spec.retry_policy();
        let run = &mut s.active[idx];
        let effect = match event {
            RunEvent::Started {
                attempt, at, pod, ..
            } => runs::start(run, *attempt, *at, term, node, pod.clone()),
            RunEvent::Finished {
                attempt,
                outcome,
                at,
                message,
                ..
            } => runs::finish_attempt(run, *attempt, Some(*outcome), *at, message.clone(), &policy),
            RunEvent::Lost {
                attempt,
                at,
                started: true,
                ..
            } => runs::finish_attempt(
                run,
                *attempt,
                None,
                *at,
                Some(
                    "the leader running this attempt lost leadership before recording its result"
                        .into(),
                ),
                &policy,
            ),
            RunEvent::Lost {
                attempt,
                at,
                started: false,
                ..
            } => runs::write_off(run, *attempt, *at),
            RunEvent::Missed { at, reason, .. } => {
                runs::end_unrun(run, runs::Unrun::Missed(reason.clone()), *at)
            }
            RunEvent::Skipped { at, reason, .. } => {
                runs::end_unrun(run, runs::Unrun::Skipped(*reason), *at)
            }
            RunEvent::Replaced { at, .. } => runs::end_unrun(run, runs::Unrun::Replaced, *at),
        };
        let Ok(effect) = effect else {
            return false;
        };
        if matches!(event, RunEvent::Lost { .. }) && effect != Effect::Finished(FinalResult::Lost) {
            // Counted here because the run goes on (retry) rather than ending as Lost.
            s.counters.lost += 1;
        }
        match effect {
            Effect::Started => {
                if run.counted_attempts == 1 {
                    s.last_schedule =
                        Some(s.last_schedule.map_or(run.instant, |l| l.max(run.instant)));
                }
            }
            Effect::Retry => s.counters.retries += 1,
            Effect::WrittenOff => {}
            Effect::Finished(result) => {
                let run = s.active.remove(idx);
                s.counters.count(result, 1);
                if result == FinalResult::Succeeded {
                    s.last_success = run.end;
                }
                if matches!(result, FinalResult::Missed | FinalResult::Skipped) {
                    s.last_schedule =
                        Some(s.last_schedule.map_or(run.instant, |l| l.max(run.instant)));
                }
                s.push_history(run);
            }
        }
        let uid = run_ref.uid.clone();
        self.touched(&uid);
        true
    }
}
