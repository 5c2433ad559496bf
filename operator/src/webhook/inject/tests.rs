//! `plan` and `review` on inline YAML pods: the patch is applied to the pod
//! and the result read back as a Pod, as the API server would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::admission::Operation;

use super::*;

const CONFIG: &str = "image: ghcr.io/raftcron/raftcron-node:0.1.0\nimagePullPolicy: IfNotPresent\n";

fn settings() -> Settings {
    let cfg = ClusterConfig::parse(CONFIG, "test.yaml").unwrap();
    Settings::new(&cfg, "raftcron-system").with_server_version("1", "36+")
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

/// A Deployment's pod as the ReplicaSet controller creates it: no name yet.
const WEB: &str = r#"
metadata:
  generateName: web-7d9f-
  labels: {app.kubernetes.io/name: web, raftcron.dev/inject: "true"}
spec:
  containers:
    - name: web
      image: localhost/busybox:latest
"#;

fn apply(pod: &Pod, patch: &Patch) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, patch).expect("the patch applies to the pod");
    serde_json::from_value(doc).expect("the patched pod is a Pod")
}

fn injected(settings: &Settings, namespace: &str, p: &Pod) -> Pod {
    match plan(settings, &Operation::Create, namespace, p) {
        Plan::Inject { patch, .. } => apply(p, &patch),
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn skipped(settings: &Settings, namespace: &str, p: &Pod) -> (String, Pod) {
    match plan(settings, &Operation::Create, namespace, p) {
        Plan::Skip { reason, patch } => (reason, apply(p, &patch)),
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn sidecar_of(p: &Pod) -> Container {
    let init = p.spec.as_ref().unwrap().init_containers.clone().unwrap();
    init.into_iter()
        .find(|c| c.name == CONTAINER)
        .expect("the sidecar")
}

fn env(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => format!("fieldRef:{}", f.field_ref.as_ref().unwrap().field_path),
                _ => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

fn status(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::INJECT_STATUS).cloned())
}

#[test]
fn a_labelled_pod_gets_a_native_sidecar_with_the_documented_environment() {
    let out = injected(&settings(), "shop", &pod(WEB));
    let c = sidecar_of(&out);
    assert_eq!(
        c.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/raftcron/raftcron-node:0.1.0"),
        "the node image"
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.args, Some(vec!["sidecar".to_string()]));
    assert_eq!(
        env(&c),
        BTreeMap::from(
            [
                ("RAFTCRON_CLUSTER", "raftcron-node.raftcron-system.svc:7001"),
                ("RAFTCRON_NAMESPACE", "fieldRef:metadata.namespace"),
                ("RAFTCRON_POD", "fieldRef:metadata.name"),
                ("RAFTCRON_APP", "web"),
                ("RAFTCRON_APP_URL", "http://127.0.0.1:8080"),
                ("RAFTCRON_LISTEN", "127.0.0.1:7090"),
                ("RAFTCRON_TOKEN_FILE", "/var/run/secrets/raftcron/token"),
                ("RAFTCRON_LOG_FORMAT", "json"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        )
    );
    let sc = c.security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let res = c.resources.unwrap();
    assert_eq!(res.requests.unwrap()["memory"].0, "32Mi");
    assert_eq!(res.limits.unwrap()["memory"].0, "64Mi");
    assert!(
        c.startup_probe.is_none() && c.readiness_probe.is_none(),
        "no probe: the sidecar listens on loopback only"
    );
    let mount = &c.volume_mounts.unwrap()[0];
    assert_eq!(
        (
            mount.name.as_str(),
            mount.mount_path.as_str(),
            mount.read_only
        ),
        (TOKEN_VOLUME, TOKEN_DIR, Some(true))
    );
    let vols = out.spec.as_ref().unwrap().volumes.clone().unwrap();
    let token = vols[0]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(token.audience.as_deref(), Some("raftcron"));
    assert_eq!(token.expiration_seconds, Some(3600));
    assert_eq!(token.path, "token");
    assert_eq!(status(&out).as_deref(), Some("injected"));
    assert_eq!(
        out.spec.unwrap().containers.len(),
        1,
        "the app's containers are untouched"
    );
}

#[test]
fn the_sidecar_goes_first_among_init_containers_and_its_volume_after_the_pods() {
    let p = pod(r#"
metadata:
  name: web-0
  labels: {raftcron.dev/inject: "true"}
  annotations: {raftcron.dev/app: billing, raftcron.dev/app-port: "9000", raftcron.dev/capacity: "4", team: a}
spec:
  initContainers: [{name: migrate, image: localhost/busybox:latest}]
  containers: [{name: web, image: localhost/busybox:latest}]
  volumes: [{name: data, emptyDir: {}}]
"#);
    let out = injected(&settings(), "shop", &p);
    let spec = out.spec.clone().unwrap();
    let init: Vec<_> = spec
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        init,
        [CONTAINER, "migrate"],
        "the app's init containers can use the local API"
    );
    let vols: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(vols, ["data", TOKEN_VOLUME]);
    let e = env(&sidecar_of(&out));
    assert_eq!(
        e["RAFTCRON_APP"], "billing",
        "the annotation wins over the label"
    );
    assert_eq!(e["RAFTCRON_APP_URL"], "http://127.0.0.1:9000");
    assert_eq!(e["RAFTCRON_CAPACITY"], "4");
    let a = out.metadata.annotations.unwrap();
    assert_eq!(a["team"], "a", "other annotations are kept");
    assert_eq!(a[annotation::INJECT_STATUS], "injected");
}

#[test]
fn a_labelled_pod_without_an_app_name_is_admitted_without_the_sidecar_saying_why() {
    let p = pod(r#"
metadata:
  generateName: nameless-
  labels: {raftcron.dev/inject: "true"}
spec:
  containers: [{name: web, image: localhost/busybox:latest}]
"#);
    let (reason, out) = skipped(&settings(), "shop", &p);
    assert!(
        reason.contains("raftcron.dev/app") && reason.contains("app.kubernetes.io/name"),
        "{reason}"
    );
    assert_eq!(status(&out), Some(format!("skipped: {reason}")));
    assert!(out.spec.unwrap().init_containers.is_none(), "no sidecar");
}

#[test]
fn bad_annotations_are_skips_that_name_the_annotation() {
    for (annotations, wanted) in [
        (
            r#"{raftcron.dev/app-port: "http"}"#,
            "raftcron.dev/app-port \"http\" is not a port",
        ),
        (r#"{raftcron.dev/app-port: "70000"}"#, "is not a port"),
        (
            r#"{raftcron.dev/app-port: "7090"}"#,
            "the sidecar's own port",
        ),
        (
            r#"{raftcron.dev/capacity: "0"}"#,
            "raftcron.dev/capacity \"0\" is not a positive whole number",
        ),
        (r#"{raftcron.dev/app: "-web"}"#, "is not a label value"),
        (r#"{raftcron.dev/app: ""}"#, "is not a label value"),
    ] {
        let p = pod(&format!(
            "metadata: {{labels: {{app.kubernetes.io/name: web, raftcron.dev/inject: \"true\"}}, annotations: {annotations}}}\nspec: {{containers: [{{name: web}}]}}\n"
        ));
        let (reason, _) = skipped(&settings(), "shop", &p);
        assert!(reason.contains(wanted), "{annotations}: {reason}");
    }
}

#[test]
fn kube_system_the_operators_namespace_and_unlabelled_pods_are_never_touched() {
    let s = settings();
    for ns in ["kube-system", "raftcron-system"] {
        assert_eq!(
            plan(&s, &Operation::Create, ns, &pod(WEB)),
            Plan::Leave("excluded namespace"),
            "{ns}"
        );
    }
    let unlabelled = pod(
        "metadata: {labels: {app.kubernetes.io/name: web}}\nspec: {containers: [{name: web}]}\n",
    );
    assert_eq!(
        plan(&s, &Operation::Create, "shop", &unlabelled),
        Plan::Leave("not labelled for injection")
    );
    let off = pod(
        "metadata: {labels: {app.kubernetes.io/name: web, raftcron.dev/inject: \"false\"}}\nspec: {containers: [{name: web}]}\n",
    );
    assert_eq!(
        plan(&s, &Operation::Create, "shop", &off),
        Plan::Leave("not labelled for injection")
    );
    assert_eq!(
        plan(&s, &Operation::Update, "shop", &pod(WEB)),
        Plan::Leave("not a create")
    );
}

#[test]
fn injecting_twice_changes_nothing_the_second_time() {
    let s = settings();
    let once = injected(&s, "shop", &pod(WEB));
    assert_eq!(
        plan(&s, &Operation::Create, "shop", &once),
        Plan::Leave("already injected")
    );
}

#[test]
fn names_the_sidecar_needs_that_are_taken_and_host_network_are_skips() {
    let s = settings();
    let taken_container = pod(&format!(
        "metadata: {{labels: {{app.kubernetes.io/name: web, raftcron.dev/inject: \"true\"}}}}\nspec: {{containers: [{{name: {CONTAINER}}}]}}\n"
    ));
    assert!(
        skipped(&s, "shop", &taken_container)
            .0
            .contains("already has a container named")
    );
    let taken_volume = pod(&format!(
        "metadata: {{labels: {{app.kubernetes.io/name: web, raftcron.dev/inject: \"true\"}}}}\nspec: {{containers: [{{name: web}}], volumes: [{{name: {TOKEN_VOLUME}, emptyDir: {{}}}}]}}\n"
    ));
    assert!(
        skipped(&s, "shop", &taken_volume)
            .0
            .contains("already has a volume named")
    );
    let host = pod(
        "metadata: {labels: {app.kubernetes.io/name: web, raftcron.dev/inject: \"true\"}}\nspec: {hostNetwork: true, containers: [{name: web}]}\n",
    );
    assert!(skipped(&s, "shop", &host).0.contains("hostNetwork"));
}

#[test]
fn an_api_server_before_1_29_gets_every_pod_skipped_with_that_reason() {
    let cfg = ClusterConfig::parse(CONFIG, "test.yaml").unwrap();
    let old = Settings::new(&cfg, "raftcron-system").with_server_version("1", "28");
    let (reason, out) = skipped(&old, "shop", &pod(WEB));
    assert!(
        reason.contains("Kubernetes 1.28; native sidecars need 1.29 or later"),
        "{reason}"
    );
    assert!(out.spec.unwrap().init_containers.is_none());
    for (major, minor) in [("1", "29"), ("1", "36+"), ("2", "0")] {
        let s = Settings::new(&cfg, "ns").with_server_version(major, minor);
        assert_eq!(s.unavailable, None, "{major}.{minor}");
    }
    let unknown = Settings::new(&cfg, "ns").with_server_version("", "");
    assert!(unknown.unavailable.unwrap().contains("cannot be read"));
}

#[test]
fn a_node_cluster_with_tls_gets_every_pod_skipped_until_sidecars_get_tls_material() {
    let cfg = ClusterConfig::parse(
        &format!("{CONFIG}tls: {{secretName: node-tls}}\n"),
        "t.yaml",
    )
    .unwrap();
    let s = Settings::new(&cfg, "raftcron-system").with_server_version("1", "36");
    assert!(skipped(&s, "shop", &pod(WEB)).0.contains("TLS"));
}

#[test]
fn configured_resources_and_the_cluster_address_follow_the_config() {
    let cfg = ClusterConfig::parse(
        &format!("{CONFIG}name: rc\ngrpcPort: 7443\nsidecar: {{defaultAppPort: 3000, resources: {{requests: {{cpu: 5m}}}}}}\n"),
        "t.yaml",
    )
    .unwrap();
    let s = Settings::new(&cfg, "ops").with_server_version("1", "36");
    let c = sidecar_of(&injected(&s, "shop", &pod(WEB)));
    let e = env(&c);
    assert_eq!(e["RAFTCRON_CLUSTER"], "rc-node.ops.svc:7443");
    assert_eq!(e["RAFTCRON_APP_URL"], "http://127.0.0.1:3000");
    let res = c.resources.unwrap();
    assert_eq!(res.requests.unwrap()["cpu"].0, "5m");
    assert_eq!(
        res.limits, None,
        "the configured resources replace the defaults"
    );
}

fn review_body(namespace: &str, pod_yaml: &str) -> Vec<u8> {
    let object: serde_json::Value = serde_yaml::from_str(pod_yaml).unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    }))
    .unwrap()
}

/// The response as the API server reads it: uid, allowed, the patch.
fn response(
    review: &AdmissionReview<DynamicObject>,
) -> (String, bool, Option<Patch>, Option<Vec<String>>) {
    let v = serde_json::to_value(review).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    let patch = r.get("patch").map(|p| {
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes: Vec<u8> = serde_json::from_value(p.clone()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    });
    let warnings = r
        .get("warnings")
        .map(|w| serde_json::from_value(w.clone()).unwrap());
    (
        r["uid"].as_str().unwrap().to_string(),
        r["allowed"].as_bool().unwrap(),
        patch,
        warnings,
    )
}

#[test]
fn the_review_allows_the_pod_with_the_request_uid_and_a_json_patch() {
    let (outcome, review) = review(&settings(), &review_body("shop", WEB));
    assert_eq!(outcome, Outcome::Injected);
    let (uid, allowed, patch, warnings) = response(&review);
    assert_eq!(uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(allowed);
    assert_eq!(warnings, None);
    let out = apply(&pod(WEB), &patch.unwrap());
    assert_eq!(sidecar_of(&out).name, CONTAINER);
}

#[test]
fn a_skip_is_allowed_with_the_status_annotation_and_a_warning() {
    let nameless =
        "metadata: {labels: {raftcron.dev/inject: \"true\"}}\nspec: {containers: [{name: web}]}\n";
    let (outcome, review) = review(&settings(), &review_body("shop", nameless));
    assert!(matches!(outcome, Outcome::Skipped(_)));
    let (_, allowed, patch, warnings) = response(&review);
    assert!(allowed, "never denied");
    let out = apply(&pod(nameless), &patch.unwrap());
    assert!(status(&out).unwrap().starts_with("skipped: no app name"));
    assert!(warnings.unwrap()[0].starts_with("raftcron: sidecar not injected: no app name"));
}

#[test]
fn excluded_namespaces_get_an_allowed_response_without_a_patch() {
    let (outcome, review) = review(&settings(), &review_body("kube-system", WEB));
    assert_eq!(outcome, Outcome::Left);
    let (_, allowed, patch, _) = response(&review);
    assert!(allowed);
    assert!(patch.is_none());
}

#[test]
fn a_body_that_is_no_admission_review_gets_an_error_response() {
    let (outcome, review) = review(&settings(), b"{\"hello\": 1}");
    assert_eq!(outcome, Outcome::Invalid);
    let v = serde_json::to_value(&review).unwrap();
    assert_eq!(v["response"]["allowed"], false);
}
