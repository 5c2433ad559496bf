//! `raftcron-node local` as a user runs it: a 3-node cluster from YAML, the
//! built-in target, policies observed through `raftcronctl`, and a clean
//! stop on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use raftcron_e2e::{bin, free_port, wait_for};

fn jobs(target: &str) -> String {
    format!(
        r#"apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {{name: flaky, namespace: policies}}
spec:
  schedule: "*/2 * * * * *"
  concurrencyPolicy: Forbid
  retry: {{maxAttempts: 3, initialBackoffSeconds: 0.2, maxBackoffSeconds: 1, jitter: 0}}
  action: {{http: {{url: "http://{target}/flaky?fail=1"}}}}
---
apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {{name: hangs, namespace: policies}}
spec:
  schedule: "*/3 * * * * *"
  timeoutSeconds: 1
  action: {{http: {{url: "http://{target}/slow?ms=5000"}}}}
---
apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {{name: overlaps, namespace: policies}}
spec:
  schedule: "* * * * * *"
  concurrencyPolicy: Forbid
  action: {{http: {{url: "http://{target}/slow?ms=2500"}}}}
---
apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {{name: yearly, namespace: policies}}
spec:
  schedule: "0 0 1 1 *"
  action: {{http: {{url: "http://{target}/ok"}}}}
"#
    )
}

fn ctl(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("raftcronctl"))
        .args(["--endpoint", endpoint])
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "raftcronctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn results(endpoint: &str, job: &str) -> Vec<(String, u64)> {
    ctl(endpoint, &["runs", job])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["result"].as_str().unwrap().to_string(),
                r["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_runs_the_yaml_applies_policies_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // Ports BASE+1..3 (gRPC) and BASE+101..103 (HTTP) must be free.
    let base = free_base_port();
    let target = format!("127.0.0.1:{}", free_port());
    let yaml = dir.path().join("jobs");
    std::fs::create_dir(&yaml).unwrap();
    std::fs::write(yaml.join("jobs.yaml"), jobs(&target)).unwrap();
    let data = dir.path().join("data");
    let stderr = dir.path().join("stderr.log");
    let local = || {
        Command::new(bin("raftcron-node"))
            .env_remove("RAFTCRON_LOG")
            .args([
                "local",
                "--base-port",
                &base.to_string(),
                "--target",
                &target,
                "--data-dir",
            ])
            .arg(&data)
            .arg(&yaml)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap()
    };
    let child = local();
    let endpoint = format!("127.0.0.1:{}", base + 1);
    loaded(&endpoint).await;

    let trigger = ctl(&endpoint, &["trigger", "policies/yearly"]);
    assert!(trigger["run_id"].as_str().unwrap().contains("manual"));
    tokio::time::sleep(Duration::from_secs(7)).await;

    // Retried after one failure, succeeded on attempt 2.
    let flaky = results(&endpoint, "policies/flaky");
    assert!(
        flaky.iter().any(|(r, a)| r == "Succeeded" && *a == 2),
        "{flaky:?}"
    );
    // Killed at its 1 s timeout.
    let hangs = results(&endpoint, "policies/hangs");
    assert!(hangs.iter().any(|(r, _)| r == "TimedOut"), "{hangs:?}");
    // A run takes 2.5 s, fires come every second: Forbid skips the overlaps.
    let overlaps = results(&endpoint, "policies/overlaps");
    assert!(overlaps.iter().any(|(r, _)| r == "Skipped"), "{overlaps:?}");
    assert!(
        overlaps.iter().any(|(r, _)| r == "Succeeded"),
        "{overlaps:?}"
    );
    // The manual trigger ran although the schedule fires once a year.
    let yearly = results(&endpoint, "policies/yearly");
    assert_eq!(yearly, vec![("Succeeded".to_string(), 1)]);

    // Suspend stops new runs; resume starts them again.
    let suspended = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "suspend", "policies/overlaps"])
        .output()
        .unwrap();
    assert!(suspended.status.success());
    let listed = ctl(&endpoint, &["list", "-n", "policies"]);
    let overlaps_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "overlaps")
        .unwrap()
        .clone();
    assert_eq!(overlaps_row["suspend"], true);
    assert!(
        overlaps_row["next_fire"].is_null(),
        "a suspended schedule has no next fire"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = ctl(&endpoint, &["runs", "policies/overlaps"])
        .as_array()
        .unwrap()
        .len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ctl(&endpoint, &["runs", "policies/overlaps"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "runs while suspended");
    // A trigger of a suspended schedule is recorded Skipped: raftcronctl
    // says so and fails, rather than printing "triggered".
    let trigger = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "trigger", "policies/overlaps"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&trigger.stderr);
    assert!(
        !trigger.status.success() && said.contains("not started: Skipped"),
        "trigger of a suspended schedule: {:?} {said}",
        trigger.status
    );
    let resumed = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "resume", "policies/overlaps"])
        .output()
        .unwrap();
    assert!(resumed.status.success());

    // Output into a closed pipe (`raftcronctl list | head -1`): a quiet exit.
    let mut list = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(list.stdout.take());
    let closed = list.wait_with_output().unwrap();
    assert!(
        closed.status.success() && closed.stderr.is_empty(),
        "raftcronctl list into a closed pipe: {:?} {}",
        closed.status,
        String::from_utf8_lossy(&closed.stderr)
    );

    // Suspended at run time, then the whole thing restarted below.
    let suspended = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "suspend", "policies/yearly"])
        .output()
        .unwrap();
    assert!(suspended.status.success());

    // Ctrl-C: the cluster stops cleanly and the run lines were printed.
    let stdout = interrupt(child);
    assert!(
        stdout.contains("policies/flaky") && stdout.contains("Succeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("TimedOut"), "{stdout}");
    // Logs are kept to warnings: no INFO lines at start or at the stop.
    let logs = std::fs::read_to_string(&stderr).unwrap();
    let info: Vec<&str> = logs.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(
        info.is_empty(),
        "local printed INFO logs:\n{}",
        info.join("\n")
    );

    // Restarted on the same data dir: the YAML is applied again and wins,
    // and the field it changed back is printed.
    let child = local();
    let reapplied = wait_for(Duration::from_secs(30), || {
        let e = endpoint.clone();
        async move {
            let out = Command::new(bin("raftcronctl"))
                .args(["--endpoint", &e, "list", "-n", "policies", "-o", "json"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let yearly = v.as_array()?.iter().find(|s| s["name"] == "yearly")?;
            (yearly["suspend"] == false).then_some(())
        }
    })
    .await;
    assert!(
        reapplied.is_some(),
        "the YAML (suspend: false) was not applied again"
    );
    let stdout = interrupt(child);
    assert!(
        stdout.contains("policies/yearly: spec.suspend: true → false"),
        "the restart did not say it undid the run-time suspend:\n{stdout}"
    );
}

/// Waits until local mode has loaded the four jobs.
async fn loaded(endpoint: &str) {
    let listed = wait_for(Duration::from_secs(30), || {
        let e = endpoint.to_string();
        async move {
            let out = Command::new(bin("raftcronctl"))
                .args(["--endpoint", &e, "list", "-o", "json"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v.as_array()?.len() == 4).then_some(())
        }
    })
    .await;
    assert!(listed.is_some(), "local mode did not load the four jobs");
}

/// Ctrl-C, a clean exit, and what was printed.
fn interrupt(child: std::process::Child) -> String {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// README "Sidecar without Kubernetes", as written: `local` with
/// deploy/sidecar/, two small HTTP servers (the built-in target) each with a
/// `raftcron-node sidecar`; every instant reaches exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_fires_an_app_job_into_exactly_one_of_two_sidecar_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sidecar");
    let mut local = Command::new(bin("raftcron-node"))
        .args(["local", "--no-target", "--base-port", &base.to_string()])
        .arg(&examples)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cluster: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let mut apps = Vec::new();
    let mut sidecars = Vec::new();
    for i in 1..=2 {
        let app = raftcron_e2e::Ledger::start(&{
            let d = dir.path().join(format!("web-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .await;
        sidecars.push(
            Command::new(bin("raftcron-node"))
                .args(["sidecar", "--cluster", &cluster.join(",")])
                .args([
                    "--namespace",
                    "demo",
                    "--app",
                    "web",
                    "--pod",
                    &format!("web-{i}"),
                ])
                .args(["--app-url", &format!("http://{}", app.addr)])
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        apps.push(app);
    }
    // Both replicas receive deliveries, then 6 s more are counted.
    let both = wait_for(Duration::from_secs(30), || async {
        apps.iter().all(|a| !a.records().is_empty()).then_some(())
    })
    .await;
    let from = raftcron_e2e::now_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = raftcron_e2e::now_ms() - 2_000;
    for s in &mut sidecars {
        let _ = s.kill();
        let _ = s.wait();
    }
    let _ = local.kill();
    let _ = local.wait();
    assert!(
        both.is_some(),
        "the two replicas did not both receive deliveries"
    );
    let uid = raftcron_node::api::convert::derived_uid("demo", "tick");
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for a in &apps {
        for r in a.records() {
            if let Some(id) = r.run_id {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for instant in ((from / 1000 + 1) * 1000..to).step_by(1000) {
        let id = raftcron_crds::names::run_id(&uid, instant);
        assert_eq!(
            seen.get(&id),
            Some(&1),
            "instant {id} reached the replicas {:?} times",
            seen.get(&id)
        );
    }
}

/// A base port with BASE+1..3 and BASE+101..103 free (local mode's ports).
fn free_base_port() -> u16 {
    loop {
        let b = 20_000 + (std::process::id() as u16 % 200) * 200 + (free_port() % 50);
        if (1..=3)
            .chain(101..=103)
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", b + o)).is_ok())
        {
            return b;
        }
    }
}
