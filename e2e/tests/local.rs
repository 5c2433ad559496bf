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
    let base = loop {
        let b = 20_000 + (std::process::id() as u16 % 200) * 200 + (free_port() % 50);
        if (1..=3)
            .chain(101..=103)
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", b + o)).is_ok())
        {
            break b;
        }
    };
    let target = format!("127.0.0.1:{}", free_port());
    std::fs::write(dir.path().join("jobs.yaml"), jobs(&target)).unwrap();
    let child = Command::new(bin("raftcron-node"))
        .args([
            "local",
            "--base-port",
            &base.to_string(),
            "--target",
            &target,
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("127.0.0.1:{}", base + 1);
    let listed = wait_for(Duration::from_secs(30), || {
        let e = endpoint.clone();
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
    let resumed = Command::new(bin("raftcronctl"))
        .args(["--endpoint", &endpoint, "resume", "policies/overlaps"])
        .output()
        .unwrap();
    assert!(resumed.status.success());

    // Ctrl-C: the cluster stops cleanly and the run lines were printed.
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("policies/flaky") && stdout.contains("Succeeded"),
        "{stdout}"
    );
    assert!(stdout.contains("TimedOut"), "{stdout}");
}
