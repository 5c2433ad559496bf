//! The webhook's certificates in the cluster: the leader keeps the Secret
//! and the webhook configuration's `caBundle` as `certs::plan` says; every
//! replica serves whatever the Secret holds.
//!
//! ```text
//!  leader:  Secret + MutatingWebhookConfiguration watch, renewal timer
//!             └─► plan ─► caBundle = new ∪ live CAs ─► write Secret ─► caBundle = the Secret's
//!  replica: Secret watch ─► SwapCert::set (hot reload, no restart)
//! ```
//!
//! `helm upgrade` may reset the caBundle to the chart's (empty) value: the
//! leader sees that through its watch and patches it back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use raftcron_crds::names;
use serde_json::json;

use super::certs::{self, Lifetimes, Material, Step};
use super::tls::SwapCert;
use crate::metrics::Metrics;

/// Longest sleep between two looks at the certificates.
const RECHECK: Duration = Duration::from_secs(3600);
/// How long the API server's view of a patched caBundle, and the replicas'
/// of a rewritten Secret, take to catch up (both are watches).
const CA_PROPAGATION: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("reading Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("writing Secret {name}: {source}")]
    WriteSecret { name: String, source: kube::Error },
    #[error("patching the caBundle of MutatingWebhookConfiguration {name}: {source}")]
    PatchBundle { name: String, source: kube::Error },
    #[error(transparent)]
    Cert(#[from] certs::CertError),
}

/// What the leader keeps: one Secret and one webhook configuration.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub secret: String,
    pub webhook_configuration: String,
    pub sans: Vec<String>,
    /// Garbage collection with the installation (the config ConfigMap).
    pub owner: Option<OwnerReference>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Leader only: makes, renews and publishes the certificates, forever.
pub async fn keep(client: kube::Client, target: Target) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client);
    // Any change to either object is a reason to look again.
    let secret_events = watcher(secrets.clone(), by_name(&target.secret))
        .default_backoff()
        .touched_objects()
        .map(|_| ())
        .boxed();
    let config_events = watcher(configs.clone(), by_name(&target.webhook_configuration))
        .default_backoff()
        .touched_objects()
        .map(|_| ())
        .boxed();
    let mut events = futures::stream::select(secret_events, config_events);
    let life = Lifetimes::default();
    let mut failures = 0u32;
    loop {
        let wait = match pass(&secrets, &configs, &target, &life).await {
            Ok(next_check) => {
                failures = 0;
                let secs = (next_check - unix_now()).max(1) as u64;
                Duration::from_secs(secs).min(RECHECK)
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "webhook certificates: pass failed");
                crate::controller::backoff(failures)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(()) = events.next() => {}
        }
    }
}

/// One look: plan, write what changed, and make the caBundle match.
/// Returns when to look again (Unix seconds).
async fn pass(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    target: &Target,
    life: &Lifetimes,
) -> Result<i64, RotateError> {
    let existing =
        secrets
            .get_opt(&target.secret)
            .await
            .map_err(|source| RotateError::ReadSecret {
                name: target.secret.clone(),
                source,
            })?;
    let current = Material::from_secret(existing.as_ref().and_then(|s| s.data.as_ref()));
    let decision = certs::plan(unix_now(), &current, &target.sans, life)?;
    let material = match decision.step {
        Step::Keep => current,
        Step::Write { material, why } => {
            tracing::info!(secret = %target.secret, ?why, "webhook certificates: writing new ones");
            let new_bundle = material.ca_bundle != current.ca_bundle;
            if new_bundle {
                // Old and new CAs together first, so that the API server
                // trusts both the leaf replicas serve now and the next one.
                let live = live_bundle(configs, &target.webhook_configuration).await?;
                let both = certs::merge_bundles(unix_now(), &material.ca_bundle, &live);
                ensure_bundle(configs, &target.webhook_configuration, &both).await?;
                tokio::time::sleep(CA_PROPAGATION).await;
            }
            let resource_version = existing.and_then(|s| s.metadata.resource_version);
            write_secret(secrets, target, &material, resource_version).await?;
            if new_bundle {
                // Replicas reload the Secret before CAs leave the bundle.
                tokio::time::sleep(CA_PROPAGATION).await;
            }
            material
        }
    };
    ensure_bundle(configs, &target.webhook_configuration, &material.ca_bundle).await?;
    Ok(decision.next_check)
}

/// Server-side apply; with the resourceVersion read, so that a concurrent
/// writer (a leader that has not yet noticed it lost the Lease) makes this
/// one fail and look again rather than overwrite.
async fn write_secret(
    api: &Api<Secret>,
    target: &Target,
    material: &Material,
    resource_version: Option<String>,
) -> Result<(), RotateError> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(target.secret.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(
                [
                    (names::label::NAME, names::label::APP),
                    (names::label::COMPONENT, names::label::COMPONENT_OPERATOR),
                    (names::label::MANAGED_BY, names::label::MANAGER),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            owner_references: target.owner.clone().map(|o| vec![o]),
            resource_version,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(material.to_secret()),
        ..Default::default()
    };
    api.patch(
        &target.secret,
        &PatchParams::apply(names::FIELD_MANAGER_OPERATOR).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| RotateError::WriteSecret {
        name: target.secret.clone(),
        source,
    })?;
    Ok(())
}

/// The caBundle the API server uses now (the first webhook's).
async fn live_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
) -> Result<String, RotateError> {
    let config = api
        .get_opt(name)
        .await
        .map_err(|source| RotateError::PatchBundle {
            name: name.to_string(),
            source,
        })?;
    Ok(config
        .and_then(|c| c.webhooks)
        .and_then(|w| w.into_iter().next())
        .and_then(|w| w.client_config.ca_bundle)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default())
}

/// Sets every webhook's caBundle to `bundle` where it differs. A missing
/// configuration is not an error: the chart may have it turned off while
/// the Secret still serves.
async fn ensure_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &str,
) -> Result<(), RotateError> {
    let err = |source| RotateError::PatchBundle {
        name: name.to_string(),
        source,
    };
    let Some(config) = api.get_opt(name).await.map_err(err)? else {
        tracing::warn!(
            configuration = name,
            "webhook configuration not found; caBundle not set"
        );
        return Ok(());
    };
    let ops = bundle_patch(&config, bundle);
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(json!(ops)).expect("JSON patch literal");
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(err)?;
    tracing::info!(configuration = name, "webhook configuration caBundle set");
    Ok(())
}

/// JSON patch operations setting each webhook's caBundle, guarded by a test
/// of the webhook's name at that index (the list may change under us).
pub fn bundle_patch(config: &MutatingWebhookConfiguration, bundle: &str) -> Vec<serde_json::Value> {
    let want = ByteString(bundle.as_bytes().to_vec());
    let encoded = serde_json::to_value(&want).expect("ByteString serializes");
    let mut ops = Vec::new();
    for (i, w) in config.webhooks.iter().flatten().enumerate() {
        if w.client_config.ca_bundle.as_ref() != Some(&want) {
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
        }
    }
    ops
}

/// Every replica: serve what the Secret holds, reloading it on change.
pub async fn load(
    client: kube::Client,
    namespace: String,
    secret: String,
    certs: Arc<SwapCert>,
    metrics: Arc<Metrics>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let mut events = watcher(api, by_name(&secret))
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(s) => {
                let m = Material::from_secret(s.data.as_ref());
                match certs.set(m.cert.as_bytes(), m.key.as_bytes()) {
                    Ok(()) => {
                        let expiry = certs::not_after(&m.cert).unwrap_or_default();
                        metrics.webhook_cert_expiry.set(expiry);
                        tracing::info!(secret = %secret, expiry, "webhook serving certificate loaded");
                    }
                    Err(e) => {
                        tracing::warn!(secret = %secret, error = %e, "webhook Secret holds no usable certificate; serving the previous one")
                    }
                }
            }
            Err(e) => tracing::warn!(secret = %secret, error = %e, "watching the webhook Secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> MutatingWebhookConfiguration {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TWO: &str = r#"
metadata: {name: raftcron-sidecar-injector}
webhooks:
  - name: inject.raftcron.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {service: {name: w, namespace: ns}}
  - name: other.raftcron.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    clientConfig: {service: {name: w, namespace: ns}, caBundle: QUJD}
"#;

    #[test]
    fn the_bundle_patch_sets_every_differing_ca_bundle_guarded_by_the_webhook_name() {
        let ops = bundle_patch(&config(TWO), "ABC");
        // "QUJD" is base64 of ABC: the second webhook is already right.
        assert_eq!(
            serde_json::Value::Array(ops),
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "inject.raftcron.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "QUJD"},
            ])
        );
        let mut patched = serde_json::to_value(config(TWO)).unwrap();
        let ops = bundle_patch(&config(TWO), "XYZ");
        let patch: json_patch::Patch = serde_json::from_value(json!(ops)).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        let patched: MutatingWebhookConfiguration = serde_json::from_value(patched).unwrap();
        assert!(
            bundle_patch(&patched, "XYZ").is_empty(),
            "nothing left to do"
        );
    }
}
