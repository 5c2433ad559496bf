//! Mutual TLS on the gRPC port: nodes talk to each other over mTLS, a client
//! with a certificate from the cluster's CA is served, and a client without
//! a certificate, with one from another CA, or without TLS is refused.

mod common;

use std::time::Duration;

use common::certs::{ca, leaf};
use raftcron_e2e::{ClientTlsFiles, Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_clients_need_certificates_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = ca("raftcron test CA");
    let other_ca = ca("someone else");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cluster_ca.pem).unwrap();
    let (node_cert, node_key) = leaf(&cluster_ca, dir.path(), "node", &[]);
    let (cli_cert, cli_key) = leaf(&cluster_ca, dir.path(), "client", &[]);
    let (bad_cert, bad_key) = leaf(&other_ca, dir.path(), "intruder", &[]);
    let opts = ClusterOptions {
        extra_args: vec![
            "--tls-cert".into(),
            node_cert.display().to_string(),
            "--tls-key".into(),
            node_key.display().to_string(),
            "--tls-ca".into(),
            ca_file.display().to_string(),
            // Mutual TLS is the default with TLS on: no --tls-client-auth.
        ],
        client_tls: Some(ClientTlsFiles {
            ca: ca_file.clone(),
            cert: Some(cli_cert.clone()),
            key: Some(cli_key.clone()),
        }),
        ..Default::default()
    };
    // The cluster forms: every Raft RPC between nodes is mutually authenticated.
    let c = Cluster::start(opts).await;
    let file = dir.path().join("job.yaml");
    std::fs::write(
        &file,
        "apiVersion: raftcron.dev/v1alpha1\nkind: ScheduledJob\nmetadata: {name: tls}\nspec:\n  schedule: \"@hourly\"\n  action: {http: {url: \"http://127.0.0.1:9/\"}}\n",
    )
    .unwrap();
    let ok = c.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(c.ctl_json(&["list"]).as_array().unwrap().len(), 1);

    let endpoint = c.nodes[0].grpc.clone();
    let ctl = |extra: &[&str]| {
        std::process::Command::new(raftcron_e2e::bin("raftcronctl"))
            .args(["--endpoint", &endpoint])
            .args(extra)
            .args(["status", "-o", "json"])
            .output()
            .unwrap()
    };
    let refused = [
        (
            "no client certificate",
            ctl(&["--tls-ca", ca_file.to_str().unwrap()]),
        ),
        (
            "a certificate from another CA",
            ctl(&[
                "--tls-ca",
                ca_file.to_str().unwrap(),
                "--tls-cert",
                bad_cert.to_str().unwrap(),
                "--tls-key",
                bad_key.to_str().unwrap(),
            ]),
        ),
        ("plain text", ctl(&[])),
    ];
    for (what, out) in refused {
        assert!(
            !out.status.success(),
            "{what} was served: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let served = ctl(&[
        "--tls-ca",
        ca_file.to_str().unwrap(),
        "--tls-cert",
        cli_cert.to_str().unwrap(),
        "--tls-key",
        cli_key.to_str().unwrap(),
    ]);
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    assert!(c.wait_leader(Duration::from_secs(5)).await.is_some());
}
