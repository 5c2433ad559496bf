//! Leader only: a Warning Event on each new pod labelled for injection that
//! did not get the sidecar.
//!
//! ```text
//!  Pod watch (label raftcron.dev/inject=true, every namespace)
//!    └─► skip_note(pod) ─► Event InjectionSkipped on the pod (with its uid)
//! ```
//!
//! At admission the pod has no uid (and often no name), so the webhook can
//! only annotate it (`raftcron.dev/inject-status: skipped: <reason>`); the
//! Event that `kubectl describe pod` shows comes from here, once the pod
//! exists. This also catches what the webhook cannot see: a labelled pod
//! that was admitted without it being called (down, timed out, or not yet
//! trusted by the API server, and failurePolicy Ignore let the pod in).
//! The Event's name is derived from the pod's uid, so a new leader that sees
//! the pod again is refused the create (409) and nothing is reported twice.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Resource};
use raftcron_crds::names::{FIELD_MANAGER_OPERATOR, annotation, label};

use super::inject::{CONTAINER, SKIPPED_PREFIX};

/// Event reason on a pod that did not get the sidecar.
pub const REASON: &str = "InjectionSkipped";
/// Only pods younger than this are reported: an old pod's missing sidecar
/// is old news (and its Event may have expired).
pub const RECENT_SECONDS: i64 = 600;

/// The Event note for a pod that should have had the sidecar and has not,
/// or `None`.
pub fn skip_note(pod: &Pod, excluded_namespaces: &[String], now: i64) -> Option<String> {
    let namespace = pod.metadata.namespace.as_deref()?;
    if excluded_namespaces.iter().any(|n| n == namespace)
        || pod.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(label::INJECT).map(String::as_str) != Some("true") {
        return None;
    }
    let created = pod.metadata.creation_timestamp.as_ref()?.0.as_second();
    if now - created > RECENT_SECONDS {
        return None;
    }
    let status = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::INJECT_STATUS));
    let has_sidecar = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == CONTAINER));
    match status {
        Some(s) => s
            .strip_prefix(SKIPPED_PREFIX)
            .map(|reason| format!("sidecar not injected: {reason}")),
        None if has_sidecar => None,
        None => Some(
            "sidecar not injected: the webhook did not see this pod (it was down, timed out, or its \
             certificate was not yet trusted, and failurePolicy Ignore admitted the pod); delete the \
             pod once the webhook serves"
                .to_string(),
        ),
    }
}

/// The Warning Event for a pod, named after its uid: one per pod, whoever
/// writes it first.
pub fn event(
    pod: &Pod,
    note: String,
    identity: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Event> {
    let uid = pod.metadata.uid.as_deref()?;
    let name = pod.metadata.name.as_deref()?;
    // A DNS subdomain of at most 253 characters; the uid part keeps it unique.
    let prefix: String = name
        .chars()
        .take(253 - ".injection-".len() - uid.len())
        .collect();
    Some(Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.injection-{uid}")),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some(REASON.into()),
        action: Some("Inject".into()),
        note: Some(note),
        regarding: Some(pod.object_ref(&())),
        reporting_controller: Some(FIELD_MANAGER_OPERATOR.into()),
        reporting_instance: Some(identity.to_string()),
        ..Default::default()
    })
}

/// Watches labelled pods and reports each skipped one once, forever.
pub async fn run(client: kube::Client, excluded_namespaces: Vec<String>, identity: String) {
    let api: Api<Pod> = Api::all(client.clone());
    let selector = format!("{}=true", label::INJECT);
    let mut pods = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    // uid → creation time, of the pods reported.
    let mut reported: HashMap<String, i64> = HashMap::new();
    while let Some(next) = pods.next().await {
        let pod = match next {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods labelled for injection");
                continue;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if reported.contains_key(&uid) {
            continue;
        }
        let Some(note) = skip_note(&pod, &excluded_namespaces, now) else {
            continue;
        };
        let Some(ev) = event(&pod, note, &identity, k8s_openapi::jiff::Timestamp::now()) else {
            continue;
        };
        let events: Api<Event> = Api::namespaced(
            client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match events.create(&PostParams::default(), &ev).await {
            Ok(_) => {}
            // Written already, by this replica or an earlier leader.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(error = %e, pod = ?pod.metadata.name, "could not publish the InjectionSkipped event");
                continue;
            }
        }
        // Only pods of the last RECENT_SECONDS can be reported: older ones can go.
        if reported.len() >= 1_000 {
            reported.retain(|_, created| now - *created <= RECENT_SECONDS);
        }
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0.as_second());
        reported.insert(uid, created);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn note(yaml: &str) -> Option<String> {
        skip_note(
            &pod(yaml),
            &["kube-system".into(), "raftcron-system".into()],
            NOW,
        )
    }

    // 2027-01-15T08:00:00Z is NOW; a minute before.
    const META: &str = "namespace: shop, uid: u1, creationTimestamp: \"2027-01-15T07:59:00Z\"";

    #[test]
    fn a_pod_the_webhook_skipped_is_reported_with_the_webhooks_reason() {
        let n = note(&format!(
            "metadata: {{{META}, labels: {{raftcron.dev/inject: \"true\"}}, annotations: {{raftcron.dev/inject-status: \"skipped: no app name: set the annotation raftcron.dev/app\"}}}}\n"
        ));
        assert_eq!(
            n.as_deref(),
            Some("sidecar not injected: no app name: set the annotation raftcron.dev/app")
        );
    }

    #[test]
    fn a_labelled_pod_the_webhook_never_saw_is_reported() {
        let n = note(&format!(
            "metadata: {{{META}, labels: {{raftcron.dev/inject: \"true\"}}}}\nspec: {{containers: [{{name: web}}]}}\n"
        ));
        assert!(n.unwrap().contains("the webhook did not see this pod"));
    }

    #[test]
    fn the_event_is_named_after_the_pod_uid_and_regards_the_pod() {
        let p = pod(&format!("metadata: {{name: web-7d9f-x2k4q, {META}}}\n"));
        let at: k8s_openapi::jiff::Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        let e = event(&p, "sidecar not injected: x".into(), "op-1", at).unwrap();
        assert_eq!(
            e.metadata.name.as_deref(),
            Some("web-7d9f-x2k4q.injection-u1")
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        let r = e.regarding.unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("web-7d9f-x2k4q"), Some("u1"))
        );
        assert_eq!(
            (e.type_.as_deref(), e.reason.as_deref()),
            (Some("Warning"), Some(REASON))
        );
        let long = pod(&format!(
            "metadata: {{name: {}, {META}}}\n",
            "a".repeat(253)
        ));
        let name = event(&long, String::new(), "op-1", at)
            .unwrap()
            .metadata
            .name
            .unwrap();
        assert!(
            name.len() <= 253 && name.ends_with(".injection-u1"),
            "{name}"
        );
    }

    #[test]
    fn injected_old_deleted_unlabelled_and_excluded_pods_are_not_reported() {
        let labels = "labels: {raftcron.dev/inject: \"true\"}";
        for yaml in [
            format!(
                "metadata: {{{META}, {labels}, annotations: {{raftcron.dev/inject-status: injected}}}}\n"
            ),
            format!(
                "metadata: {{{META}, {labels}}}\nspec: {{initContainers: [{{name: raftcron-sidecar}}], containers: [{{name: web}}]}}\n"
            ),
            format!(
                "metadata: {{namespace: shop, creationTimestamp: \"2027-01-15T07:40:00Z\", {labels}}}\n"
            ),
            format!(
                "metadata: {{{META}, deletionTimestamp: \"2027-01-15T08:00:00Z\", {labels}}}\n"
            ),
            format!("metadata: {{{META}}}\n"),
            format!(
                "metadata: {{namespace: kube-system, creationTimestamp: \"2027-01-15T07:59:00Z\", {labels}}}\n"
            ),
        ] {
            assert_eq!(note(&yaml), None, "{yaml}");
        }
    }
}
