#!/usr/bin/env bash
# Checks the Helm chart without a cluster (CI runs it from scripts/test.sh):
#   helm lint (plain and --strict) with the defaults and with every option on
#   (charts/raftcron/ci/all-on-values.yaml); every rendered object validated
#   offline against the Kubernetes OpenAPI schemas (kubernetes-validate,
#   strict: unknown fields fail); the rendered cluster config parsed by the
#   operator itself; bad values refused with the key named; metric names in
#   the alerts and the dashboard exist in the code; deploy/manifests current.
# Needs only python3 and PyPI. Tools live in target/tools (reused when warm).
#
#   scripts/chart-check.sh
#   RAFTCRON_E2E_KUBECONFIG=… scripts/chart-check.sh   # also scripts/chart-e2e.sh on that cluster
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { printf '  %s\n' "$*"; }
die() { printf 'chart-check: FAILED: %s\n' "$*" >&2; exit 1; }

CHART=charts/raftcron
ALL_ON=$CHART/ci/all-on-values.yaml
OUT=target/chart-check
K8S_VERSION=1.36.0   # the schema set kubernetes-validate checks against
mkdir -p "$OUT"

# --- tools -------------------------------------------------------------------
BIN=$(scripts/install-helm.sh | tail -1)
HELM=$BIN/helm
VENV=target/tools/venv
# Pinned with every dependency, so a new release on PyPI changes nothing here.
REQS="kubernetes-validate==1.37.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
PyYAML==6.0.3 referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 packaging==26.3
importlib_resources==7.1.0 typing_extensions==4.16.0"
if [[ ! -f $VENV/.reqs || $(cat "$VENV/.reqs") != "$REQS" ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps $REQS
  echo "$REQS" >"$VENV/.reqs"
fi
PY=$VENV/bin/python
echo "tools: $("$HELM" version --short), kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v;print(v.__version__)') (schemas $K8S_VERSION)"

# --- lint ----------------------------------------------------------------------
echo "lint"
for values in "" "$ALL_ON"; do
  for strict in "" --strict; do
    "$HELM" lint $strict $CHART ${values:+-f "$values"} >"$OUT/lint.log" 2>&1 \
      || { cat "$OUT/lint.log"; die "helm lint $strict ${values:-(defaults)}"; }
    say "helm lint $strict ${values:-(defaults)}: ok"
  done
done

# --- render --------------------------------------------------------------------
echo "render"
"$HELM" template raftcron $CHART -n raftcron-system --include-crds >"$OUT/defaults.yaml"
"$HELM" template rc $CHART -n ops -f "$ALL_ON" --include-crds >"$OUT/all-on.yaml"
say "helm template (defaults) -> $OUT/defaults.yaml"
say "helm template -f $ALL_ON -> $OUT/all-on.yaml"

# --- validate every object -------------------------------------------------------
echo "validate (kubernetes-validate --strict, Kubernetes $K8S_VERSION)"
"$PY" - "$K8S_VERSION" "$OUT/defaults.yaml" "$OUT/all-on.yaml" <<'PY'
import sys, yaml, kubernetes_validate as kv
version, files = sys.argv[1], sys.argv[2:]
# Prometheus Operator kinds have no schema here (their CRDs are not on PyPI):
# named as skipped, never passed silently. docs/kubernetes-verification.txt
# has them applied to an API server that had the real CRDs.
NO_SCHEMA = {"monitoring.coreos.com/v1", "cert-manager.io/v1"}
# Canary: a mistyped field must fail, or this check proves nothing.
canary = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "canary"},
          "spec": {"replica": 2, "selector": {}, "template": {}}}
try:
    kv.validate(canary, version, strict=True)
    sys.exit("  the validator accepted spec.replica: strict validation is not working")
except kv.ValidationError:
    print("  canary: a Deployment with spec.replica is refused")
bad = 0
for f in files:
    counts, skipped = {}, []
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] in NO_SCHEMA:
            skipped.append(name)
            continue
        try:
            kv.validate(doc, version, strict=True)
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
        except kv.ValidationError as e:
            bad += 1
            where = "/".join(str(p) for p in e.path)
            print(f"  INVALID {f}: {name}: at /{where}: {e.message}")
        except Exception as e:  # no schema for the kind, unsupported version...
            bad += 1
            print(f"  INVALID {f}: {name}: {type(e).__name__}: {e}")
    total = sum(counts.values())
    print(f"  {f}: {total} objects valid: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if skipped:
        print(f"  {f}: NOTE not schema-checked (no offline schema for monitoring.coreos.com, cert-manager.io): {', '.join(skipped)}")
sys.exit(1 if bad else 0)
PY

# --- images, pull secrets and node RBAC as the values say ---------------------------
echo "images, pull secrets, node RBAC"
"$PY" - "$OUT/defaults.yaml" "$OUT/all-on.yaml" "$ALL_ON" <<'PY'
import sys, yaml
defaults, all_on, values = sys.argv[1:]
def docs(f):
    return [d for d in yaml.safe_load_all(open(f)) if d]
def cluster_cfg(ds):
    return next(yaml.safe_load(d["data"]["cluster.yaml"]) for d in ds
                if d["kind"] == "ConfigMap" and "cluster.yaml" in d.get("data", {}))
def operator_pod(ds):
    return next(d for d in ds if d["kind"] == "Deployment")["spec"]["template"]["spec"]
bad = []
def want(ok, what):
    print(f"  {'ok' if ok else 'WRONG'}: {what}")
    ok or bad.append(what)
v = yaml.safe_load(open(values))
d, a = docs(defaults), docs(all_on)
# Images: repository:appVersion by default, repository@digest when a digest is set.
want(operator_pod(d)["containers"][0]["image"] == "ghcr.io/raftcron/raftcron-operator:0.1.0", "defaults: operator image repository:appVersion")
want(cluster_cfg(d)["image"] == "ghcr.io/raftcron/raftcron-node:0.1.0", "defaults: node image repository:appVersion")
for who, got in (("operator", operator_pod(a)["containers"][0]["image"]), ("nodes", cluster_cfg(a)["image"])):
    img = v[who]["image"]
    want(got == f"{img['repository']}@{img['digest']}", f"all-on: {who} image is repository@digest ({got})")
want("imagePullSecrets" not in cluster_cfg(d), "defaults: no node imagePullSecrets")
want(cluster_cfg(a).get("imagePullSecrets") == v["nodes"]["imagePullSecrets"], "all-on: nodes.imagePullSecrets reach the operator's cluster config")
want(operator_pod(a).get("imagePullSecrets") == v["operator"]["imagePullSecrets"], "all-on: operator.imagePullSecrets on the operator pod")
# Node RBAC: Jobs and Secrets only where granted.
def grants(ds, resource):
    node_sa = cluster_cfg(ds)["serviceAccountName"]
    roles = {x["metadata"]["name"] for x in ds if x["kind"] == "ClusterRole"
             and any(resource in r["resources"] for r in x["rules"])}
    where = set()
    for x in ds:
        if x["kind"] in ("ClusterRoleBinding", "RoleBinding") and x["roleRef"]["name"] in roles \
                and any(s["name"] == node_sa for s in x["subjects"]):
            where.add("*" if x["kind"] == "ClusterRoleBinding" else x["metadata"]["namespace"])
    return where
for res in ("jobs", "secrets"):
    want(grants(d, res) == set(), f"defaults: nodes get no {res} anywhere")
want(grants(a, "secrets") == {"*"}, "all-on: secrets clusterWide -> one ClusterRoleBinding")
want(grants(a, "jobs") == set(v["rbac"]["nodes"]["jobs"]["namespaces"]), "all-on: jobs in the listed namespaces -> a RoleBinding each")
sys.exit(1 if bad else 0)
PY

# --- sidecar injection: webhook, Service, operator port and env, RBAC agree ----------
echo "sidecar injection"
"$HELM" template raftcron $CHART -n raftcron-system --set sidecar.injection.enabled=false >"$OUT/no-injection.yaml"
"$PY" - "$OUT/defaults.yaml" "$OUT/all-on.yaml" "$OUT/no-injection.yaml" "$ALL_ON" <<'PY'
import sys, yaml
defaults, all_on, off, values = sys.argv[1:]
def docs(f):
    return [d for d in yaml.safe_load_all(open(f)) if d]
def one(ds, kind, **match):
    found = [d for d in ds if d["kind"] == kind and all(d["metadata"].get(k) == v for k, v in match.items())]
    return found[0] if found else None
bad = []
def want(ok, what):
    print(f"  {'ok' if ok else 'WRONG'}: {what}")
    ok or bad.append(what)
def check(label, ds, ns, cert_manager, v):
    inj = v["sidecar"]["injection"] if v else {"failurePolicy": "Ignore", "timeoutSeconds": 5}
    dep = one(ds, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mwc = one(ds, "MutatingWebhookConfiguration")
    want(mwc is not None and mwc["metadata"]["name"] == env.get("RAFTCRON_WEBHOOK_CONFIGURATION"),
         f"{label}: MutatingWebhookConfiguration named as the operator's RAFTCRON_WEBHOOK_CONFIGURATION")
    w = mwc["webhooks"][0]
    want(w["failurePolicy"] == inj["failurePolicy"] and w["timeoutSeconds"] == inj["timeoutSeconds"],
         f"{label}: failurePolicy {w['failurePolicy']}, timeoutSeconds {w['timeoutSeconds']} from the values")
    want(w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"], f"{label}: sideEffects None, admissionReviewVersions [v1]")
    want(w["objectSelector"] == {"matchLabels": {"raftcron.dev/inject": "true"}}, f"{label}: objectSelector raftcron.dev/inject=true")
    ex = w["namespaceSelector"]["matchExpressions"]
    want(ex == [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", ns]}],
         f"{label}: namespaceSelector excludes kube-system and {ns}")
    want(w["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
         f"{label}: pod CREATE only")
    want("caBundle" not in w["clientConfig"], f"{label}: no caBundle in the chart (the operator or cert-manager sets it)")
    ref = w["clientConfig"]["service"]
    svc = one(ds, "Service", name=ref["name"], namespace=ns)
    want(svc is not None and ref["namespace"] == ns and ref["path"] == "/mutate" and env.get("RAFTCRON_WEBHOOK_SERVICE") == ref["name"],
         f"{label}: webhook calls Service {ref['name']} /mutate, the name the operator's certificate is for")
    port = next(p for p in svc["spec"]["ports"] if p["port"] == ref["port"])
    cport = next(p for p in c["ports"] if p["name"] == port["targetPort"])
    want(env.get("RAFTCRON_WEBHOOK") == f"0.0.0.0:{cport['containerPort']}" and cport["containerPort"] == inj.get("port", 9443),
         f"{label}: Service port {ref['port']} -> operator port {cport['containerPort']} = RAFTCRON_WEBHOOK")
    want(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], f"{label}: the Service selects every operator replica")
    want(env.get("RAFTCRON_WEBHOOK_CERTS") == ("external" if cert_manager else "operator"), f"{label}: RAFTCRON_WEBHOOK_CERTS")
    secret = env.get("RAFTCRON_WEBHOOK_SECRET")
    role = one(ds, "Role", namespace=ns)
    sr = [r for r in role["rules"] if r["resources"] == ["secrets"]]
    verbs = ["get", "list", "watch"] + ([] if cert_manager else ["create", "patch"])
    want(sr == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": verbs}],
         f"{label}: operator may {','.join(verbs)} Secret {secret} only")
    op_cr = next(d for d in ds if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator"))
    mr = [r for r in op_cr["rules"] if r["resources"] == ["mutatingwebhookconfigurations"]]
    want(mr == ([] if cert_manager else [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                                          "resourceNames": [mwc["metadata"]["name"]], "verbs": ["get", "list", "watch", "patch"]}]),
         f"{label}: {'no' if cert_manager else 'get/list/watch/patch on its own'} MutatingWebhookConfiguration")
    want(any(r["resources"] == ["pods"] and r["verbs"] == ["list", "watch"] for r in op_cr["rules"]), f"{label}: operator may list/watch pods (skip Events)")
    node_cr = next(d for d in ds if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-node"))
    want(any(r["resources"] == ["tokenreviews"] and r["verbs"] == ["create"] for r in node_cr["rules"]), f"{label}: nodes may create TokenReviews")
    if cert_manager:
        cert = one(ds, "Certificate", namespace=ns)
        want(cert is not None and cert["spec"]["secretName"] == secret, f"{label}: cert-manager Certificate writes Secret {secret}")
        want(mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") == f"{ns}/{cert['metadata']['name']}",
             f"{label}: cainjector fills the caBundle from that Certificate")
        want(cert["spec"]["issuerRef"] == v["sidecar"]["injection"]["certManager"]["issuerRef"], f"{label}: the configured issuer")
        want(f"{ref['name']}.{ns}.svc" in cert["spec"]["dnsNames"], f"{label}: certificate for {ref['name']}.{ns}.svc")
    cfg = next(yaml.safe_load(d["data"]["cluster.yaml"]) for d in ds if d["kind"] == "ConfigMap" and "cluster.yaml" in d.get("data", {}))
    sv = v["sidecar"] if v else {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}, "defaultAppPort": 8080}
    want(cfg.get("sidecar") == {"resources": sv["resources"], "defaultAppPort": sv["defaultAppPort"]}, f"{label}: sidecar resources and default app port reach the cluster config")
check("defaults", docs(defaults), "raftcron-system", False, None)
check("all-on", docs(all_on), "ops", True, yaml.safe_load(open(values)))
o = docs(off)
env = {e["name"] for e in next(d for d in o if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
want(not any(d["kind"] == "MutatingWebhookConfiguration" for d in o) and "RAFTCRON_WEBHOOK" not in env
     and not any(d["kind"] == "Service" for d in o)
     and not any(r["resources"] in (["pods"], ["secrets"]) for d in o if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]),
     "sidecar.injection.enabled=false: no webhook, Service, env or pod/Secret rights")
sys.exit(1 if bad else 0)
PY

# --- the operator accepts the rendered cluster config -----------------------------
# The operator parses its config before it connects to Kubernetes, so with no
# cluster reachable a good config ends in "connecting to the Kubernetes API"
# and a bad one in the parse error naming the key.
OPERATOR=target/debug/raftcron-operator
if [[ -x $OPERATOR ]]; then
  echo "cluster config parsed by $OPERATOR"
  for f in defaults all-on; do
    "$PY" -c 'import sys,yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"]=="ConfigMap" and "cluster.yaml" in d.get("data",{}): print(d["data"]["cluster.yaml"])' \
      "$OUT/$f.yaml" >"$OUT/$f-cluster.yaml"
    msg=$(env -u KUBERNETES_SERVICE_HOST KUBECONFIG=/nonexistent RUST_BACKTRACE=0 \
      "$OPERATOR" --config "$OUT/$f-cluster.yaml" --namespace x --http 127.0.0.1:0 2>&1 | head -1 || true)
    [[ $msg == "Error: connecting to the Kubernetes API" ]] || die "$f: operator refused its config: $msg"
    say "$f: ok"
  done
else
  echo "NOTE: $OPERATOR not built; the rendered cluster config was not parsed by the operator"
fi

# --- bad values are refused, naming the key ---------------------------------------
echo "bad values refused"
expect_fail() { # <what the error must contain> <helm template args...> (release name: $REL or x)
  local want=$1; shift
  if out=$("$HELM" template "${REL:-x}" $CHART "$@" 2>&1); then die "accepted: $*"; fi
  grep -qF -- "$want" <<<"$out" || { echo "$out"; die "error for '$*' does not name '$want'"; }
  local label="$*"
  [[ -n ${REL:-} ]] && label="release $REL${label:+ $label}"
  say "$label -> $(grep -F -- "$want" <<<"$out" | head -1 | sed 's/^ *//')"
}
expect_fail "additional properties 'bogus' not allowed" --set bogus=1
expect_fail "additional properties 'replica' not allowed" --set operator.replica=3
expect_fail "additional properties 'enable' not allowed" --set nodes.tls.enable=true
expect_fail "additional properties 'storageClass' not allowed" --set nodes.storage.storageClass=ssd
expect_fail "at '/nodes/replicas'" --set nodes.replicas=4
expect_fail "at '/operator/lease/duration'" --set operator.lease.duration=1.5s
expect_fail "at '/nodes/image/digest'" --set nodes.image.digest=latest
expect_fail "at '/nodes/imagePullSecrets/0'" --set 'nodes.imagePullSecrets[0].nam=regcred'
expect_fail "at '/rbac/nodes/secrets': got boolean, want object" --set rbac.nodes.secrets=true
expect_fail "at '/rbac/nodes/jobs/namespaces/0'" --set 'rbac.nodes.jobs.namespaces={Not_A_Namespace}'
expect_fail "rbac.nodes.jobs: set clusterWide or namespaces, not both" --set rbac.nodes.jobs.clusterWide=true --set 'rbac.nodes.jobs.namespaces={batch}'
expect_fail "at '/nodes/raft/heartbeat'" --set nodes.raft.heartbeat=fast
expect_fail "at '/nodes/execEnabled'" --set-string nodes.execEnabled=yes
expect_fail "nodes.tls.secretName is empty" --set nodes.tls.enabled=true
expect_fail "at '/fullnameOverride'" --set fullnameOverride=a-very-long-installation-name-for-raftcron-x
REL=a-very-long-installation-name-for-raftcron-x expect_fail "longer than 40 characters"
expect_fail "at '/sidecar/injection/failurePolicy'" --set sidecar.injection.failurePolicy=Sometimes
expect_fail "at '/sidecar/injection/timeoutSeconds'" --set sidecar.injection.timeoutSeconds=60
expect_fail "sidecar.injection.port 8080 is operator.httpPort too" --set sidecar.injection.port=8080
expect_fail "sidecar.defaultAppPort 7090 is the sidecar's own port" --set sidecar.defaultAppPort=7090
expect_fail "additional properties 'enable' not allowed" --set sidecar.injection.enable=false
expect_fail "at '/sidecar/injection/certManager/issuerRef'" --set sidecar.injection.certManager.issuerRef.kind=Issuer

# --- metric names used by alerts and the dashboard exist in the code ---------------
echo "metric names"
"$PY" - "$OUT/all-on.yaml" deploy/grafana/raftcron-dashboard.json node/src/metrics.rs operator/src/metrics.rs <<'PY'
import re, sys
rendered, dashboard, *sources = sys.argv[1:]
defined = set()
for s in sources:
    defined |= set(re.findall(r'"(raftcron_[a-z_]+)"', open(s).read()))
# Per-ScheduledJob gauges come from the kube-state-metrics config in the chart.
ksm = set("raftcron_scheduledjob_" + m for m in re.findall(r"- name: ([a-z_]+)\n\s+help:", open(rendered).read()))
known = defined | ksm
bad = 0
for f in (rendered, dashboard):
    used = set(re.findall(r"\b(raftcron_(?:node|operator|scheduledjob)_[a-z_]+)", open(f).read()))
    base = {re.sub(r"_(bucket|sum|count)$", "", u) if u not in known else u for u in used}
    missing = sorted(base - known)
    if missing:
        bad += 1
        print(f"  {f}: unknown metrics: {', '.join(missing)}")
    else:
        print(f"  {f}: {len(base)} metric names, all defined")
sys.exit(1 if bad else 0)
PY

# --- plain manifests are the chart's defaults ---------------------------------------
echo "deploy/manifests"
{
  echo "# Generated by scripts/chart-check.sh from charts/raftcron with default values:"
  echo "#   helm template raftcron charts/raftcron -n raftcron-system --include-crds"
  echo "# Do not edit. Apply: kubectl create namespace raftcron-system && kubectl apply --server-side -f deploy/manifests/raftcron.yaml"
  cat "$OUT/defaults.yaml"
} >"$OUT/raftcron.yaml"
if [[ ${UPDATE_MANIFESTS:-} == 1 ]]; then
  cp "$OUT/raftcron.yaml" deploy/manifests/raftcron.yaml
  say "deploy/manifests/raftcron.yaml rewritten"
else
  diff -u deploy/manifests/raftcron.yaml "$OUT/raftcron.yaml" >/dev/null \
    || die "deploy/manifests/raftcron.yaml is stale: run UPDATE_MANIFESTS=1 scripts/chart-check.sh"
  say "deploy/manifests/raftcron.yaml matches the chart"
fi

if [[ -n ${RAFTCRON_E2E_KUBECONFIG:-} ]]; then
  echo "real API server ($RAFTCRON_E2E_KUBECONFIG)"
  KUBECONFIG=$RAFTCRON_E2E_KUBECONFIG scripts/chart-e2e.sh
fi
echo "chart-check: all checks passed in $((SECONDS - started))s"
