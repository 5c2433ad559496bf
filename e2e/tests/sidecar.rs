//! The sidecar scheduler with real processes: 3 nodes, 3 app replicas (each
//! a ledger target counting every request it receives) with a
//! `raftcron-node sidecar` each. An `app` job fires into exactly one
//! replica per instant; a replica killed mid-attempt has its attempt retried
//! on another; a leader kill loses nothing; with every replica gone the run
//! is Missed naming the app.

mod common;

use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use common::certs::{ca, leaf};
use common::replica::{Replica, all_attached};
use raftcron_e2e::{ClientTlsFiles, Cluster, ClusterOptions, http_get, now_ms, wait_for};
use raftcron_node::pb::scheduler::UpsertRequest;

fn app_job(name: &str, spec: serde_json::Value) -> UpsertRequest {
    UpsertRequest {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        spec_json: spec.to_string(),
        kubernetes: false,
    }
}

/// (run id, attempt) → the pods whose app received it.
fn deliveries(replicas: &[Replica]) -> HashMap<(String, u32), Vec<String>> {
    let mut m: HashMap<(String, u32), Vec<String>> = HashMap::new();
    for r in replicas {
        for rec in r.app.records() {
            if let (Some(id), Some(a)) = (rec.run_id, rec.attempt) {
                m.entry((id, a)).or_default().push(r.pod.clone());
            }
        }
    }
    m
}

fn logs(c: &Cluster, replicas: &[Replica]) -> String {
    let mut s = c.logs();
    for r in replicas {
        s.push_str(&format!("--- sidecar {} ---\n{}", r.pod, r.log()));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_jobs_fire_into_exactly_one_replica_through_replica_and_leader_kills() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let endpoints = c.endpoints();
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(Replica::start(c.path(), &endpoints, "shop", &format!("web-{i}")).await);
    }
    assert!(
        all_attached(&replicas, Duration::from_secs(20)).await,
        "sidecars did not attach\n{}",
        logs(&c, &replicas)
    );
    // The leader lists them per app on its HTTP port.
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let (_, listed) = http_get(&c.node(leader).http.clone(), "/v1/attachments")
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"namespace": "shop", "app": "web", "replicas": ["web-0", "web-1", "web-2"]}]),
        "/v1/attachments"
    );
    c.client()
        .upsert_batch(vec![
            app_job(
                "tick",
                serde_json::json!({
                    "schedule": "* * * * * *",
                    "retry": {"maxAttempts": 3, "initialBackoffSeconds": 0.2, "jitter": 0},
                    "action": {"app": {"name": "web", "path": "/ok"}},
                }),
            ),
            app_job(
                "slow",
                serde_json::json!({
                    "schedule": "*/4 * * * * *",
                    "timeoutSeconds": 30,
                    "retry": {"maxAttempts": 3, "initialBackoffSeconds": 0.2, "jitter": 0},
                    "action": {"app": {"name": "web", "path": "/slow?ms=3000", "placement": "RoundRobin"}},
                }),
            ),
        ])
        .await
        .unwrap();
    let start = (now_ms() / 1000 + 2) * 1000;

    // A replica killed while its app serves a slow attempt: the leader sees
    // it detach, the attempt is Lost and its retry goes to another replica.
    let slow_first = wait_for(Duration::from_secs(15), || async {
        deliveries(&replicas)
            .into_iter()
            .find(|((id, a), _)| id.starts_with("uid-slow") && *a == 1)
    })
    .await
    .unwrap_or_else(|| panic!("no slow attempt delivered\n{}", logs(&c, &replicas)));
    let ((slow_run, _), pods) = slow_first;
    let victim = replicas.iter().position(|r| r.pod == pods[0]).unwrap();
    replicas[victim].kill9();
    let killed_at = now_ms();
    println!("killed sidecar {} during {slow_run}", replicas[victim].pod);

    // The leader dies too, a little later: the sidecars re-attach to the next.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    c.node(leader).kill9();
    println!("killed leader {leader}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = now_ms() / 1000 * 1000 - 3000;

    let d = deliveries(&replicas);
    // Every instant of `tick` reached exactly one replica once, as attempt 1
    // (or, for one caught by a kill, a later attempt at another replica).
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for instant in (start..=end).step_by(1000) {
        let id = raftcron_crds::names::run_id("uid-tick", instant);
        let got: Vec<(&u32, &Vec<String>)> = d
            .iter()
            .filter(|((r, _), _)| *r == id)
            .map(|((_, a), p)| (a, p))
            .collect();
        if got.is_empty() {
            missing.push(instant);
        }
        for (a, pods) in got {
            if pods.len() > 1 {
                doubled.push(format!("{id} attempt {a}: {pods:?}"));
            }
        }
    }
    println!(
        "{} tick instants checked, {} deliveries in all",
        (end - start) / 1000 + 1,
        d.len()
    );
    assert!(
        missing.is_empty(),
        "instants never delivered: {missing:?}\n{}",
        logs(&c, &replicas)
    );
    assert!(
        doubled.is_empty(),
        "one attempt at two replicas: {doubled:?}"
    );

    // The slow run caught by the replica kill: attempt 2 at another replica,
    // and it ended Succeeded once.
    let retried: BTreeMap<u32, Vec<String>> = d
        .iter()
        .filter(|((r, _), _)| *r == slow_run)
        .map(|((_, a), p)| (*a, p.clone()))
        .collect();
    println!("{slow_run}: {retried:?}");
    let again = retried
        .iter()
        .find(|(a, _)| **a > 1)
        .unwrap_or_else(|| panic!("the lost attempt was not retried: {retried:?}"));
    assert!(
        !again.1.contains(&replicas[victim].pod),
        "the retry went to the replica that was killed"
    );
    let runs = c.ctl_json(&["runs", "shop/slow"]);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == slow_run.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(run["result"], "Succeeded", "{run}");
    assert_ne!(run["pod"], replicas[victim].pod.as_str(), "{run}");
    let retried_at = replicas
        .iter()
        .flat_map(|r| r.app.records())
        .filter(|rec| rec.run_id.as_deref() == Some(slow_run.as_str()) && rec.attempt > Some(1))
        .map(|rec| rec.received_ms as i64)
        .min()
        .unwrap_or_default();
    println!(
        "replica kill -9 -> retry received by {}: {} ms",
        again.1[0],
        retried_at - killed_at
    );

    // Every replica gone: a run no replica can take is Missed, naming the app.
    c.client()
        .upsert_batch(vec![app_job(
            "orphan",
            serde_json::json!({
                "schedule": "* * * * * *",
                "startingDeadlineSeconds": 1,
                "action": {"app": {"name": "web", "path": "/ok"}},
            }),
        )])
        .await
        .unwrap();
    for r in &mut replicas {
        r.kill9();
    }
    let missed = wait_for(Duration::from_secs(15), || async {
        let runs = c.ctl_json(&["runs", "shop/orphan"]);
        runs.as_array()?
            .iter()
            .find(|r| r["result"] == "Missed")
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
    })
    .await
    .unwrap_or_else(|| panic!("no Missed run without replicas\n{}", c.logs()));
    assert!(
        missed.contains("shop/web"),
        "the reason does not name the app: {missed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_attaches_only_for_the_namespaces_its_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = ca("raftcron test CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cluster_ca.pem).unwrap();
    let (node_cert, node_key) = leaf(&cluster_ca, dir.path(), "node", &[]);
    let (cli_cert, cli_key) = leaf(&cluster_ca, dir.path(), "client", &[]);
    // A sidecar certificate for namespace alpha only.
    let (sc_cert, sc_key) = leaf(
        &cluster_ca,
        dir.path(),
        "sidecar-alpha",
        &["alpha.namespaces.raftcron.dev"],
    );
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            "--tls-ca".to_string(),
            ca_file.display().to_string(),
            "--tls-cert".to_string(),
            cert.display().to_string(),
            "--tls-key".to_string(),
            key.display().to_string(),
        ]
    };
    let c = Cluster::start(ClusterOptions {
        extra_args: tls(&node_cert, &node_key),
        client_tls: Some(ClientTlsFiles {
            ca: ca_file.clone(),
            cert: Some(cli_cert.clone()),
            key: Some(cli_key.clone()),
        }),
        ..Default::default()
    })
    .await;
    let endpoints = c.endpoints();
    let own = Replica::start_with(
        c.path(),
        &endpoints,
        "alpha",
        "own",
        &tls(&sc_cert, &sc_key),
    )
    .await;
    let other = Replica::start_with(
        c.path(),
        &endpoints,
        "beta",
        "other",
        &tls(&sc_cert, &sc_key),
    )
    .await;
    let plain = Replica::start(c.path(), &endpoints, "alpha", "plain").await;
    assert!(
        all_attached(std::slice::from_ref(&own), Duration::from_secs(20)).await,
        "the alpha sidecar did not attach for alpha\n{}",
        logs(&c, &[own, other, plain])
    );
    // Give the others the same time, then they must still be out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (r, why) in [
        (
            &other,
            "the client certificate is for namespaces [\"alpha\"], not beta",
        ),
        (&plain, ""),
    ] {
        assert!(!r.attached().await, "{} attached\n{}", r.pod, r.log());
        if !why.is_empty() {
            assert!(
                r.log().contains(why),
                "{} was not refused for its namespace:\n{}",
                r.pod,
                r.log()
            );
        }
    }
}
