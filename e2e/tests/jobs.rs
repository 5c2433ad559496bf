//! Jobs from app code, with real processes: 3 nodes, 2 replicas of app
//! `web` (each a ledger target with its sidecar). Jobs created through one
//! sidecar's local API fire once per instant into one replica; repeats,
//! ttl and overwrite hold; finished jobs are removed and say so; bad input
//! names the field; under saturation, High goes before Low and Low still
//! runs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::replica::{Replica, all_attached};
use raftcron_e2e::{Cluster, ClusterOptions, http_request, now_ms, wait_for};
use serde_json::{Value, json};

/// The names in a JSON array of jobs.
fn job_names(jobs: &Value) -> Vec<&str> {
    jobs.as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect()
}

async fn call(r: &Replica, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (code, out) = http_request(&r.listen, method, path, text.as_deref())
        .await
        .unwrap();
    (
        code,
        serde_json::from_str(&out).unwrap_or(Value::String(out)),
    )
}

/// Requests each replica's app received on `path`: run id → pods.
fn deliveries(replicas: &[Replica], path: &str) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in replicas {
        for rec in r.app.records() {
            if rec.path == path
                && let Some(id) = rec.run_id
            {
                m.entry(id).or_default().push(r.pod.clone());
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_from_code_fire_once_honour_repeats_ttl_and_overwrite_and_refuse_bad_input() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let endpoints = c.endpoints();
    let replicas = vec![
        Replica::start(c.path(), &endpoints, "shop", "web-0").await,
        Replica::start(c.path(), &endpoints, "shop", "web-1").await,
    ];
    assert!(
        all_attached(&replicas, Duration::from_secs(20)).await,
        "sidecars did not attach\n{}",
        c.logs()
    );
    let api = &replicas[0];

    // Enqueue: now, once, into one replica, with the data as the body.
    let (code, job) = call(
        api,
        "PUT",
        "/v1/jobs/once",
        Some(json!({"dueTime": "0s", "data": {"order": 7}})),
    )
    .await;
    assert_eq!(code, 201, "{job}");
    // Three per-second fires, then complete.
    let (code, _) = call(
        api,
        "PUT",
        "/v1/jobs/thrice",
        Some(json!({"schedule": "* * * * * *", "repeats": 3, "path": "/ok"})),
    )
    .await;
    assert_eq!(code, 201);
    // A ttl of 3 s on a per-second job.
    let (code, _) = call(
        api,
        "PUT",
        "/v1/jobs/short",
        Some(json!({"schedule": "* * * * * *", "ttl": "3s", "path": "/status/204"})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, listed) = call(api, "GET", "/v1/jobs", None).await;
    assert_eq!(code, 200);
    let names = job_names(&listed["jobs"]);
    // `once` may have fired and been removed already.
    assert!(
        names.contains(&"thrice") && names.contains(&"short"),
        "{listed}"
    );

    // Overwrite: refused without it, taken with it.
    let (code, e) = call(api, "PUT", "/v1/jobs/later", Some(json!({"dueTime": "1h"}))).await;
    assert_eq!(code, 201, "{e}");
    let (code, e) = call(api, "PUT", "/v1/jobs/later", Some(json!({"dueTime": "2h"}))).await;
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("overwrite"), "{e}");
    let (code, e) = call(
        api,
        "PUT",
        "/v1/jobs/later",
        Some(json!({"dueTime": "2h", "overwrite": true})),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {e}");

    // Every node counts the app's jobs in its metrics (thrice, short and
    // later at least; `once` may be gone), once it has applied them.
    for n in &c.nodes {
        let count = || async {
            let (_, metrics) = raftcron_e2e::http_get(&n.http, "/metrics").await.ok()?;
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("raftcron_node_app_jobs{")
                        && l.contains("app=\"web\"")
                        && l.contains("namespace=\"shop\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        };
        let counted = wait_for(Duration::from_secs(5), || async {
            count().await.filter(|n| (3..=4).contains(n))
        })
        .await;
        assert!(
            counted.is_some(),
            "node {}: raftcron_node_app_jobs for shop/web is {:?}",
            n.id,
            count().await
        );
    }

    // raftcronctl sees them too.
    let listed = c.ctl_json(&["jobs", "list", "shop/web"]);
    let names = job_names(&listed);
    assert!(
        names.contains(&"later") && names.contains(&"thrice"),
        "{listed}"
    );
    let later = c.ctl_json(&["jobs", "get", "shop/web/later"]);
    assert_eq!(later["name"], "later", "{later}");
    assert!(later["dueTime"].is_string(), "{later}");

    // Bad input names the field, and nothing stored is lost.
    for (body, field) in [
        (json!({"dueTime": "0s", "payload": 1}), "payload"),
        (json!({"dueTime": "2001-01-01T00:00:00Z"}), "dueTime"),
        (json!({"dueTime": "0s", "data": "x".repeat(70_000)}), "data"),
        (json!({"schedule": "* * * * * *", "ttl": "0s"}), "ttl"),
        (json!({"schedule": "not cron"}), "schedule"),
    ] {
        let (code, e) = call(api, "PUT", "/v1/jobs/bad", Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {e}");
        assert!(
            e["error"].as_str().unwrap_or_default().contains(field),
            "{body}: {e}"
        );
    }
    let (code, _) = call(api, "GET", "/v1/jobs/later", None).await;
    assert_eq!(code, 200, "the stored job survived the bad requests");

    // The deliveries: `once` once, `thrice` three times, `short` about 3.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let once = deliveries(&replicas, "/raftcron/jobs/once");
    assert_eq!(once.len(), 1, "{once:?}");
    assert_eq!(once.values().next().unwrap().len(), 1, "one replica, once");
    let thrice = deliveries(&replicas, "/ok");
    assert_eq!(thrice.len(), 3, "{thrice:?}");
    assert!(thrice.values().all(|p| p.len() == 1), "{thrice:?}");
    let short = deliveries(&replicas, "/status/204");
    assert!(
        (2..=4).contains(&short.len()),
        "a 3 s ttl on a per-second job: {short:?}"
    );

    // Finished jobs are removed, and say why.
    for (name, why) in [
        ("once", "its dueTime fired"),
        ("thrice", "its repeats are used up"),
        ("short", "its ttl passed"),
    ] {
        let said = wait_for(Duration::from_secs(10), || async {
            let (code, e) = call(api, "GET", &format!("/v1/jobs/{name}"), None).await;
            (code == 404).then(|| e["error"].as_str().unwrap_or_default().to_string())
        })
        .await
        .unwrap_or_else(|| panic!("{name} was not removed\n{}", c.logs()));
        assert!(said.contains(why), "{name}: {said}");
    }
    let (code, e) = call(api, "DELETE", "/v1/jobs/later", None).await;
    assert_eq!(code, 200, "{e}");
    let (code, _) = call(api, "GET", "/v1/jobs/later", None).await;
    assert_eq!(code, 404);
    // And through raftcronctl: one made for it, then deleted.
    let (code, _) = call(api, "PUT", "/v1/jobs/tmp", Some(json!({"dueTime": "1h"}))).await;
    assert_eq!(code, 201);
    let deleted = c.ctl(&["jobs", "delete", "shop/web/tmp"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let (code, _) = call(api, "GET", "/v1/jobs/tmp", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_saturation_high_priority_goes_first_and_low_still_runs() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let endpoints = c.endpoints();
    // One replica taking one delivery at a time; each takes 600 ms, and
    // two jobs fire every second: the replica is saturated.
    let replica = Replica::start_with(
        c.path(),
        &endpoints,
        "shop",
        "busy",
        &["--capacity".to_string(), "1".to_string()],
    )
    .await;
    assert!(all_attached(std::slice::from_ref(&replica), Duration::from_secs(20)).await);
    for (name, priority) in [("high", "High"), ("low", "Low")] {
        let (code, e) = call(
            &replica,
            "PUT",
            &format!("/v1/jobs/{name}"),
            Some(json!({
                "schedule": "* * * * * *",
                "priority": priority,
                "path": "/slow?ms=600",
            })),
        )
        .await;
        assert_eq!(code, 201, "{e}");
    }
    let start = now_ms();
    tokio::time::sleep(Duration::from_secs(16)).await;
    // Each job's run ids start with its uid: read them from its runs.
    let mut uid_of = HashMap::new();
    for name in ["high", "low"] {
        let (_, job) = call(&replica, "GET", &format!("/v1/jobs/{name}"), None).await;
        let run = job["runs"][0]["runId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        uid_of.insert(name, run.get(..36).unwrap_or_default().to_string());
    }
    let mut late: HashMap<&str, Vec<i64>> = HashMap::new();
    for rec in replica.app.records() {
        let id = rec.run_id.clone().unwrap_or_default();
        let Some(job) = ["high", "low"]
            .into_iter()
            .find(|j| !uid_of[j].is_empty() && id.starts_with(&uid_of[j]))
        else {
            continue;
        };
        let scheduled = rec
            .scheduled_time
            .as_deref()
            .and_then(raftcron_crds::names::parse_rfc3339_ms)
            .unwrap_or_default();
        if scheduled > start + 2_000 {
            late.entry(job)
                .or_default()
                .push(rec.received_ms as i64 - scheduled);
        }
    }
    let mean = |v: &Vec<i64>| v.iter().sum::<i64>() / v.len().max(1) as i64;
    let (high, low) = (
        late.get("high").cloned().unwrap_or_default(),
        late.get("low").cloned().unwrap_or_default(),
    );
    println!(
        "high: {} deliveries, mean {} ms late; low: {} deliveries, mean {} ms late",
        high.len(),
        mean(&high),
        low.len(),
        mean(&low)
    );
    assert!(!low.is_empty(), "Low starved\n{}", c.logs());
    assert!(
        high.len() > low.len(),
        "High did not get more deliveries than Low: {} vs {}",
        high.len(),
        low.len()
    );
    assert!(
        mean(&high) < mean(&low),
        "High waited longer than Low: {} vs {} ms",
        mean(&high),
        mean(&low)
    );
}
