//! Pure: the node cluster's objects as values, from the config. No client.
//!
//! ```text
//!  ClusterConfig + namespace ──► ConfigMap (node settings as RAFTCRON_* env)
//!                            ├─► StatefulSet (Parallel, anti-affinity, /readyz, preStop step-down, PVCs)
//!                            ├─► Service (headless, peers) + Service (clients)
//!                            └─► PodDisruptionBudget (maxUnavailable 1)
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use raftcron_crds::names::label;
use serde_json::json;

use crate::config::{AntiAffinity, ClusterConfig};

/// Where node data lives in the container.
pub const DATA_DIR: &str = "/var/lib/raftcron";
const TLS_DIR: &str = "/etc/raftcron/tls";

/// Everything the operator applies for the node cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObjects {
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    pub headless: Service,
    pub client: Service,
    pub pdb: PodDisruptionBudget,
}

pub fn selector_labels(cfg: &ClusterConfig) -> BTreeMap<String, String> {
    BTreeMap::from([
        (label::NAME.to_string(), label::APP.to_string()),
        (label::INSTANCE.to_string(), cfg.name.clone()),
        (
            label::COMPONENT.to_string(),
            label::COMPONENT_NODE.to_string(),
        ),
    ])
}

fn labels(cfg: &ClusterConfig) -> BTreeMap<String, String> {
    let mut l = selector_labels(cfg);
    l.insert(label::MANAGED_BY.to_string(), label::MANAGER.to_string());
    l
}

/// Node settings as environment variables (every `raftcron-node run` flag
/// reads `RAFTCRON_<FLAG>`). `RAFTCRON_PEERS` lists the initial members; it
/// only matters to a node that has not joined yet, so it is left out of the
/// rollout checksum: scaling does not restart the running pods.
pub fn node_env(cfg: &ClusterConfig, namespace: &str) -> BTreeMap<String, String> {
    let peers = (1..=cfg.replicas)
        .map(|id| format!("{id}={}", cfg.node_addr(namespace, id)))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = BTreeMap::from([
        ("RAFTCRON_ID_FROM_HOSTNAME".to_string(), "true".to_string()),
        ("RAFTCRON_BOOTSTRAP_ID".into(), "1".into()),
        (
            "RAFTCRON_LISTEN".into(),
            format!("0.0.0.0:{}", cfg.grpc_port),
        ),
        ("RAFTCRON_HTTP".into(), format!("0.0.0.0:{}", cfg.http_port)),
        ("RAFTCRON_DATA_DIR".into(), DATA_DIR.into()),
        ("RAFTCRON_PEERS".into(), peers),
        ("RAFTCRON_KUBERNETES".into(), "true".into()),
        ("RAFTCRON_HEARTBEAT".into(), cfg.raft.heartbeat.clone()),
        (
            "RAFTCRON_ELECTION_TIMEOUT_MIN".into(),
            cfg.raft.election_timeout_min.clone(),
        ),
        (
            "RAFTCRON_ELECTION_TIMEOUT_MAX".into(),
            cfg.raft.election_timeout_max.clone(),
        ),
        (
            "RAFTCRON_SNAPSHOT_EVERY".into(),
            cfg.raft.snapshot_every.to_string(),
        ),
        ("RAFTCRON_STATUS_QPS".into(), cfg.status_qps.to_string()),
        ("RAFTCRON_LOG_FORMAT".into(), "json".into()),
    ]);
    if cfg.exec_enabled {
        env.insert("RAFTCRON_ENABLE_EXEC".into(), "true".into());
    }
    if let Some(d) = &cfg.http_deny {
        env.insert("RAFTCRON_HTTP_DENY".into(), d.clone());
    }
    if cfg.http_deny_loopback {
        env.insert("RAFTCRON_HTTP_DENY_LOOPBACK".into(), "true".into());
    }
    if let Some(tls) = &cfg.tls {
        env.insert("RAFTCRON_TLS_CERT".into(), format!("{TLS_DIR}/tls.crt"));
        env.insert("RAFTCRON_TLS_KEY".into(), format!("{TLS_DIR}/tls.key"));
        env.insert("RAFTCRON_TLS_CA".into(), format!("{TLS_DIR}/ca.crt"));
        if tls.client_auth {
            env.insert("RAFTCRON_TLS_CLIENT_AUTH".into(), "true".into());
        }
    }
    if let Some(level) = &cfg.log_level {
        env.insert("RAFTCRON_LOG".into(), level.clone());
    }
    env
}

/// A stable digest of the settings that need a rollout when they change.
fn checksum(env: &BTreeMap<String, String>) -> String {
    // FNV-1a: stable across builds, unlike DefaultHasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for (k, v) in env.iter().filter(|(k, _)| k.as_str() != "RAFTCRON_PEERS") {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    // The JSON below is written against the Kubernetes types; a mismatch is a
    // bug caught by the tests, not an input error.
    serde_json::from_value(v).expect("object literal matches its Kubernetes type")
}

pub fn build(cfg: &ClusterConfig, namespace: &str) -> NodeObjects {
    let name = cfg.node_name();
    let labels = labels(cfg);
    let selector = selector_labels(cfg);
    let env = node_env(cfg, namespace);
    let config_map: ConfigMap = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-config"), "namespace": namespace, "labels": labels},
        "data": env,
    }));
    let mut annotations = cfg.pod_annotations.clone();
    annotations.insert("raftcron.dev/config-checksum".into(), checksum(&env));
    let affinity = match (&cfg.affinity, cfg.anti_affinity) {
        (Some(a), _) => serde_json::to_value(a).expect("affinity serializes"),
        (None, AntiAffinity::None) => json!(null),
        (None, AntiAffinity::Required) => {
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}]}})
        }
        (None, AntiAffinity::Preferred) => {
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}}]}})
        }
    };
    let mut volume_mounts = vec![
        json!({"name": "data", "mountPath": DATA_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![json!({"name": "tmp", "emptyDir": {}})];
    if let Some(tls) = &cfg.tls {
        volume_mounts.push(json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}));
        volumes.push(json!({"name": "tls", "secret": {"secretName": tls.secret_name}}));
    }
    let mut pvc_spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": cfg.storage.size}}});
    if let Some(class) = &cfg.storage.storage_class_name {
        pvc_spec["storageClassName"] = json!(class);
    }
    let container = json!({
        "name": "node",
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": ["run"],
        "envFrom": [{"configMapRef": {"name": format!("{name}-config")}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "RAFTCRON_ADVERTISE", "value": format!("$(POD_NAME).{}.$(POD_NAMESPACE).svc:{}", cfg.headless_name(), cfg.grpc_port)},
        ],
        "ports": [
            {"name": "grpc", "containerPort": cfg.grpc_port},
            {"name": "http", "containerPort": cfg.http_port},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 6},
        // A leaving leader hands over first, so the next fire is not delayed by an election.
        "lifecycle": {"preStop": {"exec": {"command": ["/raftcronctl", "--endpoint", format!("127.0.0.1:{}", cfg.grpc_port), "step-down"]}}},
        "resources": cfg.resources,
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "volumeMounts": volume_mounts,
    });
    let stateful_set: StatefulSet = typed(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "serviceName": cfg.headless_name(),
            "replicas": cfg.replicas,
            // Raft needs every member up to form a quorum; starting them one
            // by one would only slow the first start.
            "podManagementPolicy": "Parallel",
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": if cfg.storage.retain { "Retain" } else { "Delete" },
                "whenScaled": if cfg.storage.retain { "Retain" } else { "Delete" },
            },
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "serviceAccountName": cfg.service_account_name.clone().unwrap_or_else(|| name.clone()),
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "affinity": affinity,
                    "nodeSelector": cfg.node_selector,
                    "tolerations": cfg.tolerations,
                    "priorityClassName": cfg.priority_class_name,
                    "imagePullSecrets": (!cfg.image_pull_secrets.is_empty()).then_some(&cfg.image_pull_secrets),
                    "containers": [container],
                    "volumes": volumes,
                }
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": selector}, "spec": pvc_spec}],
        }
    }));
    let ports = json!([
        {"name": "grpc", "port": cfg.grpc_port, "targetPort": "grpc"},
        {"name": "http", "port": cfg.http_port, "targetPort": "http"},
    ]);
    let headless: Service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": cfg.headless_name(), "namespace": namespace, "labels": labels},
        // Peers must resolve each other before they are ready (bootstrap, elections).
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector, "ports": ports},
    }));
    let client: Service = typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }));
    let pdb: PodDisruptionBudget = typed(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }));
    NodeObjects {
        config_map,
        stateful_set,
        headless,
        client,
        pdb,
    }
}

#[cfg(test)]
mod tests;
