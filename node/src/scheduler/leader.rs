//! The fire loop of one leadership term.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ReadPolicy;
use raftcron_crds::schedule::Schedule;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::due::{Basis, DueIndex};
use super::firer::{Aborted, Armed, Done, Firer, StartTask, fire_lease};
use super::parsed::ParsedSchedules;
use super::plan::{self, PlanSettings, StartDecision};
use super::recorder::Recorder;
use super::waiting;
use crate::clock::{now_ms, now_us};
use crate::ctx::NodeCtx;
use crate::exec::{Attempt, Executors};
use crate::raft::types::LeaderId;
use crate::raft::{ProposeError, propose_as};
use crate::sm::{Command, Millis, MissReason, Response, RunEvent, RunRef, ScheduleRecord};
use crate::store::feed::Dirty;

/// Starts are decided and their tasks spawned this long before the instant
/// (arming a thousand starts takes a few milliseconds). A concurrency-policy
/// decision is therefore up to this much older than the start it governs.
const ARM_US: i64 = 20_000;
/// Distinct (expression, time zone) pairs kept parsed.
const PARSED_CACHE: usize = 4096;
/// Finished attempts handled in one turn of the fire loop.
const MAX_DONE_PER_TURN: usize = 4096;
/// How long an `app` attempt waits for a replica to take it when the
/// ScheduledJob sets no startingDeadlineSeconds.
const APP_WAIT_MS: Millis = 60_000;
/// How often an `app` attempt no replica could take is tried again.
const APP_RETRY_MS: Millis = 100;
/// Largest claim entry; a bigger batch is split.
const MAX_CLAIMS_PER_ENTRY: usize = 20_000;

/// A start waiting in the queue for its time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StartKey {
    at: Millis,
    run_id: String,
    attempt: u32,
}

/// An `app` delivery no replica could take yet.
struct Waiter {
    key: StartKey,
    uid: String,
    /// When it first had to wait.
    since: Millis,
}

/// A claim entry that did not apply, and the schedules it was for.
struct ClaimFailed {
    error: String,
    uids: Vec<String>,
}

pub struct LeaderTerm {
    ctx: Arc<NodeCtx>,
    term: u64,
    executors: Arc<Executors>,
    cancel: CancellationToken,
    settings: PlanSettings,
    /// Shared by every schedule with the same expression and time zone.
    parsed: ParsedSchedules,
    /// Next claimable instant per schedule.
    due: DueIndex,
    /// Starts waiting for their time.
    queue: BTreeMap<StartKey, String>,
    /// Hands armed gates to the firer task.
    arm_tx: mpsc::UnboundedSender<Armed>,
    arm_rx: Option<mpsc::UnboundedReceiver<Armed>>,
    /// Starts the firer could not open (no lease), to requeue.
    aborted_tx: mpsc::UnboundedSender<Aborted>,
    aborted_rx: mpsc::UnboundedReceiver<Aborted>,
    /// Attempts executing here: run id → (attempt, cancel).
    running: HashMap<String, (u32, CancellationToken)>,
    /// Attempts launched in this term whose start the applied state does not
    /// show yet: uid → run id → attempt. An action can finish before its
    /// `Started` entry commits (a slow or partitioned quorum), and until it
    /// commits the run still looks pending; without this the next refresh
    /// of the schedule would launch the same attempt again.
    launched: HashMap<String, HashMap<String, u32>>,
    /// A due entry came due within the arm window: claim without waiting
    /// for the tick.
    urgent: bool,
    /// `app` deliveries waiting for a free replica, tried again in priority
    /// order (`waiting`) whenever the loop turns, at least every
    /// [`APP_RETRY_MS`].
    waiting: Vec<Waiter>,
    /// Jobs of app code whose end was proposed: uid → when.
    ending: HashMap<String, Millis>,
    /// Jobs of app code with a ttl: (expires, uid), to look at again then.
    expiring: BTreeSet<(Millis, String)>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    lease: Duration,
    /// Set when this term began by ending an outage (see `plan::Takeover`).
    downtime_until: Option<Millis>,
}

impl LeaderTerm {
    pub fn new(
        ctx: Arc<NodeCtx>,
        term: u64,
        executors: Arc<Executors>,
        cancel: CancellationToken,
    ) -> Self {
        let settings = ctx.config.scheduler.plan;
        let lease = fire_lease(
            ctx.config.timing.election_min,
            Duration::from_millis(ctx.config.scheduler.max_clock_skew_ms.max(0) as u64),
        );
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (arm_tx, arm_rx) = mpsc::unbounded_channel();
        let (aborted_tx, aborted_rx) = mpsc::unbounded_channel();
        Self {
            ctx,
            term,
            executors,
            cancel,
            settings,
            parsed: ParsedSchedules::new(PARSED_CACHE),
            due: DueIndex::default(),
            queue: BTreeMap::new(),
            arm_tx,
            arm_rx: Some(arm_rx),
            aborted_tx,
            aborted_rx,
            running: HashMap::new(),
            launched: HashMap::new(),
            urgent: false,
            waiting: Vec::new(),
            ending: HashMap::new(),
            expiring: BTreeSet::new(),
            done_tx,
            done_rx,
            lease,
            downtime_until: None,
        }
    }

    fn leader_id(&self) -> LeaderId {
        LeaderId {
            term: self.term,
            node_id: self.ctx.identity.id,
        }
    }

    pub async fn run(mut self) {
        let takeover = now_ms();
        let feed = self.ctx.sm.feed().subscribe();
        // See everything the previous leaders committed before deciding anything.
        if let Err(e) = self
            .ctx
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
        {
            tracing::info!(term = self.term, error = %e, "not leading after all");
            return;
        }
        if let Err(e) = self.settle_takeover(takeover).await {
            tracing::warn!(term = self.term, error = %e, "could not settle the previous leader's runs");
            return;
        }
        tracing::info!(term = self.term, "fire loop started");
        let (recorder, recorder_task) = Recorder::spawn(
            self.ctx.raft.clone(),
            self.term,
            self.ctx.identity.id,
            self.cancel.clone(),
        );
        let (claim_err_tx, mut claim_err_rx) = mpsc::unbounded_channel::<ClaimFailed>();
        let tick = Duration::from_millis((self.settings.lookahead_ms / 4).max(25) as u64);
        let mut next_claim = tokio::time::Instant::now();
        let firer = Firer {
            ctx: self.ctx.clone(),
            term: self.term,
            lease: self.lease,
            aborted: self.aborted_tx.clone(),
        };
        let firer_task = tokio::spawn(firer.run(
            self.arm_rx.take().expect("one run per term"),
            self.cancel.clone(),
        ));
        loop {
            let dirty = feed.take();
            if !dirty.is_empty() {
                self.refresh(dirty);
            }
            // A schedule due (nearly) now, just created or changed (an
            // enqueued job, `dueTime: 0s`), is claimed at once rather than
            // at the next tick, up to a quarter look-ahead later.
            if tokio::time::Instant::now() >= next_claim || std::mem::take(&mut self.urgent) {
                self.claim(&claim_err_tx);
                next_claim = tokio::time::Instant::now() + tick;
            }
            self.expire_jobs();
            self.arm(&recorder);
            self.ctx.metrics.active_runs.set(self.running.len() as i64);

            let wake = self.next_wake().map_or(next_claim, |w| w.min(next_claim));
            let wake = if self.waiting.is_empty() {
                wake
            } else {
                wake.min(tokio::time::Instant::now() + Duration::from_millis(APP_RETRY_MS as u64))
            };
            let wake = match self.expiring.first() {
                Some((at, _)) => {
                    let wait = (at - now_ms()).max(0) as u64;
                    wake.min(tokio::time::Instant::now() + Duration::from_millis(wait))
                }
                None => wake,
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = feed.changed() => {}
                Some(d) = self.done_rx.recv() => {
                    self.finished(d, &recorder);
                    // Under load thousands finish per second: take what has
                    // queued in one pass rather than one loop turn (feed
                    // check, claim check, arming, a new timer) per attempt.
                    for _ in 0..MAX_DONE_PER_TURN {
                        let Ok(d) = self.done_rx.try_recv() else { break };
                        self.finished(d, &recorder);
                    }
                }
                Some(Aborted { uid, run_id, attempt }) = self.aborted_rx.recv() => {
                    self.running.remove(&run_id);
                    if let Some(m) = self.launched.get_mut(&uid) {
                        m.remove(&run_id);
                    }
                    self.queue.insert(StartKey { at: now_ms() + 5, run_id, attempt }, uid);
                }
                Some(failed) = claim_err_rx.recv() => {
                    if !self.still_leading() {
                        tracing::info!(term = self.term, error = %failed.error, "claim failed; leadership moved");
                        break;
                    }
                    // Typically openraft's own lease lapsed (a slow or cut-off
                    // quorum): the entry was refused, nothing was claimed.
                    // Claims are idempotent, so plan these schedules again
                    // and retry on the next tick.
                    tracing::info!(term = self.term, error = %failed.error, schedules = failed.uids.len(), "claim failed; planning again");
                    self.replan(failed.uids);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        for (_, (_, token)) in self.running.drain() {
            token.cancel();
        }
        self.ctx.metrics.active_runs.set(0);
        firer_task.abort();
        drop(recorder);
        let _ = tokio::time::timeout(Duration::from_secs(2), recorder_task).await;
    }

    /// Records the previous leaders' unfinished business (see [`plan::takeover`])
    /// and waits until it is applied, so the start queue is built on it.
    async fn settle_takeover(&mut self, takeover: Millis) -> Result<(), ProposeError> {
        let events: Vec<RunEvent> = {
            let ctx = self.ctx.clone();
            let d = ctx.sm.read();
            let next_unclaimed: Vec<(&ScheduleRecord, Option<Millis>)> = d
                .state
                .schedules()
                .map(|s| {
                    let next = self
                        .parsed_for(s)
                        .and_then(|p| p.next_after(s.claimed_through));
                    (s, next)
                })
                .collect();
            let outage = next_unclaimed
                .iter()
                .map(|(s, next)| plan::outage_evidence(s, *next, takeover))
                .max()
                .unwrap_or(0);
            if outage > self.settings.catch_up_ms {
                tracing::info!(
                    term = self.term,
                    outage_ms = outage,
                    "taking over after an outage: fires due before now follow missedRunPolicy"
                );
                self.downtime_until = Some(takeover);
            }
            let t = plan::Takeover {
                term: self.term,
                at: takeover,
                max_skew: self.ctx.config.scheduler.max_clock_skew_ms,
                downtime_until: self.downtime_until,
            };
            next_unclaimed
                .into_iter()
                .flat_map(|(s, next)| plan::takeover(s, next, &t))
                .collect()
        };
        // What each event ends, judged on the state it applies to.
        let tallies: Vec<crate::metrics::Tally> = {
            let d = self.ctx.sm.read();
            events
                .iter()
                .map(|e| crate::metrics::tally(d.state.get_by_uid(&e.run().uid), e))
                .collect()
        };
        if events.is_empty() {
            return Ok(());
        }
        let (mut lost, mut written_off, mut missed) = (0, 0, 0);
        for e in &events {
            match e {
                RunEvent::Lost { started: true, .. } => lost += 1,
                RunEvent::Lost { .. } => written_off += 1,
                _ => missed += 1,
            }
        }
        tracing::info!(
            term = self.term,
            lost,
            written_off,
            missed,
            "settling runs left by the previous leader"
        );
        // Each write returns once it is applied here, so the start queue the
        // fire loop builds next sees every write-off.
        for (chunk, tallies) in events
            .chunks(MAX_CLAIMS_PER_ENTRY)
            .zip(tallies.chunks(MAX_CLAIMS_PER_ENTRY))
        {
            let cmd = Command::Record {
                term: self.term,
                node: self.ctx.identity.id,
                events: chunk.to_vec(),
            };
            if let Response::Record(applied) =
                propose_as(&self.ctx.raft, self.leader_id(), cmd).await?
            {
                self.ctx.metrics.count_applied(tallies, &applied);
            }
        }
        Ok(())
    }

    fn parsed_for(&mut self, s: &ScheduleRecord) -> Option<Arc<Schedule>> {
        let p = self.parsed.get(
            &s.spec.schedule,
            s.spec.time_zone.as_deref(),
            s.spec.due_ms(),
        );
        if p.is_none() {
            // Validated on the way in; only a grammar change between releases gets here.
            tracing::error!(schedule = %s.key(), "unparseable schedule is not fired");
        }
        p
    }

    fn refresh(&mut self, dirty: Dirty) {
        let ctx = self.ctx.clone();
        let d = ctx.sm.read();
        if dirty.all {
            self.due.clear();
            for s in d.state.schedules() {
                self.update(s);
            }
            return;
        }
        for (uid, _) in &dirty.deleted {
            self.forget(uid);
        }
        for uid in &dirty.uids {
            match d.state.get_by_uid(uid) {
                Some(s) => self.update(s),
                None => self.forget(uid),
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        self.due.forget(uid);
        self.launched.remove(uid);
        self.ending.remove(uid);
    }

    /// Re-reads one schedule: its next claimable instant and its pending starts.
    fn update(&mut self, s: &ScheduleRecord) {
        let basis = Basis::of(s);
        if !self.due.is_current(&s.uid, &basis) {
            let next = self.parsed_for(s).and_then(|p| plan::next_claimable(s, &p));
            if next.is_some_and(|n| n * 1000 <= now_us() + ARM_US) {
                self.urgent = true;
            }
            self.due.set(&s.uid, basis, next);
        }
        if s.app_job.is_some() {
            self.check_job(s);
        }
        if let Some(m) = self.launched.get_mut(&s.uid) {
            // Keep only launches the applied state does not show yet.
            m.retain(|id, a| s.active.iter().any(|r| &r.run_id == id && r.attempt < *a));
            if m.is_empty() {
                self.launched.remove(&s.uid);
            }
        }
        for run in &s.active {
            if let Some(p) = plan::pending_start(run)
                && self
                    .running
                    .get(&run.run_id)
                    .is_none_or(|(a, _)| *a < p.attempt)
                && !self.was_launched(&s.uid, &run.run_id, p.attempt)
            {
                self.queue.insert(
                    StartKey {
                        at: p.at,
                        run_id: run.run_id.clone(),
                        attempt: p.attempt,
                    },
                    s.uid.clone(),
                );
            }
        }
    }

    /// Ends a job of app code that is complete (its repeats used up, its
    /// dueTime fired, its ttl passed): it leaves the schedules, and the
    /// state machine remembers why for a while. Otherwise, a job with a
    /// ttl is looked at again when it expires.
    fn check_job(&mut self, s: &ScheduleRecord) {
        let now = now_ms();
        let Some(p) = self.parsed_for(s) else {
            return;
        };
        let Some(reason) = plan::completion(s, &p, now) else {
            if let Some(e) = s.app_job.as_ref().and_then(|j| j.expires) {
                self.expiring.insert((e, s.uid.clone()));
            }
            return;
        };
        // Proposed already and not yet applied: again only after a while.
        if self.ending.get(&s.uid).is_some_and(|at| now - at < 5_000) {
            self.expiring.insert((now + 5_000, s.uid.clone()));
            return;
        }
        self.ending.insert(s.uid.clone(), now);
        self.expiring.insert((now + 5_000, s.uid.clone()));
        let cmd = Command::EndJob {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            uid: s.uid.clone(),
            reason: format!("completed: {reason}"),
            at: now,
        };
        let raft = self.ctx.raft.clone();
        let leader = self.leader_id();
        tokio::spawn(async move {
            if let Err(e) = propose_as(&raft, leader, cmd).await {
                tracing::debug!(error = %e, "ending a completed job: again later");
            }
        });
    }

    /// Looks again at jobs of app code whose ttl has come.
    fn expire_jobs(&mut self) {
        let now = now_ms();
        let mut due = Vec::new();
        while let Some((at, _)) = self.expiring.first() {
            if *at > now {
                break;
            }
            let (_, uid) = self.expiring.pop_first().expect("non-empty");
            due.push(uid);
        }
        if due.is_empty() {
            return;
        }
        let dirty = Dirty {
            uids: due.into_iter().collect(),
            ..Dirty::default()
        };
        self.refresh(dirty);
    }

    /// Whether this node still leads the term this loop was started for.
    fn still_leading(&self) -> bool {
        self.ctx
            .raft
            .as_leader()
            .is_ok_and(|l| l.leader_id().term == self.term)
    }

    /// Recomputes the due entries of `uids` from the applied state, after
    /// claims for them failed (the claim pass removed their due entries).
    fn replan(&mut self, uids: Vec<String>) {
        let dirty = Dirty {
            uids: uids.into_iter().collect(),
            ..Dirty::default()
        };
        for uid in &dirty.uids {
            self.due.invalidate(uid);
        }
        self.refresh(dirty);
        // A claim that failed is tried again at the next tick, not at once
        // (it fails while openraft's own lease has lapsed).
        self.urgent = false;
    }

    fn was_launched(&self, uid: &str, run_id: &str, attempt: u32) -> bool {
        self.launched
            .get(uid)
            .and_then(|m| m.get(run_id))
            .is_some_and(|a| *a >= attempt)
    }

    /// Claims every fire due within the look-ahead, in one entry, without
    /// waiting for it: the claimed runs arrive through the change feed.
    fn claim(&mut self, err_tx: &mpsc::UnboundedSender<ClaimFailed>) {
        let now = now_ms();
        let horizon = now + self.settings.lookahead_ms;
        let mut fires = Vec::new();
        let mut held = Vec::new();
        {
            let ctx = self.ctx.clone();
            let d = ctx.sm.read();
            while let Some((at, uid)) = self.due.pop_due(horizon) {
                let Some(s) = d.state.get_by_uid(&uid) else {
                    continue;
                };
                if plan::behind(s, now, |run_id| self.running.contains_key(run_id)) {
                    held.push((at, uid));
                    continue;
                }
                let Some(p) = self.parsed_for(s) else {
                    continue;
                };
                fires.extend(plan::claims(
                    s,
                    &p,
                    now,
                    &self.settings,
                    self.downtime_until,
                ));
            }
        }
        if !held.is_empty() {
            tracing::debug!(schedules = held.len(), "behind: claims held back");
            self.ctx.metrics.claims_held.inc_by(held.len() as u64);
        }
        // Considered again on the next pass.
        for (at, uid) in held {
            self.due.put_back(at, uid);
        }
        if fires.is_empty() {
            return;
        }
        while !fires.is_empty() {
            // Owned chunks: the entry takes the fires, and only their uids
            // are kept, to plan again if the entry fails.
            let rest = fires.split_off(fires.len().min(MAX_CLAIMS_PER_ENTRY));
            let chunk = std::mem::replace(&mut fires, rest);
            let uids: Vec<String> = chunk.iter().map(|f| f.uid.clone()).collect();
            // Instants claimed as missed end their runs at once: counted
            // once the claim applies, as many as the range covers.
            let missed: Vec<u64> = chunk
                .iter()
                .map(|f| match f.disposition {
                    crate::sm::Disposition::Missed { count } => count.max(1),
                    crate::sm::Disposition::Run => 0,
                })
                .collect();
            let metrics = self.ctx.metrics.clone();
            let cmd = Command::Claim {
                term: self.term,
                node: self.ctx.identity.id,
                now,
                fires: chunk,
            };
            let raft = self.ctx.raft.clone();
            let leader = self.leader_id();
            let err_tx = err_tx.clone();
            tokio::spawn(async move {
                let r = match propose_as(&raft, leader, cmd).await {
                    Err(e) => Err(e.to_string()),
                    Ok(Response::Claim(outcomes)) => {
                        let claimed_missed: u64 = outcomes
                            .iter()
                            .zip(&missed)
                            .filter(|(o, _)| **o == crate::sm::ClaimOutcome::Claimed)
                            .map(|(_, n)| *n)
                            .sum();
                        if claimed_missed > 0 {
                            metrics
                                .runs
                                .with_label_values(&["Missed"])
                                .inc_by(claimed_missed);
                        }
                        let dup = outcomes
                            .iter()
                            .filter(|o| **o != crate::sm::ClaimOutcome::Claimed)
                            .count();
                        if dup > 0 {
                            tracing::debug!(dup, "fires already claimed");
                        }
                        Ok(())
                    }
                    Ok(other) => Err(format!("unexpected claim response {other:?}")),
                };
                if let Err(e) = r {
                    let _ = err_tx.send(ClaimFailed { error: e, uids });
                }
            });
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let at_us = self.queue.first_key_value()?.0.at * 1000 - ARM_US;
        let wait_us = at_us - now_us();
        Some(tokio::time::Instant::now() + Duration::from_micros(wait_us.max(0) as u64))
    }

    /// Decides each imminent start against the current state and spawns its
    /// task, waiting on the gate of its instant. Deciding a few milliseconds
    /// early keeps that work off the critical path: at the instant, one
    /// lease check opens the gate and the tasks start on all worker threads.
    fn arm(&mut self, recorder: &Recorder) {
        let mut gates: BTreeMap<Millis, Vec<StartTask>> = BTreeMap::new();
        let arm_started = now_us();
        let horizon = (now_us() + ARM_US) / 1000;
        // (key, uid, waiting since): new starts, then the deliveries still
        // waiting for a replica.
        let mut due: Vec<(StartKey, String, Option<Millis>)> = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().at > horizon {
                break;
            }
            let (key, uid) = entry.remove_entry();
            due.push((key, uid, None));
        }
        due.extend(
            std::mem::take(&mut self.waiting)
                .into_iter()
                .map(|w| (w.key, w.uid, Some(w.since))),
        );
        if due.is_empty() {
            return;
        }
        let ctx = self.ctx.clone();
        let d = ctx.sm.read();
        let now = now_ms();
        // Deliveries of `app` actions compete for replicas: in priority
        // order, oldest first (`waiting::order`); the others do not care.
        due.sort_by_cached_key(|(key, uid, since)| {
            match d
                .state
                .get_by_uid(uid)
                .and_then(|s| s.spec.action.app.as_ref())
            {
                Some(app) => (
                    1,
                    waiting::order(
                        &waiting::Rank {
                            priority: app.priority,
                            since: since.unwrap_or(now),
                            due: key.at,
                        },
                        now,
                    ),
                ),
                None => (0, (0, key.at)),
            }
        });
        // Apps found with no free replica in this pass: their other
        // deliveries wait without trying, so none overtakes a better one.
        let mut full: HashSet<(String, String)> = HashSet::new();
        for (
            StartKey {
                at,
                run_id,
                attempt,
            },
            uid,
            waiting_since,
        ) in due
        {
            let Some(s) = d.state.get_arc_by_uid(&uid) else {
                continue;
            };
            let Some(run) = s.active.iter().find(|r| r.run_id == run_id) else {
                continue;
            };
            if plan::pending_start(run).map(|p| p.attempt) != Some(attempt)
                || self.was_launched(&uid, &run_id, attempt)
            {
                continue; // settled meanwhile (replaced, deleted, already started)
            }
            let start = match plan::at_start(&s, run, at.max(now_ms())) {
                StartDecision::Start => true,
                StartDecision::Events(events, replace) => {
                    for e in &events {
                        if let RunEvent::Replaced { run, .. } = e
                            && let Some((_, token)) = self.running.remove(&run.run_id)
                        {
                            token.cancel();
                        }
                        self.count(Some(&s), e);
                    }
                    recorder.record_all(events);
                    replace
                }
            };
            if !start {
                continue;
            }
            let attempt = Attempt {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                uid: uid.clone(),
                kubernetes: s.kubernetes,
                run_id,
                attempt,
                scheduled_ms: run.instant,
                term: self.term,
                timeout: Duration::from_millis(s.spec.timeout_ms() as u64),
            };
            // An `app` attempt is placed on a replica and sent to it now,
            // ahead of the instant; the call waits for the firer's go.
            let app_key = s
                .spec
                .action
                .app
                .as_ref()
                .map(|a| (s.namespace.clone(), a.name.clone()));
            let placed = match &app_key {
                Some(k) if full.contains(k) => Err("its app's replicas are busy".to_string()),
                _ => self.executors.prepare(&s.namespace, &s.spec, &attempt),
            };
            let prepared = match placed {
                Ok(p) => {
                    if let Some(since) = waiting_since {
                        self.ctx
                            .metrics
                            .app_wait
                            .observe((now_ms() - since).max(0) as f64 / 1e3);
                    }
                    p
                }
                Err(why) => {
                    if let Some(k) = app_key {
                        full.insert(k);
                    }
                    // No replica can take it now: again shortly, until the
                    // starting deadline (or APP_WAIT without one) passes.
                    let due = if run.first_start.is_none() {
                        run.instant
                    } else {
                        at
                    };
                    let wait = s.spec.starting_deadline_ms().unwrap_or(APP_WAIT_MS);
                    let retry_at = now + APP_RETRY_MS;
                    if retry_at - due > wait {
                        let app = s.spec.action.app.as_ref().map_or("", |a| a.name.as_str());
                        let e = RunEvent::Missed {
                            run: RunRef {
                                uid: uid.clone(),
                                run_id: attempt.run_id.clone(),
                            },
                            at: now_ms(),
                            reason: MissReason::NoReplica {
                                app: format!("{}/{app}", s.namespace),
                            },
                        };
                        tracing::warn!(run_id = %attempt.run_id, reason = %why, "missed: no replica took it");
                        self.count(Some(&s), &e);
                        recorder.record(e);
                    } else {
                        tracing::debug!(run_id = %attempt.run_id, reason = %why, "waiting for a replica");
                        self.waiting.push(Waiter {
                            key: StartKey {
                                at,
                                run_id: attempt.run_id,
                                attempt: attempt.attempt,
                            },
                            uid,
                            since: waiting_since.unwrap_or(now),
                        });
                    }
                    continue;
                }
            };
            let run_id = attempt.run_id.clone();
            let attempt_no = attempt.attempt;
            self.launched
                .entry(uid.clone())
                .or_default()
                .insert(run_id.clone(), attempt_no);
            let token = CancellationToken::new();
            if let Some((_, old)) = self
                .running
                .insert(run_id.clone(), (attempt_no, token.clone()))
            {
                old.cancel();
            }
            let task = StartTask {
                ctx: self.ctx.clone(),
                executors: self.executors.clone(),
                recorder: recorder.clone(),
                done_tx: self.done_tx.clone(),
                first: run.first_start.is_none(),
                attempt,
                uid,
                spec: s.spec.clone(),
                token,
                prepared,
            };
            gates.entry(at).or_default().push(task);
        }
        drop(d);
        if !gates.is_empty() {
            tracing::debug!(
                first = gates.keys().next().copied(),
                lead_us = gates.keys().next().map(|f| f * 1000 - arm_started),
                took_us = now_us() - arm_started,
                n = gates.values().map(Vec::len).sum::<usize>(),
                "armed"
            );
        }
        for (at, starts) in gates {
            let _ = self.arm_tx.send(Armed { at, starts });
        }
    }

    fn finished(&mut self, d: Done, recorder: &Recorder) {
        match self.running.get(&d.run_id) {
            Some((attempt, _)) if *attempt == d.attempt => {
                self.running.remove(&d.run_id);
            }
            _ => return,
        }
        let e = RunEvent::Finished {
            run: RunRef {
                uid: d.uid,
                run_id: d.run_id,
            },
            attempt: d.attempt,
            outcome: d.outcome.outcome,
            at: d.at,
            message: d.outcome.message,
        };
        {
            let d = self.ctx.sm.read();
            self.count(d.state.get_by_uid(&e.run().uid), &e);
        }
        recorder.record(e);
    }

    /// Counts `e` against `s`, its schedule as applied before `e`: a run once,
    /// by its final result, and each attempt that ends (see [`crate::metrics::tally`]).
    fn count(&self, s: Option<&ScheduleRecord>, e: &RunEvent) {
        self.ctx.metrics.count(crate::metrics::tally(s, e));
    }
}
