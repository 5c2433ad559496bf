//! `job` actions: one Kubernetes Job per (run id, attempt), as CronJob
//! creates one per schedule time, followed to completion.
//!
//! ```text
//!  Attempt ──build_job(template)──► Job "<sj>-<hash(run id, attempt)>" ──create (409 → follow it)
//!                                        │ watch metadata.name=<job>
//!                                        ├─ Complete=True ──► Succeeded ─┐
//!                                        ├─ Failed=True ────► Failed ────┼─► prune old Jobs (history limits)
//!                                        └─ timeout / cancel (future dropped) ──► delete (Background)
//! ```
//!
//! The name is derived from the run id and attempt, so a retried create of
//! the same attempt (a start replayed after an error) finds the Job it made
//! instead of starting a second one; a new attempt gets a new Job. The pure
//! parts (name, labels, the Job built from the template) are functions of
//! their arguments and are unit-tested with YAML fixtures below; the
//! API-server path is tested in `crate::kube::tests`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, PostParams};
use ::kube::runtime::watcher;
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use raftcron_crds::names::{self, annotation, label};
use raftcron_crds::{JobAction, ScheduledJobSpec};

use super::{Attempt, JobRunner, Outcome};

/// `app.kubernetes.io/managed-by` on every Job raftcron creates.
pub const MANAGED_BY: &str = "raftcron";

/// Longest Job name: the Job controller copies it into the `job-name` label
/// of its pods, and label values stop at 63 characters.
const MAX_NAME: usize = 63;
/// 8 hex digits and the dash before them.
const HASH_SUFFIX: usize = 9;

/// FNV-1a: stable across platforms and releases (unlike `DefaultHasher`), so
/// every node derives the same Job name for the same attempt.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hex8(h: u64) -> String {
    format!("{:08x}", (h as u32) ^ ((h >> 32) as u32))
}

/// `name` cut to `max` characters as a DNS-1123 label: dots (allowed in a
/// ScheduledJob name) become dashes, and a cut never leaves a trailing dash.
fn label_prefix(name: &str, max: usize) -> String {
    let mut s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(max)
        .collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

/// The Job of one attempt: `<scheduledjob name, cut>-<8 hex of hash(run id, attempt)>`,
/// at most 63 characters and a DNS-1123 label.
pub fn job_name(scheduledjob: &str, run_id: &str, attempt: u32) -> String {
    let hash = hex8(fnv1a(&[run_id.as_bytes(), &attempt.to_le_bytes()]));
    let prefix = label_prefix(scheduledjob, MAX_NAME - HASH_SUFFIX);
    if prefix.is_empty() {
        format!("job-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Value of [`label::SCHEDULEDJOB`]: the ScheduledJob's name when it fits a
/// label value (63 characters), else its first 54 characters and a hash of
/// the whole name, so two long names sharing a prefix stay apart.
pub fn scheduledjob_label(scheduledjob: &str) -> String {
    if scheduledjob.len() <= MAX_NAME {
        return scheduledjob.to_string();
    }
    let mut prefix: String = scheduledjob.chars().take(MAX_NAME - HASH_SUFFIX).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{}", hex8(fnv1a(&[scheduledjob.as_bytes()])))
}

/// Labels raftcron puts on a Job (and its pod template).
pub fn job_labels(attempt: &Attempt) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (
            label::SCHEDULEDJOB.to_string(),
            scheduledjob_label(&attempt.name),
        ),
        (label::ATTEMPT.to_string(), attempt.attempt.to_string()),
    ])
}

/// The label selector of every Job made for one ScheduledJob.
pub fn selector(scheduledjob: &str) -> String {
    format!(
        "{}={MANAGED_BY},{}={}",
        label::MANAGED_BY,
        label::SCHEDULEDJOB,
        scheduledjob_label(scheduledjob)
    )
}

/// The variables every container of the Job gets, as an exec action does.
fn run_env(attempt: &Attempt) -> [EnvVar; 4] {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    attempt.identity().map(|(_, name, value)| var(name, value))
}

fn add_env(container: &mut Container, vars: &[EnvVar]) {
    let env = container.env.get_or_insert_with(Vec::new);
    // A template that sets one of these itself would otherwise shadow or
    // duplicate the run's values.
    env.retain(|e| !vars.iter().any(|v| v.name == e.name));
    env.extend(vars.iter().cloned());
}

/// The Job of one attempt, built from the action's template: the template's
/// metadata and spec, plus raftcron's name, labels, run id annotation,
/// `RAFTCRON_*` variables in every container and init container, an owner
/// reference to the ScheduledJob (when the schedule mirrors one, so deleting
/// it garbage-collects its Jobs) and, when the template sets none,
/// `activeDeadlineSeconds` = the attempt timeout, so a Job outlives a node
/// that died before it could delete it by at most that long.
pub fn build_job(template: &JobTemplateSpec, attempt: &Attempt) -> Job {
    let meta = template.metadata.clone().unwrap_or_default();
    let ours = job_labels(attempt);
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(ours.clone());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(annotation::RUN_ID.to_string(), attempt.run_id.clone());
    let owner_references = attempt.kubernetes.then(|| {
        vec![OwnerReference {
            api_version: names::API_VERSION.into(),
            kind: names::KIND.into(),
            name: attempt.name.clone(),
            uid: attempt.uid.clone(),
            controller: Some(true),
            // The ScheduledJob's finalizer already orders deletion; blocking
            // would also need delete permission on the owner's finalizers.
            block_owner_deletion: Some(false),
        }]
    });
    let mut spec = template.spec.clone().unwrap_or_default();
    if spec.active_deadline_seconds.is_none() {
        spec.active_deadline_seconds = Some(attempt.timeout.as_secs_f64().ceil().max(1.0) as i64);
    }
    let pod_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(ours);
    let vars = run_env(attempt);
    if let Some(pod) = spec.template.spec.as_mut() {
        for c in pod.containers.iter_mut() {
            add_env(c, &vars);
        }
        for c in pod.init_containers.iter_mut().flatten() {
            add_env(c, &vars);
        }
    }
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&attempt.name, &attempt.run_id, attempt.attempt)),
            namespace: Some(attempt.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Where a Job is, read from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// `reason: message` of the Failed condition.
    Failed(String),
}

impl JobState {
    pub fn is_finished(&self) -> bool {
        *self != JobState::Running
    }
}

pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                let reason = c.reason.as_deref().unwrap_or("Failed");
                return JobState::Failed(match c.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason.to_string(),
                });
            }
            _ => {}
        }
    }
    JobState::Running
}

/// Whether `job` is the Job of this attempt (and not a name collision with
/// another run's, or a user's object).
pub fn is_our_job(job: &Job, attempt: &Attempt) -> bool {
    let meta = &job.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(annotation::RUN_ID))
        .is_some_and(|r| *r == attempt.run_id)
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(label::ATTEMPT))
            .is_some_and(|a| *a == attempt.attempt.to_string())
}

/// The finished Jobs to delete so that at most `keep_succeeded` succeeded and
/// `keep_failed` failed ones remain, newest kept. Jobs still running are
/// never pruned.
pub fn prune(jobs: &[Job], keep_succeeded: u32, keep_failed: u32) -> Vec<String> {
    let mut finished: Vec<(&Job, bool)> = jobs
        .iter()
        .filter_map(|j| match job_state(j) {
            JobState::Running => None,
            JobState::Succeeded => Some((j, true)),
            JobState::Failed(_) => Some((j, false)),
        })
        .collect();
    // Newest first; the name breaks ties (timestamps have second resolution).
    finished.sort_by(|(a, _), (b, _)| {
        let key = |j: &Job| {
            (
                j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                j.metadata.name.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
    let (mut ok, mut failed) = (0u32, 0u32);
    finished
        .into_iter()
        .filter_map(|(j, success)| {
            let (n, keep) = if success {
                (&mut ok, keep_succeeded)
            } else {
                (&mut failed, keep_failed)
            };
            *n += 1;
            (*n > keep).then(|| j.metadata.name.clone()).flatten()
        })
        .collect()
}

/// Creates and follows Jobs through the Kubernetes API.
pub struct KubeJobRunner {
    client: ::kube::Client,
}

impl KubeJobRunner {
    pub fn new(client: ::kube::Client) -> Self {
        Self { client }
    }
}

impl JobRunner for KubeJobRunner {
    fn run<'a>(
        &'a self,
        action: &'a JobAction,
        spec: &'a ScheduledJobSpec,
        attempt: &'a Attempt,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(run_job(self.client.clone(), action, spec, attempt))
    }
}

/// History limits of the ScheduledJob, for pruning.
#[derive(Clone, Copy)]
struct Limits {
    succeeded: u32,
    failed: u32,
}

/// Deletes the Job unless disarmed: the attempt's future is dropped at its
/// timeout or on cancellation, and the Job must not run on after that.
struct DeleteOnDrop {
    api: Api<Job>,
    name: String,
    attempt: Attempt,
    limits: Limits,
    armed: bool,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(job = %self.name, "no runtime to delete the Job of a stopped attempt");
            return;
        };
        let (api, name, attempt, limits) = (
            self.api.clone(),
            self.name.clone(),
            self.attempt.clone(),
            self.limits,
        );
        rt.spawn(async move {
            delete_job(&api, &name, &attempt).await;
            prune_jobs(&api, &attempt.name, limits).await;
        });
    }
}

/// How often a create that failed for a transient reason is retried within
/// the attempt (the deterministic name makes a retry safe).
const CREATE_TRIES: u32 = 4;

async fn run_job(
    client: ::kube::Client,
    action: &JobAction,
    spec: &ScheduledJobSpec,
    attempt: &Attempt,
) -> Outcome {
    let api: Api<Job> = Api::namespaced(client, &attempt.namespace);
    let job = build_job(&action.template, attempt);
    let name = job.metadata.name.clone().unwrap_or_default();
    let limits = Limits {
        succeeded: spec.successful_history_limit(),
        failed: spec.failed_history_limit(),
    };
    // Armed before the create: a create in flight when the attempt is
    // dropped may still land, and the delete task retries for it.
    let mut guard = DeleteOnDrop {
        api: api.clone(),
        name: name.clone(),
        attempt: attempt.clone(),
        limits,
        armed: true,
    };
    if let Err(message) = create_or_adopt(&api, &job, attempt).await {
        guard.armed = false;
        return Outcome::failed(message);
    }
    tracing::debug!(job = %name, run_id = %attempt.run_id, attempt = attempt.attempt, "Job created");
    let state = follow(&api, &name).await;
    guard.armed = false;
    drop(guard);
    let outcome = match state {
        JobState::Succeeded => Outcome::ok(Some(format!("Job {name} completed"))),
        JobState::Failed(why) => Outcome::failed(format!("Job {name} failed: {why}")),
        JobState::Running => Outcome::failed(format!("Job {name} was deleted before it finished")),
    };
    // Pruning does not delay the result.
    let sj = attempt.name.clone();
    tokio::spawn(async move { prune_jobs(&api, &sj, limits).await });
    outcome
}

/// Creates the Job, or adopts it when this attempt already created it.
async fn create_or_adopt(api: &Api<Job>, job: &Job, attempt: &Attempt) -> Result<(), String> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let mut delay = Duration::from_millis(200);
    for tries in 1..=CREATE_TRIES {
        let err = match api.create(&PostParams::default(), job).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match &err {
            ::kube::Error::Api(s) if s.is_already_exists() => {
                return match api.get(name).await {
                    Ok(existing) if is_our_job(&existing, attempt) => Ok(()),
                    Ok(_) => Err(format!(
                        "a Job named {name} already exists and was not created for this run and attempt"
                    )),
                    Err(e) => Err(format!(
                        "cannot read the existing Job {name}: {}",
                        api_message(&e)
                    )),
                };
            }
            // The API server refused the object (invalid template, forbidden,
            // quota): retrying changes nothing.
            ::kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 => {
                return Err(format!("cannot create Job {name}: {}", api_message(&err)));
            }
            _ if tries == CREATE_TRIES => {
                return Err(format!("cannot create Job {name}: {}", api_message(&err)));
            }
            _ => {
                tracing::debug!(job = %name, error = %err, "creating the Job failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    Err(format!("cannot create Job {name}"))
}

/// A short message for the run record: the API server's own message, not
/// the whole debug form.
pub(crate) fn api_message(e: &::kube::Error) -> String {
    match e {
        ::kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Watches the one Job until it finishes; `Running` means it disappeared.
async fn follow(api: &Api<Job>, name: &str) -> JobState {
    use ::kube::runtime::WatchStreamExt;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), config).default_backoff();
    futures::pin_mut!(stream);
    let mut seen_in_init = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(job)) | Ok(watcher::Event::InitApply(job)) => {
                seen_in_init = true;
                let state = job_state(&job);
                if state.is_finished() {
                    return state;
                }
            }
            Ok(watcher::Event::Delete(_)) => return JobState::Running,
            Ok(watcher::Event::Init) => seen_in_init = false,
            Ok(watcher::Event::InitDone) if !seen_in_init => return JobState::Running,
            Ok(watcher::Event::InitDone) => {}
            // The watcher re-lists after errors (with backoff); the attempt
            // timeout bounds how long that may go on.
            Err(e) => tracing::debug!(job = %name, error = %e, "watching the Job"),
        }
    }
    JobState::Running
}

/// Deletes the attempt's Job and its pods, only if it is the attempt's own
/// (checked by its run id annotation and pinned by uid). A 404 right after a
/// dropped create may mean the create has not landed yet, so it is retried
/// briefly.
async fn delete_job(api: &Api<Job>, name: &str, attempt: &Attempt) {
    for tries in 0..3 {
        if tries > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let job = match api.get(name).await {
            Ok(job) => job,
            Err(::kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "cannot read the Job of a stopped attempt");
                continue;
            }
        };
        if !is_our_job(&job, attempt) {
            return;
        }
        let mut params = DeleteParams::background();
        params.preconditions = Some(::kube::api::Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        });
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(job = %name, run_id = %attempt.run_id, attempt = attempt.attempt,
                    "deleted the Job of a timed-out or cancelled attempt");
                return;
            }
            Err(::kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => return,
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "cannot delete the Job of a stopped attempt")
            }
        }
    }
}

/// Deletes finished Jobs of a ScheduledJob beyond its history limits.
async fn prune_jobs(api: &Api<Job>, scheduledjob: &str, limits: Limits) {
    let jobs = match api
        .list(&ListParams::default().labels(&selector(scheduledjob)))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(scheduledjob, error = %e, "cannot list Jobs to prune");
            return;
        }
    };
    for name in prune(&jobs, limits.succeeded, limits.failed) {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::debug!(job = %name, "pruned a finished Job beyond the history limit"),
            Err(::kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => tracing::debug!(job = %name, error = %e, "cannot prune the Job"),
        }
    }
}

/// Shared so tests can build runners; the node keeps one per process.
pub fn runner(client: ::kube::Client) -> Arc<dyn JobRunner> {
    Arc::new(KubeJobRunner::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6a1f3c2e-9b1d-4f7e-8a2b-0c5d7e9f1a3b";

    fn attempt(name: &str, n: u32) -> Attempt {
        Attempt {
            namespace: "billing".into(),
            name: name.into(),
            uid: UID.into(),
            kubernetes: true,
            run_id: names::run_id(UID, 1_795_311_000_000),
            attempt: n,
            scheduled_ms: 1_795_311_000_000,
            term: 7,
            timeout: Duration::from_millis(299_500),
        }
    }

    fn template(yaml: &str) -> JobTemplateSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    const TEMPLATE: &str = r#"
metadata:
  labels: {team: billing}
  annotations: {note: nightly}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
        - name: prepare
          image: busybox
      containers:
        - name: report
          image: example.com/report:1
          env:
            - {name: MODE, value: nightly}
            - {name: RAFTCRON_TERM, value: "user value"}
        - name: sidecar
          image: busybox
"#;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_job_name_is_the_same_for_the_same_attempt_and_differs_between_attempts_and_runs() {
        let a = attempt("nightly-report", 1);
        let name = job_name(&a.name, &a.run_id, 1);
        assert_eq!(name, job_name(&a.name, &a.run_id, 1));
        assert!(name.starts_with("nightly-report-"), "{name}");
        assert_eq!(name.len(), "nightly-report-".len() + 8);
        assert_ne!(name, job_name(&a.name, &a.run_id, 2));
        assert_ne!(
            name,
            job_name(&a.name, &names::run_id(UID, 1_795_311_001_000), 1)
        );
    }

    #[test]
    fn a_long_or_dotted_scheduledjob_name_still_gives_a_dns_label_of_at_most_63_characters() {
        let long = "a".repeat(60) + "-" + &"b".repeat(100);
        for sj in [
            long.as_str(),
            "reports.v2.nightly",
            "x",
            &"z".repeat(54),
            &format!("{}-{}", "y".repeat(53), "tail"),
        ] {
            let name = job_name(sj, "run", 3);
            assert!(is_dns_label(&name), "{sj:?} gave {name:?}");
        }
        assert!(job_name("reports.v2.nightly", "run", 1).starts_with("reports-v2-nightly-"));
    }

    #[test]
    fn the_scheduledjob_label_is_the_name_when_it_fits_and_a_hashed_cut_when_it_does_not() {
        assert_eq!(scheduledjob_label("nightly"), "nightly");
        let a = "a".repeat(70);
        let b = "a".repeat(71);
        assert_eq!(scheduledjob_label(&a).len(), 63);
        assert_ne!(scheduledjob_label(&a), scheduledjob_label(&b));
        assert_eq!(
            selector("nightly"),
            "app.kubernetes.io/managed-by=raftcron,raftcron.dev/scheduledjob=nightly"
        );
    }

    #[test]
    fn the_job_carries_labels_annotations_and_the_owner_reference() {
        let a = attempt("nightly-report", 2);
        let job = build_job(&template(TEMPLATE), &a);
        let meta = &job.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("billing"));
        assert_eq!(meta.name, Some(job_name(&a.name, &a.run_id, 2)));
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "raftcron");
        assert_eq!(labels["raftcron.dev/scheduledjob"], "nightly-report");
        assert_eq!(labels["raftcron.dev/attempt"], "2");
        assert_eq!(labels["team"], "billing", "template labels are kept");
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert_eq!(annotations["raftcron.dev/run-id"], a.run_id);
        assert_eq!(annotations["note"], "nightly");
        let owner = &meta.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            (names::API_VERSION, names::KIND)
        );
        assert_eq!(
            (owner.name.as_str(), owner.uid.as_str()),
            ("nightly-report", UID)
        );
        assert_eq!(owner.block_owner_deletion, Some(false));
        let pod_labels = job.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
        assert_eq!(
            pod_labels
                .and_then(|m| m.labels.as_ref())
                .map(|l| l["raftcron.dev/attempt"].as_str()),
            Some("2")
        );
        assert!(is_our_job(&job, &a));
        assert!(!is_our_job(&job, &attempt("nightly-report", 3)));
    }

    #[test]
    fn every_container_and_init_container_gets_the_run_variables_once() {
        let a = attempt("nightly-report", 2);
        let job = build_job(&template(TEMPLATE), &a);
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod spec");
        let want = [
            ("RAFTCRON_RUN_ID", a.run_id.as_str()),
            ("RAFTCRON_ATTEMPT", "2"),
            ("RAFTCRON_SCHEDULED_TIME", "2026-11-22T01:30:00.000Z"),
            ("RAFTCRON_TERM", "7"),
        ];
        let containers: Vec<&Container> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .collect();
        assert_eq!(containers.len(), 3);
        for c in containers {
            let env = env_of(c);
            for (name, value) in want {
                let found: Vec<_> = env.iter().filter(|(n, _)| n == name).collect();
                assert_eq!(
                    found.len(),
                    1,
                    "{} has {name} {} times",
                    c.name,
                    found.len()
                );
                assert_eq!(found[0].1, value, "{} {name}", c.name);
            }
        }
        assert_eq!(
            env_of(&pod.containers[0])[0],
            ("MODE".into(), "nightly".into())
        );
    }

    #[test]
    fn the_attempt_timeout_bounds_the_job_unless_the_template_sets_a_deadline() {
        let a = attempt("r", 1);
        let job = build_job(&template(TEMPLATE), &a);
        assert_eq!(job.spec.and_then(|s| s.active_deadline_seconds), Some(300));
        let own = template(
            "spec: {activeDeadlineSeconds: 30, template: {spec: {containers: [{name: c, image: i}]}}}",
        );
        let job = build_job(&own, &a);
        assert_eq!(job.spec.and_then(|s| s.active_deadline_seconds), Some(30));
    }

    #[test]
    fn a_schedule_that_mirrors_no_object_gets_no_owner_reference() {
        let mut a = attempt("r", 1);
        a.kubernetes = false;
        let job = build_job(&template(TEMPLATE), &a);
        assert_eq!(job.metadata.owner_references, None);
    }

    fn job(yaml: &str) -> Job {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn the_job_state_follows_the_complete_and_failed_conditions() {
        assert_eq!(job_state(&job("metadata: {name: a}")), JobState::Running);
        let running = job(
            "status: {conditions: [{type: SuccessCriteriaMet, status: 'True'}, {type: Complete, status: 'False'}]}",
        );
        assert_eq!(job_state(&running), JobState::Running);
        let done = job("status: {conditions: [{type: Complete, status: 'True'}]}");
        assert_eq!(job_state(&done), JobState::Succeeded);
        let failed = job(
            "status: {conditions: [{type: Failed, status: 'True', reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}]}",
        );
        assert_eq!(
            job_state(&failed),
            JobState::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
    }

    #[test]
    fn pruning_keeps_the_newest_finished_jobs_of_each_kind_and_never_a_running_one() {
        let j = |name: &str, at: &str, cond: Option<&str>| {
            let status = match cond {
                Some(t) => format!("status: {{conditions: [{{type: {t}, status: 'True'}}]}}"),
                None => String::new(),
            };
            job(&format!(
                "metadata: {{name: {name}, creationTimestamp: '{at}'}}\n{status}"
            ))
        };
        let jobs = vec![
            j("ok-1", "2026-11-22T01:00:00Z", Some("Complete")),
            j("ok-3", "2026-11-22T03:00:00Z", Some("Complete")),
            j("ok-2", "2026-11-22T02:00:00Z", Some("Complete")),
            j("bad-1", "2026-11-22T01:30:00Z", Some("Failed")),
            j("bad-2", "2026-11-22T02:30:00Z", Some("Failed")),
            j("running-0", "2026-11-22T00:00:00Z", None),
        ];
        let mut gone = prune(&jobs, 2, 1);
        gone.sort();
        assert_eq!(gone, vec!["bad-1".to_string(), "ok-1".to_string()]);
        assert!(prune(&jobs, 0, 0).len() == 5);
        assert!(prune(&jobs, 10, 10).is_empty());
    }
}
