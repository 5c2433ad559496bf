//! Against a real API server: skipped (saying why) unless
//! `RAFTCRON_E2E_KUBECONFIG` names a kubeconfig. Each test works in a
//! namespace of its own and deletes it at the end; the CRD is applied
//! (server-side, idempotent) and left installed.
//!
//! ```text
//! RAFTCRON_E2E_KUBECONFIG=/opt/k8s/admin.kubeconfig cargo test -p raftcron-node --lib kube::
//! ```
//!
//! Without a kubelet no pod ever runs, so a Job's completion is simulated by
//! writing its status subresource, and the Jobs are marked `managedBy` an
//! outside controller so that the Job controller leaves them alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config, CustomResourceExt};
use anyhow::{Context, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use raftcron_crds::{ScheduledJob, ScheduledJobSpec};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::exec::job::{self, build_job, job_name};
use crate::exec::{Attempt, ExecSettings, Executors};
use crate::sm::AttemptOutcome;

const TEST_MANAGER: &str = "raftcron-node-tests";

/// The API server's kubeconfig, or None (and a note on stderr) to skip.
fn kubeconfig(test: &str) -> Option<PathBuf> {
    match std::env::var_os("RAFTCRON_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "skipping {test}: set RAFTCRON_E2E_KUBECONFIG to a kubeconfig \
                 (e.g. /opt/k8s/admin.kubeconfig) to run it against a real API server"
            );
            None
        }
    }
}

async fn client(path: &PathBuf) -> anyhow::Result<Client> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTCRON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
    crate::tls::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path).context("reading the kubeconfig")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    Ok(Client::try_from(config)?)
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the test's namespace, then reports the body's result, re-raising
/// its panic: the body runs on its own task so that a failed assertion does
/// not leave the namespace behind.
async fn finish(
    guard: TempNamespace,
    outcome: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    guard.delete().await;
    match outcome {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}

/// A namespace for one test.
#[derive(Clone)]
struct TempNamespace {
    client: Client,
    name: String,
}

impl TempNamespace {
    async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns).await?;
        Ok(Self {
            client: client.clone(),
            name,
        })
    }

    async fn delete(self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = api.delete(&self.name, &DeleteParams::background()).await {
            eprintln!("could not delete namespace {}: {e}", self.name);
        }
    }
}

async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ScheduledJob::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_for("the CRD to be established", Duration::from_secs(30), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        }
    })
    .await
}

fn spec(yaml: &str) -> ScheduledJobSpec {
    serde_yaml::from_str(yaml).expect("fixture parses")
}

async fn create_scheduledjob(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &ScheduledJobSpec,
) -> anyhow::Result<String> {
    let api: Api<ScheduledJob> = Api::namespaced(client.clone(), namespace);
    let created = api
        .create(
            &PostParams::default(),
            &ScheduledJob::new(name, spec.clone()),
        )
        .await?;
    created.metadata.uid.context("the object has no uid")
}

/// A job action whose Jobs the built-in Job controller ignores.
const JOB_SPEC: &str = r#"
schedule: "0 0 * * * *"
successfulRunsHistoryLimit: 1
action:
  job:
    template:
      metadata: {labels: {team: reports}}
      spec:
        managedBy: example.com/raftcron-tests
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            initContainers: [{name: init, image: busybox}]
            containers: [{name: main, image: busybox, env: [{name: MODE, value: test}]}]
"#;

fn attempt(namespace: &str, name: &str, uid: &str, instant: i64, timeout: Duration) -> Attempt {
    Attempt {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        kubernetes: true,
        run_id: raftcron_crds::names::run_id(uid, instant),
        attempt: 1,
        scheduled_ms: instant,
        term: 4,
        timeout,
    }
}

fn executors(client: &Client) -> Arc<Executors> {
    let settings = ExecSettings {
        exec_enabled: false,
        http_policy: crate::exec::policy::HttpPolicy { deny: vec![] },
        dry_run: false,
    };
    Arc::new(Executors::new(settings, None).with_jobs(job::runner(client.clone())))
}

async fn wait_for_job(jobs: &Api<Job>, name: &str) -> anyhow::Result<Job> {
    wait_for(&format!("Job {name}"), Duration::from_secs(20), || {
        let jobs = jobs.clone();
        let name = name.to_string();
        async move { Ok(jobs.get_opt(&name).await?) }
    })
    .await
}

/// What the Job controller would write when the pod succeeded.
async fn complete(jobs: &Api<Job>, name: &str) -> anyhow::Result<()> {
    let now = "2026-11-22T01:30:05Z";
    let status = json!({"status": {
        "startTime": "2026-11-22T01:30:00Z",
        "completionTime": now,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
        ],
    }});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_job_action_creates_a_labelled_owned_job_and_deletes_it_when_the_attempt_times_out()
-> anyhow::Result<()> {
    let Some(path) = kubeconfig("job timeout test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crd(&client).await?;
    let guard = TempNamespace::create(&client, "raftcron-job-timeout").await?;
    let ns = guard.clone();
    let outcome = tokio::spawn(async move {
        let spec = spec(JOB_SPEC);
        let uid = create_scheduledjob(&client, &ns.name, "nightly-report", &spec).await?;
        let a = attempt(
            &ns.name,
            "nightly-report",
            &uid,
            1_795_311_000_000,
            Duration::from_secs(4),
        );
        let name = job_name(&a.name, &a.run_id, a.attempt);
        let exec = executors(&client);
        let run = tokio::spawn({
            let (exec, spec, a) = (exec.clone(), spec.clone(), a.clone());
            async move {
                exec.run(&spec, &a, Default::default(), CancellationToken::new())
                    .await
            }
        });
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
        let job = wait_for_job(&jobs, &name).await?;

        let labels = job.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "raftcron");
        assert_eq!(labels["raftcron.dev/scheduledjob"], "nightly-report");
        assert_eq!(labels["raftcron.dev/attempt"], "1");
        assert_eq!(labels["team"], "reports");
        let annotations = job.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations["raftcron.dev/run-id"], a.run_id);
        let owner = &job.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ScheduledJob", uid.as_str())
        );
        assert_eq!(owner.block_owner_deletion, Some(false));
        let pod = job
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .context("pod spec")?;
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let env: BTreeMap<String, String> = c
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect();
            assert_eq!(env["RAFTCRON_RUN_ID"], a.run_id, "{}", c.name);
            assert_eq!(env["RAFTCRON_ATTEMPT"], "1");
            assert_eq!(env["RAFTCRON_SCHEDULED_TIME"], "2026-11-22T01:30:00.000Z");
            assert_eq!(env["RAFTCRON_TERM"], "4");
        }

        let outcome = run.await?;
        assert_eq!(outcome.outcome, AttemptOutcome::TimedOut, "{outcome:?}");
        wait_for(
            "the timed-out Job to be deleted",
            Duration::from_secs(15),
            || {
                let jobs = jobs.clone();
                let name = name.clone();
                async move { Ok(jobs.get_opt(&name).await?.is_none().then_some(())) }
            },
        )
        .await
    })
    .await;
    finish(guard, outcome).await
}

#[tokio::test]
async fn a_completed_job_succeeds_a_retried_start_follows_its_job_and_old_jobs_are_pruned()
-> anyhow::Result<()> {
    let Some(path) = kubeconfig("job completion test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crd(&client).await?;
    let guard = TempNamespace::create(&client, "raftcron-job-complete").await?;
    let ns = guard.clone();
    let outcome = tokio::spawn(async move {
        let spec = spec(JOB_SPEC);
        let uid = create_scheduledjob(&client, &ns.name, "hourly", &spec).await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
        let exec = executors(&client);
        let mut names = Vec::new();
        for (i, instant) in [1_795_311_000_000i64, 1_795_314_600_000]
            .into_iter()
            .enumerate()
        {
            let a = attempt(&ns.name, "hourly", &uid, instant, Duration::from_secs(60));
            let name = job_name(&a.name, &a.run_id, a.attempt);
            if i == 0 {
                // A start replayed after a lost reply: the Job is already there.
                let template = template_of(&spec);
                jobs.create(&PostParams::default(), &build_job(&template, &a))
                    .await?;
            }
            let run = tokio::spawn({
                let (exec, spec, a) = (exec.clone(), spec.clone(), a.clone());
                async move {
                    exec.run(&spec, &a, Default::default(), CancellationToken::new())
                        .await
                }
            });
            wait_for_job(&jobs, &name).await?;
            complete(&jobs, &name).await?;
            let outcome = tokio::time::timeout(Duration::from_secs(20), run).await??;
            assert_eq!(outcome.outcome, AttemptOutcome::Succeeded, "{outcome:?}");
            assert_eq!(outcome.message, Some(format!("Job {name} completed")));
            names.push(name);
        }
        // successfulRunsHistoryLimit: 1 keeps only the newest.
        let selector = job::selector("hourly");
        let remaining = wait_for(
            "the older Job to be pruned",
            Duration::from_secs(15),
            || {
                let jobs = jobs.clone();
                let selector = selector.clone();
                async move {
                    let list = jobs.list(&ListParams::default().labels(&selector)).await?;
                    let names: Vec<String> = list
                        .items
                        .into_iter()
                        .filter_map(|j| j.metadata.name)
                        .collect();
                    Ok((names.len() == 1).then_some(names))
                }
            },
        )
        .await?;
        assert_eq!(remaining, vec![names[1].clone()]);
        Ok(())
    })
    .await;
    finish(guard, outcome).await
}

fn template_of(spec: &ScheduledJobSpec) -> k8s_openapi::api::batch::v1::JobTemplateSpec {
    spec.action
        .job
        .as_ref()
        .map(|j| (*j.template).clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn secrets_are_read_once_per_ttl_and_a_missing_key_names_secret_and_key() -> anyhow::Result<()>
{
    let Some(path) = kubeconfig("secret resolver test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    let guard = TempNamespace::create(&client, "raftcron-secrets").await?;
    let ns = guard.clone();
    let outcome = tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let secret = |value: &str| Secret {
            metadata: ObjectMeta {
                name: Some("api".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        api.create(&PostParams::default(), &secret("first")).await?;
        let resolver = super::secrets::KubeSecrets::new(client.clone());
        assert_eq!(resolver.value(&ns.name, "api", "token").await?, "first");
        let err = resolver
            .value(&ns.name, "api", "password")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Secret {}/api has no key \"password\"", ns.name)
        );
        let err = resolver.value(&ns.name, "nope", "token").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Secret {}/nope not found", ns.name)
        );

        api.replace("api", &PostParams::default(), &secret("second"))
            .await?;
        assert_eq!(
            resolver.value(&ns.name, "api", "token").await?,
            "first",
            "read from the cache within the TTL"
        );
        tokio::time::sleep(super::secrets::TTL + Duration::from_millis(100)).await;
        assert_eq!(resolver.value(&ns.name, "api", "token").await?, "second");
        Ok(())
    })
    .await;
    finish(guard, outcome).await
}

#[tokio::test]
async fn the_leader_writes_run_status_and_failure_events_into_scheduledjobs() -> anyhow::Result<()>
{
    let Some(path) = kubeconfig("status writer test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crd(&client).await?;
    let guard = TempNamespace::create(&client, "raftcron-status").await?;
    let ns = guard.clone();
    let dir = tempfile::tempdir()?;
    let (stop_target, target_stopped) = tokio::sync::oneshot::channel::<()>();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(crate::cli::target::serve(target, None, async move {
        let _ = target_stopped.await;
    }));
    let outcome = tokio::spawn(async move {
        let ok_spec = spec(&format!(
            "schedule: '* * * * * *'\naction: {{http: {{url: 'http://{target_addr}/ok'}}}}\n"
        ));
        let bad_spec = spec(&format!(
            "schedule: '* * * * * *'\nretry: {{maxAttempts: 1}}\nfailedRunsHistoryLimit: 2\n\
             action: {{http: {{url: 'http://{target_addr}/fail'}}}}\n"
        ));
        let ok_uid = create_scheduledjob(&client, &ns.name, "every-second", &ok_spec).await?;
        let bad_uid = create_scheduledjob(&client, &ns.name, "always-fails", &bad_spec).await?;
        let sjs: Api<ScheduledJob> = Api::namespaced(client.clone(), &ns.name);
        // The operator's condition, under its own field manager: the node must leave it.
        sjs.patch_status(
            "every-second",
            &PatchParams::apply(raftcron_crds::names::FIELD_MANAGER_OPERATOR).force(),
            &Patch::Apply(json!({
                "apiVersion": raftcron_crds::names::API_VERSION, "kind": raftcron_crds::names::KIND,
                "status": {"observedGeneration": 1, "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Registered", "message": "registered",
                    "lastTransitionTime": "2026-11-22T01:30:00Z"}]}
            })),
        )
        .await?;

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?.to_string();
        let config = crate::ctx::NodeConfig {
            id: 1,
            advertise: addr.clone(),
            data_dir: dir.path().to_path_buf(),
            peers: BTreeMap::from([(1, addr.clone())]),
            bootstrap: true,
            timing: crate::raft::RaftTiming::default(),
            tls: None,
            scheduler: crate::scheduler::SchedulerConfig::default(),
            kube: Some(super::Kube {
                client: client.clone(),
                status: super::StatusSettings::default(),
            }),
        };
        let started = crate::node::Node::start(config, grpc, http).await?;
        let metrics = started.ctx.metrics.clone();
        let checks = async {

        let api = crate::client::Client::new(vec![addr], None).with_deadline(Duration::from_secs(20));
        let upsert = |name: &str, uid: &str, spec: &ScheduledJobSpec| crate::pb::scheduler::UpsertRequest {
            namespace: ns.name.clone(),
            name: name.into(),
            uid: uid.into(),
            generation: 1,
            spec_json: serde_json::to_string(spec).expect("spec serializes"),
            kubernetes: true,
        };
        api.upsert_batch(vec![
            upsert("every-second", &ok_uid, &ok_spec),
            upsert("always-fails", &bad_uid, &bad_spec),
        ])
        .await?;

        let status = wait_for("a succeeded run in the status", Duration::from_secs(30), || {
            let sjs = sjs.clone();
            async move {
                let st = sjs.get("every-second").await?.status.unwrap_or_default();
                let done = st.last_run.as_ref().is_some_and(|r| r.result == "Succeeded")
                    && st.next_schedule_time.is_some();
                Ok(done.then_some(st))
            }
        })
        .await?;
        let last = status.last_run.as_ref().context("lastRun")?;
        assert!(last.run_id.starts_with(&ok_uid), "{}", last.run_id);
        assert!(last.scheduled_time.ends_with('Z') && last.scheduled_time.contains('.'));
        assert!(status.last_schedule_time.is_some() && status.last_successful_time.is_some());
        assert!(!status.recent_runs.is_empty());
        assert_eq!(status.observed_generation, Some(1), "the operator's field stays");
        assert_eq!(status.conditions.len(), 1, "the operator's condition stays");

        // A one-shot: fires once at its dueTime; then no NEXT RUN and a
        // Complete condition beside the operator's Ready.
        let due = raftcron_crds::names::rfc3339_ms(crate::clock::now_ms() + 2_000);
        let once_spec = spec(&format!(
            "dueTime: '{due}'\naction: {{http: {{url: 'http://{target_addr}/ok'}}}}\n"
        ));
        let once_uid = create_scheduledjob(&client, &ns.name, "one-shot", &once_spec).await?;
        sjs.patch_status(
            "one-shot",
            &PatchParams::apply(raftcron_crds::names::FIELD_MANAGER_OPERATOR).force(),
            &Patch::Apply(json!({
                "apiVersion": raftcron_crds::names::API_VERSION, "kind": raftcron_crds::names::KIND,
                "status": {"observedGeneration": 1, "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Registered", "message": "registered",
                    "lastTransitionTime": "2026-11-22T01:30:00Z"}]}
            })),
        )
        .await?;
        api.upsert_batch(vec![upsert("one-shot", &once_uid, &once_spec)]).await?;
        let once = wait_for("the one-shot's Complete condition", Duration::from_secs(30), || {
            let sjs = sjs.clone();
            async move {
                let st = sjs.get("one-shot").await?.status.unwrap_or_default();
                let complete = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == raftcron_crds::names::COMPLETE && c.status == "True");
                Ok(complete.then_some(st))
            }
        })
        .await?;
        assert_eq!(once.last_run.as_ref().map(|r| r.result.as_str()), Some("Succeeded"));
        assert_eq!(once.recent_runs.len(), 1, "it ran once");
        assert_eq!(once.next_schedule_time, None, "no NEXT RUN");
        let types: Vec<&str> = once.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert!(types.contains(&"Ready") && types.contains(&"Complete"), "{types:?}");

        // The printer columns of `kubectl get sj`, as the API server renders them.
        let mut req = ::kube::core::Request::new(format!(
            "/apis/raftcron.dev/v1alpha1/namespaces/{}/scheduledjobs",
            ns.name
        ))
        .get("every-second", &Default::default())?;
        req.headers_mut().insert(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io".parse()?,
        );
        let table: serde_json::Value = client.request(req).await?;
        let columns: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .context("columns")?
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let cells = table["rows"][0]["cells"].as_array().context("cells")?;
        let cell = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| cells.get(i))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(cell("Last Result"), json!("Succeeded"), "{table}");
        for column in ["Schedule", "Last Run", "Next Run", "Age"] {
            let v = cell(column);
            assert!(v.as_str().is_some_and(|s| !s.is_empty()), "{column}: {v} in {table}");
        }

        // Each failed run gets one Warning Event, naming its run id.
        let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns.name);
        let failed = wait_for("RunFailed Events", Duration::from_secs(30), || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let failed: Vec<K8sEvent> = list
                    .items
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("RunFailed"))
                    .collect();
                Ok((failed.len() >= 2).then_some(failed))
            }
        })
        .await?;
        let mut run_ids = std::collections::HashSet::new();
        for e in &failed {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.reporting_controller.as_deref(), Some("raftcron-node"));
            let regarding = e.regarding.as_ref().context("regarding")?;
            assert_eq!(regarding.name.as_deref(), Some("always-fails"));
            assert_eq!(regarding.uid.as_deref(), Some(bad_uid.as_str()));
            let note = e.note.clone().unwrap_or_default();
            assert!(note.contains("HTTP 500") || note.contains("500"), "{note}");
            let run_id = note
                .split_whitespace()
                .nth(1)
                .context("run id in the note")?
                .to_string();
            assert!(run_ids.insert(run_id.clone()), "run {run_id} reported twice");
        }
        let bad = sjs.get("always-fails").await?.status.unwrap_or_default();
        assert!(bad.recent_runs.len() <= 2, "bounded by failedRunsHistoryLimit");
        let ok = metrics.status_patches.with_label_values(&["ok"]).get();
        assert!(ok >= 2, "{ok} successful status patches");
        Ok::<_, anyhow::Error>(())
        }
        .await;
        started.shutdown().await;
        checks
    })
    .await;
    let _ = stop_target.send(());
    finish(guard, outcome).await
}

#[tokio::test]
async fn a_status_that_reaches_a_re_created_namesake_is_taken_back() -> anyhow::Result<()> {
    let Some(path) = kubeconfig("re-created object test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    install_crd(&client).await?;
    let guard = TempNamespace::create(&client, "raftcron-uid").await?;
    let ns = guard.clone();
    let outcome = tokio::spawn(async move {
        let s = spec("schedule: '@hourly'\naction: {http: {url: 'http://example.com/'}}\n");
        let uid = create_scheduledjob(&client, &ns.name, "recreated", &s).await?;
        let sjs: Api<ScheduledJob> = Api::namespaced(client.clone(), &ns.name);
        let mut record = crate::sm::ScheduleRecord {
            namespace: ns.name.clone(),
            name: "recreated".into(),
            uid: "00000000-0000-0000-0000-000000000000".into(),
            generation: 1,
            spec: Arc::new(s.clone()),
            created: 0,
            updated: 0,
            claimed_through: 1_795_311_000_000,
            kubernetes: true,
            app_job: None,
            fired: 0,
            manual_seq: 0,
            counters: Default::default(),
            active: Vec::new(),
            history: Default::default(),
            last_schedule: Some(1_795_311_000_000),
            last_success: None,
        };
        let computed = super::status::compute(&record, 1_795_311_000_000);
        // The old incarnation's status, sent to the new object.
        let err = super::writer::patch_status(&client, &record, &computed)
            .await
            .expect_err("a stale uid is not written");
        assert!(
            matches!(&err, super::writer::PatchError::Recreated { uid: u } if *u == uid),
            "{err}"
        );
        let st = sjs.get("recreated").await?.status.unwrap_or_default();
        assert_eq!(
            st,
            Default::default(),
            "nothing of the old incarnation stays"
        );

        record.uid = uid.clone();
        super::writer::patch_status(&client, &record, &computed).await?;
        let st = sjs.get("recreated").await?.status.unwrap_or_default();
        assert_eq!(
            st.last_schedule_time.as_deref(),
            Some("2026-11-22T01:30:00.000Z")
        );

        record.name = "missing".into();
        let err = super::writer::patch_status(&client, &record, &computed)
            .await
            .expect_err("no such object");
        assert!(matches!(err, super::writer::PatchError::Gone), "{err}");
        Ok(())
    })
    .await;
    finish(guard, outcome).await
}

#[tokio::test]
async fn a_sidecar_token_attaches_only_for_apps_of_its_own_namespace() -> anyhow::Result<()> {
    use crate::attach::auth::{Authenticator, Refused};
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let Some(path) = kubeconfig("sidecar token test") else {
        return Ok(());
    };
    let client = client(&path).await?;
    let guard = TempNamespace::create(&client, "raftcron-attach").await?;
    let ns = guard.clone();
    let outcome = tokio::spawn(async move {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        sas.create(&PostParams::default(), &sa).await?;
        let token = |audience: &str| {
            let sas = sas.clone();
            let audience = audience.to_string();
            async move {
                let request = TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: Some(vec![audience]),
                        expiration_seconds: Some(600),
                        ..TokenRequestSpec::default()
                    }),
                    ..TokenRequest::default()
                };
                let done = sas
                    .create_token_request("web", &PostParams::default(), &request)
                    .await?;
                anyhow::Ok(done.status.and_then(|s| s.token).unwrap_or_default())
            }
        };
        let kube = super::Kube {
            client: client.clone(),
            status: super::StatusSettings::default(),
        };
        let auth = Authenticator::new(Some(&kube), false);
        let ours = token("raftcron").await?;
        // Its own namespace: accepted (twice: the second from the review cache).
        for _ in 0..2 {
            assert_eq!(auth.check(&ns.name, &ours, None, None).await, Ok(()));
        }
        // Another namespace: refused, naming both.
        assert_eq!(
            auth.check("someone-else", &ours, None, None).await,
            Err(Refused::TokenNamespace {
                token: ns.name.clone(),
                asked: "someone-else".into()
            })
        );
        // A token for another audience, none at all, or garbage: refused.
        let other = token("not-raftcron").await?;
        assert!(matches!(
            auth.check(&ns.name, &other, None, None).await,
            Err(Refused::TokenRejected(_))
        ));
        assert_eq!(
            auth.check(&ns.name, "", None, None).await,
            Err(Refused::NoToken)
        );
        assert!(matches!(
            auth.check(&ns.name, "garbage", None, None).await,
            Err(Refused::TokenRejected(_))
        ));
        anyhow::Ok(())
    })
    .await;
    finish(guard, outcome).await
}
