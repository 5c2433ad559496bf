//! The status writer: while this node leads, it mirrors each Kubernetes
//! schedule's runs into its ScheduledJob's status and emits Warning Events
//! for runs that ended badly.
//!
//! ```text
//!  state machine ──change feed (coalesced uids)──► dirty queue (FIFO, one entry per uid)
//!                                                      │ token bucket (--status-qps, --status-burst)
//!                                                      ▼
//!       status::compute(record, now) ── same as last written? ──yes──► skip (no request)
//!                │ no
//!                ├─► Warning Events for new Failed / TimedOut / Lost / Missed runs
//!                └─► SSA patch of status (field manager raftcron-node, force, metadata.uid)
//!                      ok ──► remember a hash of it │ 404 / uid conflict ──► drop (gone)
//!                      other ──► retry with backoff 1 s … 60 s
//! ```
//!
//! Every node runs it; it acts only while Raft says this node is the leader
//! of the current term, and the writing future is dropped, in-flight request
//! included, the moment that stops being true. A new term starts with one
//! paginated LIST of ScheduledJobs: statuses already up to date are not
//! rewritten, and failures the previous leader already showed are not
//! reported again.
//!
//! **Effective lag.** Changes are coalesced per schedule: a schedule that
//! changed ten times while waiting is written once, with its latest state.
//! Writes (patches and Events alike) are paced at `--status-qps` (default
//! 20/s) after an initial `--status-burst` (default 50). With `D` schedules
//! dirty at once, the last of them is written after about
//! `max(0, D - burst) / qps` seconds: 10,000 ScheduledJobs that all fire
//! every minute keep the writer permanently busy and each status trails the
//! replicated state by up to 10,000 / 20 = 500 s, while the API server sees
//! a steady 20 writes/s and no more. Schedules firing rarely are written
//! within `1 / qps` of their change as long as fewer than `burst` are
//! waiting. Raise `--status-qps` when the API server can take it; the
//! replicated state (`raftcronctl runs`) is never behind. The
//! `raftcron_node_status_pending` gauge shows the backlog.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams, Patch, PatchParams};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use k8s_openapi::api::core::v1::ObjectReference;
use raftcron_crds::names::FIELD_MANAGER_NODE;
use raftcron_crds::{ScheduledJob, ScheduledJobStatus};

use super::Kube;
use super::rate::{TokenBucket, backoff};
use super::status::{self, Failure};
use crate::ctx::{Leadership, NodeCtx, Stop, TermEnd};
use crate::sm::ScheduleRecord;
use crate::store::feed::Dirty;

/// Objects per LIST page when a term starts.
const PAGE: u32 = 500;

/// What outlives a leadership term: the Events already emitted, per
/// schedule uid, limited to runs still in the schedule's bounded history.
#[derive(Default)]
struct Memory {
    reported: HashMap<String, HashSet<String>>,
}

/// Runs for the life of the node.
pub async fn run(ctx: Arc<NodeCtx>, kube: Kube, stop: Stop) {
    let mut memory = Memory::default();
    let mut leadership = Leadership::new(&ctx, stop);
    while let Some(term) = leadership.next_term().await {
        tracing::info!(
            term,
            "status writer: leading, writing ScheduledJob statuses"
        );
        let end = {
            let writing = Term::new(&ctx, &kube, &mut memory).run();
            tokio::pin!(writing);
            tokio::select! {
                // It loops until dropped; were it ever to return, start a new one.
                _ = &mut writing => TermEnd::Ended,
                end = leadership.term_over(term) => end,
            }
        };
        ctx.metrics.status_pending.set(0);
        if end == TermEnd::Stopping {
            return;
        }
        tracing::info!(term, "status writer: leadership ended, stopped writing");
    }
}

/// What to do with a schedule after an attempt to write it.
enum Written {
    Ok,
    Gone,
    Retry,
}

/// One leadership term of writing.
struct Term<'a> {
    ctx: &'a NodeCtx,
    kube: &'a Kube,
    memory: &'a mut Memory,
    /// Hash of the last status written (or read back) per uid: the full
    /// statuses of 100,000 schedules would not fit the node's memory budget.
    last: HashMap<String, u64>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    retries: BinaryHeap<Reverse<(Instant, String)>>,
    failures: HashMap<String, u32>,
    /// Objects that are gone (404) or re-created (uid conflict): a uid never
    /// comes back, so they are not tried again this term.
    gone: HashSet<String>,
    bucket: TokenBucket,
    reporter: Reporter,
}

fn hash(status: &ScheduledJobStatus) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(status).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the ScheduledJob is gone")]
    Gone,
    #[error("the ScheduledJob was re-created (now uid {uid})")]
    Recreated { uid: String },
    #[error(transparent)]
    Api(::kube::Error),
}

/// Applies the node's status fields to the schedule's ScheduledJob.
///
/// The API server ignores `metadata.uid` in an apply to the status
/// subresource (measured against v1.36: the status strategy copies the
/// stored metadata over the request's), so the uid in the body alone is no
/// precondition. The answer names the object written, though: when it is a
/// re-created namesake, the fields just applied are withdrawn at once (an
/// apply of an empty status under the same field manager removes exactly
/// them). The deleted object's runs were visible on the new one for one
/// round trip at most, and only in the rare case that the delete, the
/// operator's finalizer and the re-creation all fell inside that request.
pub async fn patch_status(
    client: &::kube::Client,
    s: &ScheduleRecord,
    computed: &ScheduledJobStatus,
) -> Result<(), PatchError> {
    let api: Api<ScheduledJob> = Api::namespaced(client.clone(), &s.namespace);
    let params = PatchParams::apply(FIELD_MANAGER_NODE).force();
    let body = status::apply_body(s, computed);
    let written = match api
        .patch_status(&s.name, &params, &Patch::Apply(&body))
        .await
    {
        Ok(obj) => obj,
        Err(e) if is_gone(&e) => return Err(PatchError::Gone),
        Err(e) => return Err(PatchError::Api(e)),
    };
    let uid = written.metadata.uid.unwrap_or_default();
    if uid == s.uid {
        return Ok(());
    }
    let withdraw = serde_json::json!({
        "apiVersion": raftcron_crds::names::API_VERSION,
        "kind": "ScheduledJob",
        "metadata": {"name": s.name, "namespace": s.namespace, "uid": uid},
        "status": {},
    });
    if let Err(e) = api
        .patch_status(&s.name, &params, &Patch::Apply(&withdraw))
        .await
        && !is_gone(&e)
    {
        tracing::warn!(schedule = %s.key(), error = %e, "cannot withdraw a status written to a re-created ScheduledJob");
    }
    Err(PatchError::Recreated { uid })
}

/// A refusal that retrying cannot fix: the object is gone, or it is a new
/// object under the same name (the `metadata.uid` precondition failed).
pub(crate) fn is_gone(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(s) => {
            s.is_not_found()
                || s.is_conflict()
                // An apply whose metadata.uid differs from the stored
                // object's may be refused as an invalid (immutable) uid.
                || (s.is_invalid() && s.message.contains("uid"))
        }
        _ => false,
    }
}

impl<'a> Term<'a> {
    fn new(ctx: &'a NodeCtx, kube: &'a Kube, memory: &'a mut Memory) -> Self {
        let instance = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("raftcron-node-id-{}", ctx.identity.id));
        Self {
            ctx,
            kube,
            memory,
            last: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            retries: BinaryHeap::new(),
            failures: HashMap::new(),
            gone: HashSet::new(),
            bucket: TokenBucket::new(kube.status.qps, kube.status.burst, Instant::now()),
            reporter: Reporter {
                controller: FIELD_MANAGER_NODE.to_string(),
                instance: Some(instance),
            },
        }
    }

    async fn run(mut self) {
        // Subscribed before the LIST, so nothing that changes meanwhile is missed.
        let feed = self.ctx.sm.feed().subscribe();
        self.seed().await;
        loop {
            let dirty = feed.take();
            if !dirty.is_empty() {
                self.absorb(dirty);
            }
            let now = Instant::now();
            while let Some(Reverse((at, _))) = self.retries.peek()
                && *at <= now
            {
                let Some(Reverse((_, uid))) = self.retries.pop() else {
                    break;
                };
                self.enqueue(uid);
            }
            self.ctx
                .metrics
                .status_pending
                .set((self.queue.len() + self.retries.len()) as i64);
            if let Some(uid) = self.queue.pop_front() {
                self.queued.remove(&uid);
                self.write(uid).await;
                continue;
            }
            let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = feed.changed() => {}
                _ = tokio::time::sleep_until(next_retry.unwrap_or(now).into()), if next_retry.is_some() => {}
            }
        }
    }

    async fn token(&mut self) {
        while let Err(wait) = self.bucket.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads what the previous leader wrote, so a new leader neither rewrites
    /// up-to-date statuses nor repeats Events the statuses already show.
    async fn seed(&mut self) {
        let api: Api<ScheduledJob> = Api::all(self.kube.client.clone());
        let mut params = ListParams::default().limit(PAGE);
        let mut seen = 0usize;
        loop {
            self.token().await;
            let list = match api.list(&params).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "status writer: cannot list ScheduledJobs; every status will be written");
                    return;
                }
            };
            for obj in list.items {
                let (Some(uid), Some(st)) = (obj.metadata.uid, obj.status) else {
                    continue;
                };
                seen += 1;
                let reported: HashSet<String> =
                    status::reported_in(&st).map(str::to_string).collect();
                if !reported.is_empty() {
                    self.memory
                        .reported
                        .entry(uid.clone())
                        .or_default()
                        .extend(reported);
                }
                self.last.insert(uid, hash(&status::owned(st)));
            }
            match list.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        tracing::debug!(seen, "status writer: read the current statuses");
    }

    fn enqueue(&mut self, uid: String) {
        if self.gone.contains(&uid) || self.queued.contains(&uid) {
            return;
        }
        self.queued.insert(uid.clone());
        self.queue.push_back(uid);
    }

    fn absorb(&mut self, dirty: Dirty) {
        for (uid, _) in dirty.deleted {
            self.forget(&uid);
            self.memory.reported.remove(&uid);
        }
        if dirty.all {
            let uids: Vec<String> = {
                let d = self.ctx.sm.read();
                d.state
                    .schedules()
                    .filter(|s| s.kubernetes)
                    .map(|s| s.uid.clone())
                    .collect()
            };
            let live: HashSet<&String> = uids.iter().collect();
            self.memory.reported.retain(|uid, _| live.contains(uid));
            self.last.retain(|uid, _| live.contains(uid));
            for uid in uids {
                self.enqueue(uid);
            }
        }
        for uid in dirty.uids {
            // A schedule waiting out a backoff is written when it ends, with
            // whatever its state is then.
            if !self.failures.contains_key(&uid) {
                self.enqueue(uid);
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        self.last.remove(uid);
        self.failures.remove(uid);
        self.gone.remove(uid);
        if self.queued.remove(uid) {
            self.queue.retain(|u| u != uid);
        }
    }

    async fn write(&mut self, uid: String) {
        let record = self.ctx.sm.read().state.get_arc_by_uid(&uid);
        let Some(s) = record.filter(|s| s.kubernetes) else {
            self.forget(&uid);
            return;
        };
        let now = crate::clock::now_ms();
        let computed = status::compute(&s, now);
        let digest = hash(&computed);
        let mut reported = self.memory.reported.remove(&uid).unwrap_or_default();
        // Bounded by the history limits: a run that left the history cannot
        // be reported again anyway.
        reported.retain(|id| s.history.iter().any(|r| r.run_id == *id));
        let failures = status::failures(&s, &reported, now);
        let mut events_failed = false;
        let mut gone = false;
        for f in &failures {
            self.token().await;
            match self.publish(&s, f).await {
                Ok(()) => {
                    reported.insert(f.run_id.clone());
                }
                Err(e) if is_gone(&e) => {
                    gone = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(schedule = %s.key(), run_id = %f.run_id, error = %e, "cannot emit the run's Event");
                    events_failed = true;
                }
            }
        }
        if !reported.is_empty() {
            self.memory.reported.insert(uid.clone(), reported);
        }
        let mut result = if gone { Written::Gone } else { Written::Ok };
        if !gone && self.last.get(&uid) != Some(&digest) {
            self.token().await;
            result = self.patch(&s, &computed).await;
            if matches!(result, Written::Ok) {
                self.last.insert(uid.clone(), digest);
            }
        }
        if events_failed && matches!(result, Written::Ok) {
            result = Written::Retry;
        }
        match result {
            Written::Ok => {
                self.failures.remove(&uid);
            }
            Written::Gone => {
                tracing::debug!(schedule = %s.key(), uid, "status writer: the ScheduledJob is gone or was re-created");
                self.forget(&uid);
                self.gone.insert(uid);
            }
            Written::Retry => {
                let n = self.failures.entry(uid.clone()).or_insert(0);
                *n += 1;
                let at = Instant::now() + backoff(*n);
                self.retries.push(Reverse((at, uid)));
            }
        }
    }

    async fn patch(&mut self, s: &ScheduleRecord, computed: &ScheduledJobStatus) -> Written {
        let outcome = match patch_status(&self.kube.client, s, computed).await {
            Ok(()) => Written::Ok,
            Err(PatchError::Gone) => Written::Gone,
            Err(PatchError::Recreated { uid }) => {
                tracing::warn!(schedule = %s.key(), old_uid = %s.uid, new_uid = %uid,
                    "a status for a deleted ScheduledJob reached its re-created namesake; taken back");
                // What this writer believed about the new object no longer holds.
                self.last.remove(&uid);
                self.enqueue(uid);
                Written::Gone
            }
            Err(PatchError::Api(e)) => {
                tracing::warn!(schedule = %s.key(), error = %e, "cannot write the ScheduledJob status; retrying");
                Written::Retry
            }
        };
        let label = match outcome {
            Written::Ok => "ok",
            Written::Gone => "gone",
            Written::Retry => "error",
        };
        self.ctx
            .metrics
            .status_patches
            .with_label_values(&[label])
            .inc();
        outcome
    }

    async fn publish(&self, s: &ScheduleRecord, f: &Failure) -> Result<(), ::kube::Error> {
        // A recorder per Event: kube's recorder folds repeats of the same
        // reason into one series that keeps the first note, and every run
        // deserves its own (its run id and message).
        let recorder = Recorder::new(self.kube.client.clone(), self.reporter.clone());
        let regarding = ObjectReference {
            api_version: Some(raftcron_crds::names::API_VERSION.into()),
            kind: Some("ScheduledJob".into()),
            name: Some(s.name.clone()),
            namespace: Some(s.namespace.clone()),
            uid: Some(s.uid.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: f.reason.to_string(),
            note: Some(f.note.clone()),
            action: "Run".into(),
            secondary: None,
        };
        tokio::time::timeout(
            Duration::from_secs(10),
            recorder.publish(&event, &regarding),
        )
        .await
        .unwrap_or_else(|_| {
            Err(::kube::Error::Service(
                "timed out publishing the Event".into(),
            ))
        })
    }
}
