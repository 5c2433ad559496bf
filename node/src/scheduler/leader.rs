//! The fire loop of one leadership term.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ReadPolicy;
use raftcron_crds::schedule::Schedule;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::plan::{self, PlanSettings, StartDecision};
use super::recorder::Recorder;
use crate::clock::{now_ms, now_us};
use crate::exec::{Attempt, Executors, Outcome};
use crate::node::NodeCtx;
use crate::raft::types::LeaderId;
use crate::raft::{ProposeError, write_error};
use crate::sm::{Command, Millis, Response, RunEvent, RunRef, ScheduleRecord};
use crate::store::feed::Dirty;

/// Wake this long before a start instant and spin the rest: tokio's timer
/// alone wakes up to a millisecond late.
const SPIN_US: i64 = 1_500;
/// Largest claim entry; a bigger batch is split.
const MAX_CLAIMS_PER_ENTRY: usize = 20_000;

struct Done {
    uid: String,
    run_id: String,
    attempt: u32,
    outcome: Outcome,
    at: Millis,
}

pub struct LeaderTerm {
    ctx: Arc<NodeCtx>,
    term: u64,
    executors: Arc<Executors>,
    cancel: CancellationToken,
    settings: PlanSettings,
    /// Parsed schedules by uid, with the generation they were parsed at.
    parsed: HashMap<String, (i64, Arc<Schedule>)>,
    /// Next claimable instant per schedule.
    due: BTreeSet<(Millis, String)>,
    due_of: HashMap<String, Millis>,
    /// Starts waiting for their time: (at, run id, attempt) → uid.
    queue: BTreeMap<(Millis, String, u32), String>,
    queued: HashSet<(String, u32)>,
    /// Attempts executing here: run id → (attempt, cancel).
    running: HashMap<String, (u32, CancellationToken)>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    lease: Duration,
}

impl LeaderTerm {
    pub fn new(
        ctx: Arc<NodeCtx>,
        term: u64,
        executors: Arc<Executors>,
        cancel: CancellationToken,
    ) -> Self {
        let settings = ctx.config.scheduler.plan;
        // Followers refuse to elect anyone for a lease after the last heartbeat;
        // starting only within 80 % of the shortest one keeps clear of it.
        let lease = ctx.config.timing.election_min * 4 / 5;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            ctx,
            term,
            executors,
            cancel,
            settings,
            parsed: HashMap::new(),
            due: BTreeSet::new(),
            due_of: HashMap::new(),
            queue: BTreeMap::new(),
            queued: HashSet::new(),
            running: HashMap::new(),
            done_tx,
            done_rx,
            lease,
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
        let (claim_err_tx, mut claim_err_rx) = mpsc::unbounded_channel::<String>();
        let tick = Duration::from_millis((self.settings.lookahead_ms / 4).max(25) as u64);
        let mut next_claim = tokio::time::Instant::now();
        loop {
            let dirty = feed.take();
            if !dirty.is_empty() {
                self.refresh(dirty);
            }
            if tokio::time::Instant::now() >= next_claim {
                self.claim(&claim_err_tx);
                next_claim = tokio::time::Instant::now() + tick;
            }
            self.dispatch(&recorder).await;
            self.ctx.metrics.active_runs.set(self.running.len() as i64);

            let wake = self.next_wake().map_or(next_claim, |w| w.min(next_claim));
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = feed.changed() => {}
                Some(d) = self.done_rx.recv() => self.finished(d, &recorder),
                Some(e) = claim_err_rx.recv() => {
                    tracing::warn!(term = self.term, error = %e, "claim failed; leaving the fire loop");
                    break;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        for (_, (_, token)) in self.running.drain() {
            token.cancel();
        }
        self.ctx.metrics.active_runs.set(0);
        drop(recorder);
        let _ = tokio::time::timeout(Duration::from_secs(2), recorder_task).await;
    }

    /// Records the previous leaders' unfinished business (see [`plan::takeover`])
    /// and waits until it is applied, so the start queue is built on it.
    async fn settle_takeover(&self, takeover: Millis) -> Result<(), ProposeError> {
        let skew = self.ctx.config.scheduler.max_clock_skew_ms;
        let events: Vec<RunEvent> = {
            let d = self.ctx.sm.read();
            d.state
                .schedules()
                .flat_map(|s| plan::takeover(s, self.term, takeover, skew))
                .collect()
        };
        if events.is_empty() {
            return Ok(());
        }
        let (lost, written_off) = events.iter().fold((0, 0), |(l, w), e| match e {
            RunEvent::Lost { started: true, .. } => (l + 1, w),
            _ => (l, w + 1),
        });
        tracing::info!(
            term = self.term,
            lost,
            written_off,
            "settling runs left by the previous leader"
        );
        for chunk in events.chunks(MAX_CLAIMS_PER_ENTRY) {
            let cmd = Command::Record {
                term: self.term,
                node: self.ctx.identity.id,
                events: chunk.to_vec(),
            };
            self.ctx
                .raft
                .write(cmd)
                .with_leader(self.leader_id())
                .await
                .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        }
        // A linearizable read after the writes waits until they are applied here.
        self.ctx
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        Ok(())
    }

    fn parsed_for(&mut self, s: &ScheduleRecord) -> Option<Arc<Schedule>> {
        if let Some((generation, p)) = self.parsed.get(&s.uid)
            && *generation == s.generation
        {
            return Some(p.clone());
        }
        match Schedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref()) {
            Ok(p) => {
                let p = Arc::new(p);
                self.parsed.insert(s.uid.clone(), (s.generation, p.clone()));
                Some(p)
            }
            Err(e) => {
                // Validated on the way in; only a grammar change between releases gets here.
                tracing::error!(schedule = %s.key(), error = %e, "unparseable schedule is not fired");
                None
            }
        }
    }

    fn refresh(&mut self, dirty: Dirty) {
        let ctx = self.ctx.clone();
        let d = ctx.sm.read();
        if dirty.all {
            self.due.clear();
            self.due_of.clear();
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
        if let Some(at) = self.due_of.remove(uid) {
            self.due.remove(&(at, uid.to_string()));
        }
        self.parsed.remove(uid);
    }

    /// Re-reads one schedule: its next claimable instant and its pending starts.
    fn update(&mut self, s: &ScheduleRecord) {
        if let Some(at) = self.due_of.remove(&s.uid) {
            self.due.remove(&(at, s.uid.clone()));
        }
        if let Some(p) = self.parsed_for(s)
            && let Some(next) = plan::next_claimable(s, &p)
        {
            self.due.insert((next, s.uid.clone()));
            self.due_of.insert(s.uid.clone(), next);
        }
        for run in &s.active {
            if let Some(p) = plan::pending_start(run)
                && self.queued.insert((run.run_id.clone(), p.attempt))
            {
                self.queue
                    .insert((p.at, run.run_id.clone(), p.attempt), s.uid.clone());
            }
        }
    }

    /// Claims every fire due within the look-ahead, in one entry, without
    /// waiting for it: the claimed runs arrive through the change feed.
    fn claim(&mut self, err_tx: &mpsc::UnboundedSender<String>) {
        let now = now_ms();
        let horizon = now + self.settings.lookahead_ms;
        let mut fires = Vec::new();
        {
            let ctx = self.ctx.clone();
            let d = ctx.sm.read();
            while let Some((at, uid)) = self.due.first().cloned() {
                if at > horizon {
                    break;
                }
                self.due.pop_first();
                self.due_of.remove(&uid);
                let Some(s) = d.state.get_by_uid(&uid) else {
                    continue;
                };
                let Some(p) = self.parsed_for(s) else {
                    continue;
                };
                fires.extend(plan::claims(s, &p, now, &self.settings));
            }
        }
        if fires.is_empty() {
            return;
        }
        for chunk in fires.chunks(MAX_CLAIMS_PER_ENTRY) {
            let cmd = Command::Claim {
                term: self.term,
                node: self.ctx.identity.id,
                now,
                fires: chunk.to_vec(),
            };
            let raft = self.ctx.raft.clone();
            let leader = self.leader_id();
            let err_tx = err_tx.clone();
            tokio::spawn(async move {
                let (responder, done) = openraft::impls::ProgressResponder::complete_only();
                let r = match raft
                    .write(cmd)
                    .with_leader(leader)
                    .responder(responder)
                    .await
                {
                    Err(e) => Err(e.to_string()),
                    Ok(()) => match done.await {
                        Ok(Ok(resp)) => match resp.data {
                            Response::Claim(outcomes) => {
                                let dup = outcomes
                                    .iter()
                                    .filter(|o| **o != crate::sm::ClaimOutcome::Claimed)
                                    .count();
                                if dup > 0 {
                                    tracing::debug!(dup, "fires already claimed");
                                }
                                Ok(())
                            }
                            other => Err(format!("unexpected claim response {other:?}")),
                        },
                        Ok(Err(e)) => {
                            Err(write_error(openraft::errors::RaftError::APIError(e)).to_string())
                        }
                        Err(_) => Err("raft stopped".to_string()),
                    },
                };
                if let Err(e) = r {
                    let _ = err_tx.send(e);
                }
            });
        }
    }

    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let (at, _, _) = self.queue.first_key_value()?.0;
        let wait_us = at * 1000 - now_us() - SPIN_US;
        Some(tokio::time::Instant::now() + Duration::from_micros(wait_us.max(0) as u64))
    }

    fn lease_valid(&self) -> bool {
        use openraft::Instant as _;
        match self.ctx.raft.as_leader() {
            Ok(l) => {
                l.leader_id().term == self.term
                    && l.last_quorum_acked()
                        .is_some_and(|t| t.elapsed() < self.lease)
            }
            Err(_) => false,
        }
    }

    /// Starts everything due now; spins through the last moments before an
    /// instant so the start is not late by a timer tick.
    async fn dispatch(&mut self, recorder: &Recorder) {
        let Some((&(first_at, _, _), _)) = self.queue.first_key_value() else {
            return;
        };
        let lead_us = first_at * 1000 - now_us();
        if lead_us > SPIN_US {
            return;
        }
        while now_us() < first_at * 1000 {
            std::hint::spin_loop();
            if now_us() + 200 < first_at * 1000 {
                tokio::task::yield_now().await;
            }
        }
        let now = now_ms();
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, run_id, attempt), uid) = entry.remove_entry();
            self.queued.remove(&(run_id.clone(), attempt));
            due.push((uid, run_id, attempt));
        }
        if !self.lease_valid() {
            // No quorum contact within the lease: another node may be taking
            // over, so nothing starts. Retry shortly; the term ends if it is lost.
            let retry = now_ms() + 5;
            for (uid, run_id, attempt) in due {
                if self.queued.insert((run_id.clone(), attempt)) {
                    self.queue.insert((retry, run_id, attempt), uid);
                }
            }
            return;
        }
        let ctx = self.ctx.clone();
        let d = ctx.sm.read();
        for (uid, run_id, attempt) in due {
            let Some(s) = d.state.get_arc_by_uid(&uid) else {
                continue;
            };
            let Some(run) = s.active.iter().find(|r| r.run_id == run_id) else {
                continue;
            };
            if plan::pending_start(run).map(|p| p.attempt) != Some(attempt) {
                continue; // settled meanwhile (replaced, deleted, already started)
            }
            let start = match plan::at_start(&s, run, now) {
                StartDecision::Start => true,
                StartDecision::Events(events, replace) => {
                    for e in &events {
                        if let RunEvent::Replaced { run, .. } = e
                            && let Some((_, token)) = self.running.remove(&run.run_id)
                        {
                            token.cancel();
                        }
                        self.count(e);
                    }
                    for e in events {
                        recorder.record(e);
                    }
                    replace
                }
            };
            if !start {
                continue;
            }
            let started_us = now_us();
            if attempt == 1 || run.first_start.is_none() {
                let late = (started_us - run.instant * 1000).max(0) as f64 / 1e6;
                self.ctx.metrics.fire_lateness.observe(late);
            } else {
                self.ctx.metrics.retries.inc();
            }
            recorder.record(RunEvent::Started {
                run: RunRef {
                    uid: uid.clone(),
                    run_id: run_id.clone(),
                },
                attempt,
                at: started_us / 1000,
            });
            let token = self.cancel.child_token();
            if let Some((_, old)) = self
                .running
                .insert(run_id.clone(), (attempt, token.clone()))
            {
                old.cancel();
            }
            let a = Attempt {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                run_id: run_id.clone(),
                attempt,
                scheduled_ms: run.instant,
                term: self.term,
                timeout: Duration::from_millis(s.spec.timeout_ms() as u64),
            };
            let executors = self.executors.clone();
            let done_tx = self.done_tx.clone();
            let schedule = s.clone();
            tokio::spawn(async move {
                let outcome = executors.run(&schedule.spec, &a, token.clone()).await;
                if token.is_cancelled() {
                    return; // replaced, deleted or leadership moved: not ours to record
                }
                let _ = done_tx.send(Done {
                    uid,
                    run_id: a.run_id,
                    attempt: a.attempt,
                    outcome,
                    at: now_ms(),
                });
            });
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
        self.count(&e);
        recorder.record(e);
    }

    fn count(&self, e: &RunEvent) {
        let result = match e {
            RunEvent::Finished { outcome, .. } => {
                crate::sm::runs::FinalResult::from_outcome(*outcome).as_str()
            }
            RunEvent::Missed { .. } => "Missed",
            RunEvent::Skipped { .. } => "Skipped",
            RunEvent::Replaced { .. } => "Replaced",
            RunEvent::Lost { .. } => "Lost",
            RunEvent::Started { .. } => return,
        };
        self.ctx.metrics.runs.with_label_values(&[result]).inc();
    }
}
