//! `propose_as` against a real single-node Raft (real log and state machine
//! stores on disk, fsync included): the fire loop relies on a write being
//! applied when it returns, and on a stale term being refused.

use std::collections::BTreeMap;
use std::time::Duration;

use super::types::LeaderId;
use super::{ProposeError, propose_as};
use crate::ctx::NodeConfig;
use crate::node::Node;
use crate::sm::{Command, Response, UpsertOutcome, UpsertSchedule};

async fn single_node(dir: &std::path::Path) -> Node {
    single_node_on(
        dir,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
}

async fn single_node_on(dir: &std::path::Path, grpc: tokio::net::TcpListener) -> Node {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap().to_string();
    let config = NodeConfig {
        id: 1,
        advertise: addr.clone(),
        data_dir: dir.to_path_buf(),
        peers: BTreeMap::from([(1, addr)]),
        bootstrap: true,
        timing: super::RaftTiming::default(),
        tls: None,
        scheduler: crate::scheduler::SchedulerConfig::default(),
        kube: None,
    };
    Node::start(config, grpc, http).await.unwrap()
}

fn upsert(i: usize) -> Command {
    // Suspended: the fire loop leaves it alone, the test sees only its writes.
    let spec = serde_json::from_value(serde_json::json!({
        "schedule": "@every 1h",
        "suspend": true,
        "action": {"http": {"url": "http://127.0.0.1:9/"}}
    }))
    .unwrap();
    Command::Upsert {
        items: vec![UpsertSchedule {
            namespace: "default".into(),
            name: format!("s{i}"),
            uid: format!("uid-{i}"),
            generation: 1,
            spec,
            kubernetes: false,
            app_job: None,
        }],
        now: 1_800_000_000_000,
    }
}

/// The term this node leads, once its Raft core says so (the metrics
/// published before startup still carry the stored vote).
async fn leader_term(raft: &super::types::Raft) -> u64 {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = super::metrics(raft);
            if m.state == openraft::ServerState::Leader && m.current_leader == Some(m.id) {
                return m.current_term;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a single bootstrapped node leads within 10 s")
}

/// A leader that restarts is elected again in a newer term: it must not
/// resume the old one, or it would take its dead predecessor's claims and
/// starts for its own (the whole-cluster stop once ran a `Skip` fire 20 s
/// late this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_leads_in_a_newer_term() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let node = single_node_on(dir.path(), grpc).await;
    let before = leader_term(&node.ctx.raft).await;
    node.shutdown().await;
    let grpc = tokio::net::TcpListener::bind(addr).await.unwrap();
    let node = single_node_on(dir.path(), grpc).await;
    let after = leader_term(&node.ctx.raft).await;
    assert!(
        after > before,
        "led in term {after} after the restart, {before} before"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_as_returns_after_apply_and_refuses_a_stale_term() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    let raft = node.ctx.raft.clone();
    let term = leader_term(&raft).await;
    let me = LeaderId { term, node_id: 1 };

    // Each write must be visible in the state the moment it returns. A
    // plain `raft.write(..).await` returns before apply (the takeover bug).
    for i in 0..200 {
        let r = propose_as(&raft, me, upsert(i)).await.expect("write");
        assert_eq!(r, Response::Upsert(vec![UpsertOutcome::Created]));
        let uid = format!("uid-{i}");
        assert!(
            node.ctx.sm.read().state.get_by_uid(&uid).is_some(),
            "write {i} returned before it was applied"
        );
    }

    // A loop of an earlier term must not write.
    let stale = LeaderId {
        term: term - 1,
        node_id: 1,
    };
    match propose_as(&raft, stale, upsert(1000)).await {
        Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("a stale term wrote: {other:?}"),
    }
    assert!(node.ctx.sm.read().state.get_by_uid("uid-1000").is_none());
    node.shutdown().await;
}
