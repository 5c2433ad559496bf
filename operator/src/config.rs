//! The node cluster the operator manages, read from a YAML file (the Helm
//! chart renders it into a ConfigMap). Unknown keys are refused by name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Prefix of every object: `<name>-node` StatefulSet, Services, PDB.
    #[serde(default = "default_name")]
    pub name: String,
    /// Scheduler nodes (Raft voters); 3 or 5 for a quorum that survives one or two failures.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// `REPO:TAG`, or `REPO@sha256:<hex>` to pin the image by digest.
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// Secrets (in the node namespace) with credentials for the image's registry.
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub raft: RaftTiming,
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Allow `exec` actions (they run in the node container).
    #[serde(default)]
    pub exec_enabled: bool,
    /// CIDRs HTTP actions may not call (default: the node's built-in list).
    #[serde(default)]
    pub http_deny: Option<String>,
    /// Also refuse loopback targets.
    #[serde(default = "yes")]
    pub http_deny_loopback: bool,
    #[serde(default = "default_grpc_port")]
    pub grpc_port: i32,
    #[serde(default = "default_http_port")]
    pub http_port: i32,
    /// `required` spreads nodes over hosts strictly; `preferred` (default) best-effort.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// ServiceAccount of the node pods (needs the RBAC of the chart).
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Status writes per second from the leader to the API server.
    #[serde(default = "default_status_qps")]
    pub status_qps: u32,
    #[serde(default)]
    pub log_level: Option<String>,
    /// What the injection webhook gives the sidecar it adds to app pods.
    #[serde(default)]
    pub sidecar: SidecarConfig,
}

/// The injected sidecar's settings (the image is the node image above).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarConfig {
    /// Requests and limits of the sidecar container; they add to every
    /// injected pod's.
    #[serde(default = "default_sidecar_resources")]
    pub resources: ResourceRequirements,
    /// The app's port when the pod has no `raftcron.dev/app-port` annotation.
    #[serde(default = "default_app_port")]
    pub default_app_port: u16,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            resources: default_sidecar_resources(),
            default_app_port: default_app_port(),
        }
    }
}

fn default_sidecar_resources() -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("10m")),
            ("memory".to_string(), q("32Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("64Mi"))])),
        ..Default::default()
    }
}

fn default_app_port() -> u16 {
    8080
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    pub size: String,
    #[serde(default)]
    pub storage_class_name: Option<String>,
    /// Keep the volumes when the StatefulSet is deleted or scaled down.
    /// Default false: a removed node's data is of no use (it rejoins as a
    /// new member), and uninstalling leaves nothing behind.
    #[serde(default)]
    pub retain: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: "1Gi".into(),
            storage_class_name: None,
            retain: false,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RaftTiming {
    pub heartbeat: String,
    pub election_timeout_min: String,
    pub election_timeout_max: String,
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat: "50ms".into(),
            election_timeout_min: "250ms".into(),
            election_timeout_max: "350ms".into(),
            snapshot_every: 20_000,
        }
    }
}

/// TLS for the gRPC port from a Secret with `tls.crt`, `tls.key`, `ca.crt`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    pub secret_name: String,
    /// Require client certificates (mutual TLS) from nodes, the operator and clients.
    #[serde(default = "yes")]
    pub client_auth: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AntiAffinity {
    Required,
    #[default]
    Preferred,
    None,
}

fn default_name() -> String {
    "raftcron".into()
}
fn default_replicas() -> i32 {
    3
}
fn yes() -> bool {
    true
}
fn default_grpc_port() -> i32 {
    7001
}
fn default_http_port() -> i32 {
    8001
}
fn default_status_qps() -> u32 {
    20
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

/// An OCI content digest as registries use them: `sha256:` or `sha512:` and lowercase hex.
fn is_digest(d: &str) -> bool {
    let hex =
        |h: &str, len| h.len() == len && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match d.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

impl ClusterConfig {
    /// Parses and checks a config file's text; errors name the key.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: ClusterConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: format!("{}: {}", e.path(), e.inner()),
            })?;
        let invalid = |field, message: String| ConfigError::Invalid {
            path: path.into(),
            field,
            message,
        };
        if !(1..=9).contains(&cfg.replicas) {
            return Err(invalid(
                "replicas",
                format!("{} is out of range 1..=9", cfg.replicas),
            ));
        }
        if cfg.replicas % 2 == 0 {
            return Err(invalid(
                "replicas",
                format!(
                    "{} gives no extra fault tolerance over {}; use an odd number",
                    cfg.replicas,
                    cfg.replicas - 1
                ),
            ));
        }
        if cfg.image.is_empty() {
            return Err(invalid("image", "must not be empty".into()));
        }
        if let Some((_, digest)) = cfg.image.split_once('@')
            && !is_digest(digest)
        {
            return Err(invalid(
                "image",
                format!(
                    "{:?}: after '@' comes a digest, sha256:<64 hex digits> or sha512:<128>",
                    cfg.image
                ),
            ));
        }
        if cfg.image_pull_secrets.iter().any(|s| s.name.is_empty()) {
            return Err(invalid(
                "imagePullSecrets",
                "every entry needs a name".into(),
            ));
        }
        if cfg.name.is_empty()
            || cfg.name.len() > 40
            || !cfg
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be 1-40 lowercase letters, digits or '-'",
                    cfg.name
                ),
            ));
        }
        for (field, d) in [
            ("raft.heartbeat", &cfg.raft.heartbeat),
            ("raft.electionTimeoutMin", &cfg.raft.election_timeout_min),
            ("raft.electionTimeoutMax", &cfg.raft.election_timeout_max),
        ] {
            humantime::parse_duration(d).map_err(|e| invalid(field, format!("{d:?}: {e}")))?;
        }
        let port = cfg.sidecar.default_app_port;
        if port == 0 || port == raftcron_node::sidecar::LISTEN_PORT {
            return Err(invalid(
                "sidecar.defaultAppPort",
                format!(
                    "{port}: must be a port, 1-65535, other than the sidecar's own {}",
                    raftcron_node::sidecar::LISTEN_PORT
                ),
            ));
        }
        Ok(cfg)
    }

    /// `host:port` of the client Service (every ready node's gRPC port):
    /// where an injected sidecar first connects; it follows the leader from there.
    pub fn client_service_addr(&self, namespace: &str) -> String {
        format!("{}.{namespace}.svc:{}", self.node_name(), self.grpc_port)
    }

    pub fn node_name(&self) -> String {
        format!("{}-node", self.name)
    }

    pub fn headless_name(&self) -> String {
        format!("{}-node-headless", self.name)
    }

    /// gRPC address of node `id` (ordinal id-1) inside the cluster.
    pub fn node_addr(&self, namespace: &str, id: i32) -> String {
        format!(
            "{}-{}.{}.{namespace}.svc:{}",
            self.node_name(),
            id - 1,
            self.headless_name(),
            self.grpc_port
        )
    }

    /// Every node's gRPC address, for the operator's client.
    pub fn endpoints(&self, namespace: &str) -> Vec<String> {
        (1..=self.replicas)
            .map(|id| self.node_addr(namespace, id))
            .collect()
    }
}
