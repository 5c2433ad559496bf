//! Bad input and bad starts: each gets a clear error naming the cause or a
//! clean refusal to start, never a panic, and nothing committed is lost.

use std::time::Duration;

use raftcron_e2e::{Cluster, ClusterOptions, wait_for};
use raftcron_node::pb::scheduler::UpsertRequest;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_refused(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected a refusal to start; stderr:\n{err}"
    );
    assert!(
        err.contains(needle),
        "expected {needle:?} in stderr:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
}

#[tokio::test]
async fn a_port_already_in_use_is_refused_naming_the_address() {
    let c = Cluster::new(ClusterOptions {
        nodes: 1,
        ..Default::default()
    });
    let _taken = std::net::TcpListener::bind(&c.nodes[0].grpc).unwrap();
    let out = c.nodes[0].run_to_exit(true, Duration::from_secs(10));
    assert_refused(&out, &format!("cannot listen on {}", c.nodes[0].grpc));
}

#[tokio::test]
async fn a_data_dir_of_another_node_id_is_refused() {
    let c = Cluster::new(ClusterOptions {
        nodes: 2,
        ..Default::default()
    });
    // Node 1 creates its identity in its data dir, then stops.
    let _ = c.nodes[0].run_to_exit(false, Duration::from_secs(2));
    assert!(c.nodes[0].data_dir.join("node.json").exists());
    std::fs::remove_dir_all(&c.nodes[1].data_dir).ok();
    copy_dir(&c.nodes[0].data_dir, &c.nodes[1].data_dir);
    let out = c.nodes[1].run_to_exit(false, Duration::from_secs(10));
    assert_refused(&out, "belongs to node 1");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_corrupted_log_tail_refuses_to_start_and_the_cluster_keeps_its_data() {
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let client = c.client();
    let spec = r#"{"schedule":"0 0 1 1 *","action":{"http":{"url":"http://127.0.0.1:9/"}}}"#;
    for i in 0..20 {
        let req = UpsertRequest {
            namespace: "d".into(),
            name: format!("j{i}"),
            uid: format!("u{i}"),
            generation: 1,
            spec_json: spec.into(),
            kubernetes: false,
        };
        client.upsert_batch(vec![req]).await.unwrap();
    }
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.node(victim).kill9();
    raftcron_node::testkit::corrupt_newest_wal_record(&c.node(victim).data_dir.join("raft-log"));
    let out = c.node(victim).run_to_exit(false, Duration::from_secs(10));
    assert_refused(&out, "damaged");
    // The other two still hold and serve everything committed.
    let listed = c.ctl_json(&["list", "-n", "d"]);
    assert_eq!(listed.as_array().unwrap().len(), 20);
    // Moving the damaged data dir away lets the node rejoin as a new member.
    c.node(victim).wipe();
    c.node(victim).start(false);
    let back = wait_for(Duration::from_secs(20), || async {
        let s = c.status(victim).await?;
        (s.schedules == 20 && s.members.iter().any(|m| m.id == victim && m.uid == s.uid))
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "node {victim} did not rejoin\n{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_another_cluster_is_refused() {
    let mut a = Cluster::start(ClusterOptions::default()).await;
    let b = Cluster::start(ClusterOptions::default()).await;
    // Both clusters have their ids recorded in node 2's node.json (status
    // reports the applied id; node.json follows it a moment later).
    for c in [&a, &b] {
        let id = wait_for(Duration::from_secs(10), || async {
            c.status(2)
                .await
                .map(|s| s.cluster_id)
                .filter(|id| !id.is_empty())
        })
        .await
        .expect("cluster id");
        let node_json = c.nodes[1].data_dir.join("node.json");
        wait_for(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&node_json).unwrap_or_default();
            let found = text.contains(&id);
            async move { found.then_some(()) }
        })
        .await
        .expect("cluster id in node.json");
    }
    a.node(2).kill9();
    let b2 = &b.nodes[1].data_dir;
    std::fs::remove_dir_all(&a.nodes[1].data_dir).unwrap();
    copy_dir(b2, &a.nodes[1].data_dir);
    let out = a.nodes[1].run_to_exit(false, Duration::from_secs(10));
    assert_refused(&out, "belongs to cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors_naming_the_field_and_change_nothing() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let client = c.client();
    let bad = UpsertRequest {
        namespace: "d".into(),
        name: "x".into(),
        uid: "u".into(),
        generation: 1,
        spec_json: r#"{"schedule":"61 * * * *","action":{"http":{"url":"http://127.0.0.1:9/"}}}"#
            .into(),
        kubernetes: false,
    };
    let err = client.upsert_batch(vec![bad]).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("spec.schedule"), "{err}");
    let not_json = UpsertRequest {
        spec_json: "{".into(),
        ..Default::default()
    };
    let err = client
        .upsert_batch(vec![UpsertRequest {
            namespace: "d".into(),
            name: "y".into(),
            uid: "u".into(),
            ..not_json
        }])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    let err = client.runs("d", "missing").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    let err = client.trigger("d", "missing").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");

    // A YAML file with one bad document is refused whole, naming file, line and field.
    let file = c.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: raftcron.dev/v1alpha1\nkind: ScheduledJob\nmetadata: {name: good}\nspec:\n  schedule: \"@hourly\"\n  action: {http: {url: \"http://127.0.0.1:9/\"}}\n---\napiVersion: raftcron.dev/v1alpha1\nkind: ScheduledJob\nmetadata: {name: bad}\nspec:\n  schedule: \"@hourly\"\n  concurrencyPolicy: Sometimes\n  action: {http: {url: \"http://127.0.0.1:9/\"}}\n",
    )
    .unwrap();
    let out = c.ctl(&["apply", "-f", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml:13:22") && err.contains("concurrencyPolicy"),
        "{err}"
    );
    assert_eq!(
        c.ctl_json(&["list"]).as_array().unwrap().len(),
        0,
        "nothing from a refused file is applied"
    );
    let status = c.status(1).await.unwrap();
    assert!(status.leader.is_some());
}
