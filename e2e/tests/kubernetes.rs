//! Against a real API server (`RAFTCRON_E2E_KUBECONFIG`): the CRD, the
//! operator, the node cluster it manages, ScheduledJobs from apply to runs in
//! status, admission, finalizers, and the failure cases of the operator
//! issue. Without the variable the test prints why it is skipped.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use raftcron_crds::ScheduledJob;
use raftcron_e2e::kube::{Operator, TempNamespace, install_crd, kubeconfig, kubectl, pod_nodes};
use raftcron_e2e::{Ledger, wait_for};

fn sj(ns: &str, name: &str, spec: serde_json::Value) -> ScheduledJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": raftcron_crds::names::API_VERSION, "kind": raftcron_crds::names::KIND,
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .unwrap()
}

fn ready(sj: &ScheduledJob) -> Option<(String, String)> {
    let c = sj
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_run_from_kubectl_apply_to_status_and_finalizers_hold_through_outages() {
    let kc = match kubeconfig() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let client = raftcron_e2e::kube::client(&kc).await;
    install_crd(&client).await;
    let ns = TempNamespace::create(&client, "raftcron-e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::start(dir.path()).await;

    // The operator creates the node cluster's objects; host processes play its pods.
    let mut pods = pod_nodes(dir.path(), &kc, 3);
    let endpoints: Vec<String> = pods.iter().map(|p| p.grpc.clone()).collect();
    let mut operator = Operator::new(
        dir.path(),
        &kc,
        &ns.name,
        &endpoints,
        "image: raftcron-node:e2e\nhttpDenyLoopback: false\n",
    );
    operator.start();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let created = wait_for(Duration::from_secs(30), || {
        let sts = sts.clone();
        async move { sts.get_opt("raftcron-node").await.ok().flatten() }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "operator did not create the StatefulSet\n{}",
            operator.log_tail()
        )
    });
    assert_eq!(created.spec.replicas, Some(3));
    assert_eq!(
        created.spec.pod_management_policy.as_deref(),
        Some("Parallel")
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        svcs.get_opt("raftcron-node-headless")
            .await
            .unwrap()
            .is_some()
    );
    assert!(svcs.get_opt("raftcron-node").await.unwrap().is_some());
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    assert!(pdbs.get_opt("raftcron-node").await.unwrap().is_some());
    for p in &mut pods {
        p.start();
    }

    let api: Api<ScheduledJob> = Api::namespaced(client.clone(), &ns.name);
    let url = ledger.url("/ok");
    api.create(
        &PostParams::default(),
        &sj(
            &ns.name,
            "every-second",
            serde_json::json!({"schedule": "* * * * * *", "action": {"http": {"url": url}}}),
        ),
    )
    .await
    .unwrap();
    // Registered (operator) and run (node status writer): both show on the object.
    let done = wait_for(Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let o = api.get("every-second").await.ok()?;
            let st = o.status.clone()?;
            let ok = ready(&o) == Some(("True".into(), "Registered".into()))
                && st
                    .last_run
                    .as_ref()
                    .is_some_and(|r| r.result == "Succeeded")
                && st.next_schedule_time.is_some()
                && st.observed_generation == o.metadata.generation;
            ok.then_some(o)
        }
    })
    .await
    .unwrap_or_else(|| panic!("no run in status\n{}", operator.log_tail()));
    assert!(
        done.finalizers()
            .iter()
            .any(|f| f == raftcron_crds::names::FINALIZER)
    );
    let table = kubectl(&kc, &["get", "sj", "-n", &ns.name]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    println!("kubectl get sj:\n{table}");
    assert!(
        table.contains("SCHEDULE") && table.contains("LAST RESULT") && table.contains("Succeeded"),
        "{table}"
    );

    // Admission: two actions are refused by the API server (CEL)…
    let two = sj(
        &ns.name,
        "two-actions",
        serde_json::json!({"schedule": "@hourly", "action": {"http": {"url": url}, "exec": {"command": ["true"]}}}),
    );
    let err = api
        .create(&PostParams::default(), &two)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one of"), "{err}");
    // …a bad cron (which CEL cannot check) is accepted and marked Ready=False with the field.
    api.create(
        &PostParams::default(),
        &sj(
            &ns.name,
            "bad-cron",
            serde_json::json!({"schedule": "61 * * * *", "action": {"http": {"url": url}}}),
        ),
    )
    .await
    .unwrap();
    let refused = wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let o = api.get("bad-cron").await.ok()?;
            let c = o
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some(c)
        }
    })
    .await
    .expect("bad-cron gets Ready=False");
    assert_eq!(refused.reason, "InvalidSpec");
    assert!(
        refused.message.contains("spec.schedule"),
        "{}",
        refused.message
    );

    // A job action creates a Kubernetes Job per attempt (no kubelet here: it never completes).
    let template = serde_json::json!({"spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}});
    api.create(&PostParams::default(), &sj(&ns.name, "as-job", serde_json::json!({"schedule": "*/5 * * * * *", "timeoutSeconds": 3, "action": {"job": {"template": template}}})))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let job = wait_for(Duration::from_secs(30), || {
        let jobs = jobs.clone();
        async move {
            jobs.list(&ListParams::default().labels("raftcron.dev/scheduledjob=as-job"))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        }
    })
    .await
    .expect("a Job is created for the job action");
    let containers = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert!(
        containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "RAFTCRON_RUN_ID")
    );

    // Delete: the schedule leaves the cluster, then the finalizer goes.
    api.delete("every-second", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            api.get_opt("every-second")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "finalizer not removed\n{}",
        operator.log_tail()
    );

    // Delete while the scheduler cluster is down: the finalizer waits; nothing is orphaned.
    api.create(
        &PostParams::default(),
        &sj(
            &ns.name,
            "outage",
            serde_json::json!({"schedule": "@hourly", "action": {"http": {"url": url}}}),
        ),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            (ready(&api.get("outage").await.ok()?)? == ("True".into(), "Registered".into()))
                .then_some(())
        }
    })
    .await
    .expect("outage registered");
    for p in &mut pods {
        p.kill9();
    }
    api.delete("outage", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waiting = api
        .get("outage")
        .await
        .expect("still present while the cluster is down");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    // The operator restarts in the middle (kill -9) and carries on.
    operator.kill9();
    operator.start();
    for p in &mut pods {
        p.start();
    }
    let gone = wait_for(Duration::from_secs(60), || {
        let api = api.clone();
        async move { api.get_opt("outage").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        gone.is_some(),
        "finalizer did not finish after the cluster came back\n{}",
        operator.log_tail()
    );
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    println!("remaining ScheduledJobs: {names:?}");
}
