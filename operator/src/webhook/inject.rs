//! Pure: what the injection webhook does to one pod. No client, no clock.
//!
//! ```text
//!  AdmissionReview (bytes) ──review()──► plan(pod) ──► Leave         allowed, untouched
//!                                                  ├─► Inject        allowed + patch: sidecar, token volume,
//!                                                  │                 inject-status "injected"
//!                                                  └─► Skip(reason)  allowed + patch: inject-status
//!                                                                    "skipped: <reason>", a warning
//! ```
//!
//! The webhook never refuses a pod: whatever goes wrong, the pod is admitted
//! without the sidecar and says why in its `raftcron.dev/inject-status`
//! annotation (the operator's reporter turns that into a Warning Event on the
//! pod once it exists: at admission it has no uid, often no name).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use raftcron_crds::names::{self, annotation, label};
use serde_json::{Value, json};

use crate::config::ClusterConfig;

/// Name of the injected init container (a native sidecar).
pub const CONTAINER: &str = "raftcron-sidecar";
/// The projected ServiceAccount token volume the sidecar attaches with.
pub const TOKEN_VOLUME: &str = "raftcron-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/raftcron";
/// A token is valid this long; the kubelet renews it at 80 %.
pub const TOKEN_SECONDS: i64 = 3600;
/// The sidecar's local API port (defined with the sidecar).
pub use raftcron_node::sidecar::LISTEN_PORT;
/// Native sidecars (init containers with `restartPolicy: Always`) are on by
/// default from Kubernetes 1.29; before, the field is dropped and the pod
/// would hang in Init behind a container that never exits.
pub const MIN_KUBERNETES: (u32, u32) = (1, 29);
/// `inject-status` of an injected pod.
pub const INJECTED: &str = "injected";
/// Prefix of `inject-status` when the sidecar was not added.
pub const SKIPPED_PREFIX: &str = "skipped: ";
/// The namespace the webhook never touches, besides the operator's own.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The non-root user the sidecar runs as (the node image's user).
const SIDECAR_UID: i64 = 65532;

/// Everything the webhook needs to know, fixed at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The node image, as the StatefulSet gets it.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// `RAFTCRON_CLUSTER`: the node cluster's client Service, `host:port`.
    pub cluster: String,
    pub resources: ResourceRequirements,
    pub default_app_port: u16,
    /// kube-system and the operator's namespace: never touched.
    pub excluded_namespaces: Vec<String>,
    /// Set when no pod can get a working sidecar (an API server before
    /// 1.29, or a node cluster the sidecar cannot reach): every labelled pod
    /// is skipped with this reason.
    pub unavailable: Option<String>,
}

impl Settings {
    pub fn new(cfg: &ClusterConfig, namespace: &str) -> Self {
        // With TLS on the gRPC port, a sidecar needs the cluster CA (and with
        // client auth a certificate), which live in Secrets of the node
        // namespace that an app pod cannot mount.
        let unavailable = cfg.tls.as_ref().map(|_| {
            "the node cluster serves gRPC with TLS, and injected sidecars get no TLS material yet".to_string()
        });
        Self {
            image: cfg.image.clone(),
            image_pull_policy: cfg.image_pull_policy.clone(),
            cluster: cfg.client_service_addr(namespace),
            resources: cfg.sidecar.resources.clone(),
            default_app_port: cfg.sidecar.default_app_port,
            excluded_namespaces: vec![KUBE_SYSTEM.to_string(), namespace.to_string()],
            unavailable,
        }
    }

    /// Records the API server's version (`major`, `minor` as `/version`
    /// gives them, e.g. "1", "36+"): below 1.29 every pod is skipped.
    pub fn with_server_version(mut self, major: &str, minor: &str) -> Self {
        let num = |s: &str| {
            s.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        };
        match (num(major), num(minor)) {
            (Some(ma), Some(mi)) if (ma, mi) >= MIN_KUBERNETES => {}
            (Some(ma), Some(mi)) => {
                self.unavailable = Some(format!(
                    "the API server is Kubernetes {ma}.{mi}; native sidecars need {}.{} or later",
                    MIN_KUBERNETES.0, MIN_KUBERNETES.1
                ));
            }
            _ => {
                self.unavailable = Some(format!(
                    "the API server's version ({major:?}.{minor:?}) cannot be read, so native sidecars are not known to work"
                ));
            }
        }
        self
    }
}

/// What to do with one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not a pod for the webhook (or already injected): no patch, nothing said.
    Leave(&'static str),
    Inject {
        app: String,
        patch: Patch,
    },
    Skip {
        reason: String,
        patch: Patch,
    },
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// Adds (or overwrites) one annotation, creating the map when the pod has none.
fn annotate(pod: &Pod, key: &str, value: &str) -> PatchOperation {
    match &pod.metadata.annotations {
        None => add(&["metadata", "annotations"], json!({ key: value })),
        Some(_) => add(&["metadata", "annotations", key], json!(value)),
    }
}

fn skip(pod: &Pod, reason: String) -> Plan {
    let status = format!("{SKIPPED_PREFIX}{reason}");
    Plan::Skip {
        patch: Patch(vec![annotate(pod, annotation::INJECT_STATUS, &status)]),
        reason,
    }
}

/// A label value: what the app name is matched against in `app` actions.
fn valid_app_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&s.len())
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The decision for a pod created in `namespace`.
pub fn plan(settings: &Settings, operation: &Operation, namespace: &str, pod: &Pod) -> Plan {
    if !matches!(operation, Operation::Create) {
        return Plan::Leave("not a create");
    }
    if settings.excluded_namespaces.iter().any(|n| n == namespace) {
        return Plan::Leave("excluded namespace");
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels.get(label::INJECT).map(String::as_str) != Some("true") {
        return Plan::Leave("not labelled for injection");
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    if init.iter().any(|c| c.name == CONTAINER) {
        return Plan::Leave("already injected");
    }
    if let Some(reason) = &settings.unavailable {
        return skip(pod, reason.clone());
    }
    if spec.containers.iter().any(|c| c.name == CONTAINER) {
        return skip(
            pod,
            format!("the pod already has a container named {CONTAINER}"),
        );
    }
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == TOKEN_VOLUME)
    {
        return skip(
            pod,
            format!("the pod already has a volume named {TOKEN_VOLUME}"),
        );
    }
    if spec.host_network == Some(true) {
        return skip(
            pod,
            format!(
                "hostNetwork pods share the node's loopback, where the sidecar's port {LISTEN_PORT} would collide"
            ),
        );
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let app = match (annotations.get(annotation::APP), labels.get(label::NAME)) {
        (Some(a), _) => a.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => {
            return skip(
                pod,
                format!(
                    "no app name: set the annotation {} or the label {}",
                    annotation::APP,
                    label::NAME
                ),
            );
        }
    };
    if !valid_app_name(&app) {
        return skip(
            pod,
            format!(
                "app name {app:?} is not a label value (1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends)"
            ),
        );
    }
    let port = match annotations.get(annotation::APP_PORT) {
        None => settings.default_app_port,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) if p != 0 && p != LISTEN_PORT => p,
            Ok(LISTEN_PORT) => {
                return skip(
                    pod,
                    format!("{} {p} is the sidecar's own port", annotation::APP_PORT),
                );
            }
            _ => {
                return skip(
                    pod,
                    format!("{} {p:?} is not a port (1-65535)", annotation::APP_PORT),
                );
            }
        },
    };
    let capacity = match annotations.get(annotation::CAPACITY) {
        None => None,
        Some(c) => match c.trim().parse::<u32>() {
            Ok(c) if c > 0 => Some(c),
            _ => {
                return skip(
                    pod,
                    format!(
                        "{} {c:?} is not a positive whole number",
                        annotation::CAPACITY
                    ),
                );
            }
        },
    };
    let sidecar = sidecar(settings, &app, port, capacity);
    let mut ops = vec![match spec.init_containers {
        // First, so the app's own init containers can use the local API.
        None => add(&["spec", "initContainers"], json!([sidecar])),
        Some(_) => add(&["spec", "initContainers", "0"], sidecar),
    }];
    let volume = token_volume();
    ops.push(match spec.volumes {
        None => add(&["spec", "volumes"], json!([volume])),
        Some(_) => add(&["spec", "volumes", "-"], volume),
    });
    ops.push(annotate(pod, annotation::INJECT_STATUS, INJECTED));
    Plan::Inject {
        app,
        patch: Patch(ops),
    }
}

/// The sidecar container. Every setting is an environment variable
/// (`raftcron-node sidecar` reads each flag as `RAFTCRON_<FLAG>`).
pub fn sidecar(settings: &Settings, app: &str, app_port: u16, capacity: Option<u32>) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut env = vec![
        json!({"name": "RAFTCRON_CLUSTER", "value": settings.cluster}),
        json!({"name": "RAFTCRON_NAMESPACE", "valueFrom": field("metadata.namespace")}),
        // At admission the pod may have no name yet (generateName).
        json!({"name": "RAFTCRON_POD", "valueFrom": field("metadata.name")}),
        json!({"name": "RAFTCRON_APP", "value": app}),
        json!({"name": "RAFTCRON_APP_URL", "value": format!("http://127.0.0.1:{app_port}")}),
        json!({"name": "RAFTCRON_LISTEN", "value": format!("127.0.0.1:{LISTEN_PORT}")}),
        json!({"name": "RAFTCRON_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
        // One JSON object per line, as the nodes log in the cluster.
        json!({"name": "RAFTCRON_LOG_FORMAT", "value": "json"}),
    ];
    if let Some(c) = capacity {
        env.push(json!({"name": "RAFTCRON_CAPACITY", "value": c.to_string()}));
    }
    let mut c = json!({
        "name": CONTAINER,
        "image": settings.image,
        "args": ["sidecar"],
        // A native sidecar: runs beside the app for the pod's whole life.
        "restartPolicy": "Always",
        "env": env,
        "resources": settings.resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if let Some(p) = &settings.image_pull_policy {
        c["imagePullPolicy"] = json!(p);
    }
    c
}

/// A ServiceAccount token for the raftcron audience only: the leader checks
/// it with a TokenReview, and it is useless against the API server itself.
fn token_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": names::SIDECAR_TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_SECONDS,
            "path": "token",
        }}]},
    })
}

/// One admission call, from the request body to the response body. A body
/// that is no AdmissionReview of a pod gets an error response (the API
/// server then applies the failurePolicy); everything else is allowed.
pub fn review(settings: &Settings, body: &[u8]) -> (Outcome, AdmissionReview<DynamicObject>) {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Invalid,
                AdmissionResponse::invalid(format!("not an AdmissionReview of a Pod: {e}"))
                    .into_review(),
            );
        }
    };
    let req: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Invalid,
                AdmissionResponse::invalid(e.to_string()).into_review(),
            );
        }
    };
    let allowed = AdmissionResponse::from(&req);
    let Some(pod) = &req.object else {
        return (Outcome::Left, allowed.into_review());
    };
    let namespace = req
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    let (outcome, patch, warning) = match plan(settings, &req.operation, namespace, pod) {
        Plan::Leave(_) => return (Outcome::Left, allowed.into_review()),
        Plan::Inject { patch, .. } => (Outcome::Injected, patch, None),
        Plan::Skip { reason, patch } => (
            Outcome::Skipped(reason.clone()),
            patch,
            Some(format!("raftcron: sidecar not injected: {reason}")),
        ),
    };
    match allowed.clone().with_patch(patch) {
        Ok(mut res) => {
            res.warnings = warning.map(|w| vec![w]);
            (outcome, res.into_review())
        }
        // A Patch of plain JSON values always serializes; were it not to,
        // the pod is still admitted.
        Err(_) => (Outcome::Left, allowed.into_review()),
    }
}

/// What became of one admission call, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// With the reason.
    Skipped(String),
    Left,
    Invalid,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Left => "untouched",
            Outcome::Invalid => "invalid",
        }
    }
}

#[cfg(test)]
mod tests;
