//! `build` on inline YAML configs, including the exact StatefulSet produced
//! (compared with a reviewed golden file; `UPDATE_GOLDEN=1` rewrites it).

use super::*;

const MINIMAL: &str = "image: ghcr.io/raftcron/raftcron-node:0.1.0\n";

fn cfg(yaml: &str) -> ClusterConfig {
    ClusterConfig::parse(yaml, "test.yaml").unwrap()
}

#[test]
fn the_stateful_set_for_a_minimal_config_is_exactly_the_reviewed_one() {
    let objects = build(&cfg(MINIMAL), "raftcron-system");
    let yaml = serde_yaml::to_string(&objects.stateful_set).unwrap();
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/build/statefulset.golden.yaml"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &yaml).unwrap();
    }
    let expected = std::fs::read_to_string(golden).unwrap();
    assert_eq!(
        yaml, expected,
        "StatefulSet changed; review and rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn nodes_get_their_identity_peers_and_bootstrap_id_from_the_config() {
    let env = node_env(&cfg(MINIMAL), "ns");
    assert_eq!(env["RAFTCRON_ID_FROM_HOSTNAME"], "true");
    assert_eq!(
        env["RAFTCRON_BOOTSTRAP_ID"], "1",
        "only the first pod bootstraps"
    );
    assert_eq!(
        env["RAFTCRON_PEERS"],
        "1=raftcron-node-0.raftcron-node-headless.ns.svc:7001,2=raftcron-node-1.raftcron-node-headless.ns.svc:7001,3=raftcron-node-2.raftcron-node-headless.ns.svc:7001"
    );
    assert_eq!(
        env["RAFTCRON_HTTP_DENY_LOOPBACK"], "true",
        "in a cluster, loopback targets are denied by default"
    );
    assert!(
        !env.contains_key("RAFTCRON_ENABLE_EXEC"),
        "exec is off by default"
    );
}

#[test]
fn scaling_changes_the_peers_but_does_not_roll_the_pods() {
    let three = build(&cfg(MINIMAL), "ns");
    let five = build(&cfg(&format!("{MINIMAL}replicas: 5\n")), "ns");
    let checksum = |o: &NodeObjects| {
        o.stateful_set
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["raftcron.dev/config-checksum"]
            .clone()
    };
    assert_eq!(checksum(&three), checksum(&five));
    assert_eq!(five.stateful_set.spec.replicas, Some(5));
    let timing = build(
        &cfg(&format!(
            "{MINIMAL}raft: {{heartbeat: 30ms, electionTimeoutMin: 150ms, electionTimeoutMax: 250ms, snapshotEvery: 1000}}\n"
        )),
        "ns",
    );
    assert_ne!(
        checksum(&three),
        checksum(&timing),
        "a settings change rolls the pods"
    );
}

#[test]
fn tls_mounts_the_secret_and_turns_on_mutual_tls() {
    let o = build(
        &cfg(&format!("{MINIMAL}tls: {{secretName: node-tls}}\n")),
        "ns",
    );
    let data = o.config_map.data.unwrap();
    assert_eq!(data["RAFTCRON_TLS_CERT"], "/etc/raftcron/tls/tls.crt");
    assert_eq!(data["RAFTCRON_TLS_CLIENT_AUTH"], "true");
    let pod = o.stateful_set.spec.template.spec.unwrap();
    let vols = pod.volumes.unwrap();
    assert!(vols.iter().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("node-tls"))
    }));
}

#[test]
fn services_and_the_disruption_budget_select_the_node_pods() {
    let o = build(&cfg(MINIMAL), "ns");
    let sel = selector_labels(&cfg(MINIMAL));
    let headless = o.headless.spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    assert_eq!(headless.selector.unwrap(), sel);
    assert_eq!(o.client.spec.unwrap().selector.unwrap(), sel);
    let pdb = o.pdb.spec.unwrap();
    assert_eq!(
        pdb.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let err = |yaml: &str| {
        ClusterConfig::parse(yaml, "c.yaml")
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(&format!("{MINIMAL}replica: 3\n")).contains("replica"),
        "unknown key"
    );
    assert!(
        err(&format!("{MINIMAL}replicas: 4\n"))
            .contains("replicas: 4 gives no extra fault tolerance")
    );
    assert!(err(&format!("{MINIMAL}raft: {{heartbeat: fast, electionTimeoutMin: 1s, electionTimeoutMax: 2s, snapshotEvery: 1}}\n")).contains("raft.heartbeat"));
    assert!(err("replicas: 3\n").contains("image"));
}

#[test]
fn node_pods_pull_their_image_with_the_configured_secrets() {
    let o = build(
        &cfg(&format!(
            "{MINIMAL}imagePullSecrets: [{{name: regcred}}, {{name: mirror}}]\n"
        )),
        "ns",
    );
    let pod = o.stateful_set.spec.template.spec.unwrap();
    let names: Vec<String> = pod
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["regcred", "mirror"]);
    let minimal = build(&cfg(MINIMAL), "ns").stateful_set.spec.template.spec;
    assert_eq!(
        minimal.unwrap().image_pull_secrets,
        None,
        "no secrets: the field is left out"
    );
    let err = ClusterConfig::parse(
        &format!("{MINIMAL}imagePullSecrets: [{{name: \"\"}}]\n"),
        "c.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("imagePullSecrets"), "{err}");
}

#[test]
fn an_image_pinned_by_digest_is_used_as_given_and_a_malformed_digest_is_refused() {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let image = format!("registry.example.com/raftcron-node@{digest}");
    let o = build(&cfg(&format!("image: {image}\n")), "ns");
    let pod = o.stateful_set.spec.template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(image.as_str()));
    for bad in [
        "registry.example.com/raftcron-node@sha256:abc",
        "registry.example.com/raftcron-node@0123",
        "registry.example.com/raftcron-node@",
    ] {
        let err = ClusterConfig::parse(&format!("image: \"{bad}\"\n"), "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.yaml: image:") && err.contains("digest"),
            "{bad}: {err}"
        );
    }
}
