#!/usr/bin/env bash
# The chart on a real API server (KUBECONFIG; pods need not run):
#   1. CRD upgrade path: an older CRD created as `helm install` does, an object
#      stored under it, then `kubectl apply --server-side --force-conflicts` of
#      the current CRD: the object survives and the new field is accepted.
#      (On a copy with its own API group, so a shared cluster's real CRD is untouched.)
#   2. helm install creates every object of the chart.
#   3. The operator binary, run outside the cluster with the operator
#      ServiceAccount's token, does its real work: Lease, node StatefulSet,
#      Services, PDB and ConfigMap, finalizer and status on a ScheduledJob,
#      and the injection webhook's certificates: the Secret (owned by the
#      config ConfigMap) and the caBundle, patched back when it is removed.
#   4. scripts/rbac-matrix.sh, and the injection webhook's rules.
#   5. helm upgrade with a changed value rolls the operator with the new config.
#   6. helm uninstall leaves nothing behind (node objects garbage-collected).
# Everything lives in namespaces chart-e2e*, removed at the end.
#
#   KUBECONFIG=... scripts/chart-e2e.sh   (chart-check.sh runs it when RAFTCRON_E2E_KUBECONFIG is set)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBECONFIG:?set KUBECONFIG}"
BIN=$(scripts/install-helm.sh | tail -1)
export PATH=$BIN:$PATH
PY=target/tools/venv/bin/python   # has PyYAML once chart-check.sh ran
[[ -x $PY ]] || PY=python3
NS=chart-e2e
JOBS=chart-e2e-jobs
REL=chart-e2e-raftcron # contains "raftcron": the full name is the release name
CRDT=scheduledjobs.chart-e2e.raftcron.dev
WORK=target/chart-e2e
OPERATOR=target/debug/raftcron-operator
mkdir -p "$WORK"
step() { printf '\n== %s\n' "$*"; }
die() {
  printf 'chart-e2e: FAILED: %s\n' "$*" >&2
  exit 1
}
quiet() { grep -v 'unrecognized format' || true; } # warnings about the generated CRD's uint formats
op_pid=
cleanup() {
  if [[ -n $op_pid ]]; then kill "$op_pid" 2>/dev/null || true; fi
  helm uninstall "$REL" -n "$NS" >/dev/null 2>&1 || true
  for sj in $(kubectl get sj -n "$JOBS" -o name 2>/dev/null); do
    kubectl patch -n "$JOBS" "$sj" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  kubectl delete ns "$NS" "$JOBS" chart-e2e-crd --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete crd "$CRDT" --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT
kubectl get --raw /readyz >/dev/null || die "API server not ready"
cleanup
for _ in $(seq 60); do
  kubectl get ns "$NS" "$JOBS" chart-e2e-crd >/dev/null 2>&1 || break
  sleep 1
done

step "1. CRD upgrade path"
"$PY" - charts/raftcron/crds/scheduledjobs.raftcron.dev.yaml "$WORK" <<'PY'
import sys, yaml
src, out = sys.argv[1:]
d = yaml.safe_load(open(src))
# Own group, short name and no category: nothing collides with the real CRD.
d["metadata"]["name"] = "scheduledjobs.chart-e2e.raftcron.dev"
d["spec"]["group"] = "chart-e2e.raftcron.dev"
d["spec"]["names"]["shortNames"] = ["sje2e"]
d["spec"]["names"].pop("categories", None)
yaml.safe_dump(d, open(f"{out}/crd-new.yaml", "w"), sort_keys=False)
# "Older": one spec field and one printer column fewer.
v = d["spec"]["versions"][0]
del v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["missedRunPolicy"]
v["additionalPrinterColumns"] = [c for c in v["additionalPrinterColumns"] if c["name"] != "Next Run"]
yaml.safe_dump(d, open(f"{out}/crd-old.yaml", "w"), sort_keys=False)
PY
kubectl create -f "$WORK/crd-old.yaml" 2>&1 | quiet # what helm install does with crds/
kubectl wait --for=condition=Established "crd/$CRDT" --timeout=60s >/dev/null
kubectl create ns chart-e2e-crd >/dev/null
kubectl create -f - <<'YAML' 2>&1 | quiet
apiVersion: chart-e2e.raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {name: stored-before-upgrade, namespace: chart-e2e-crd}
spec:
  schedule: "*/10 * * * * *"
  action: {http: {url: "http://example.invalid/ok", method: POST}}
YAML
uid_before=$(kubectl get "$CRDT" -n chart-e2e-crd stored-before-upgrade -o jsonpath='{.metadata.uid}')
# The old schema does not know the field: the API server prunes it.
kubectl patch "$CRDT" -n chart-e2e-crd stored-before-upgrade --type merge \
  -p '{"spec":{"missedRunPolicy":"Skip"}}' >/dev/null 2>&1 || true
pruned=$(kubectl get "$CRDT" -n chart-e2e-crd stored-before-upgrade -o jsonpath='{.spec.missedRunPolicy}')
[[ -z $pruned ]] || die "the old CRD kept a field it does not have"
echo "old CRD: object stored (uid $uid_before); spec.missedRunPolicy not kept (pruned)"
if kubectl apply --server-side -f "$WORK/crd-new.yaml" >/dev/null 2>&1; then
  echo "note: apply --server-side without --force-conflicts went through"
else
  echo "apply --server-side without --force-conflicts: refused, conflict with the creator's field manager"
fi
kubectl apply --server-side --force-conflicts -f "$WORK/crd-new.yaml" 2>&1 | quiet
kubectl wait --for=condition=Established "crd/$CRDT" --timeout=60s >/dev/null
uid_after=$(kubectl get "$CRDT" -n chart-e2e-crd stored-before-upgrade -o jsonpath='{.metadata.uid}')
[[ $uid_after == "$uid_before" ]] || die "object lost in the CRD upgrade"
kubectl patch "$CRDT" -n chart-e2e-crd stored-before-upgrade --type merge \
  -p '{"spec":{"missedRunPolicy":"Skip"}}' >/dev/null
got=$(kubectl get "$CRDT" -n chart-e2e-crd stored-before-upgrade -o jsonpath='{.spec.missedRunPolicy} {.spec.schedule}')
[[ $got == "Skip */10 * * * * *" ]] || die "after the upgrade: spec is '$got'"
kubectl get "$CRDT" -n chart-e2e-crd 2>&1 | quiet
echo "new CRD: same object (uid $uid_after), new field accepted and kept, new column shown"
kubectl delete ns chart-e2e-crd --wait=false >/dev/null
kubectl delete crd "$CRDT" >/dev/null

step "2. helm install"
kubectl get crd scheduledjobs.raftcron.dev >/dev/null 2>&1 ||
  die "the ScheduledJob CRD is not installed: kubectl apply --server-side -f charts/raftcron/crds/"
# Images nobody has: the chart's own pods never run (the operator of step 3
# runs outside, and no node answers it), even where raftcron images are imported.
helm install "$REL" charts/raftcron -n "$NS" --create-namespace --set networkPolicy.enabled=true \
  --set operator.image.repository=chart-e2e.invalid/raftcron-operator \
  --set nodes.image.repository=chart-e2e.invalid/raftcron-node >"$WORK/install.log"
sed -n '1,6p' "$WORK/install.log"
helm get manifest "$REL" -n "$NS" >"$WORK/manifest.yaml"
want=$(grep -c '^kind:' "$WORK/manifest.yaml")
kubectl get -f "$WORK/manifest.yaml" -o name | tee "$WORK/objects.txt"
have=$(wc -l <"$WORK/objects.txt")
[[ $have == "$want" ]] || die "helm rendered $want objects, the API server has $have"
echo "all $want objects of the release exist"
kubectl get deploy,rs,pods -n "$NS"

step "2b. monitoring objects against the Prometheus Operator CRDs (server-side, strict)"
if kubectl get crd servicemonitors.monitoring.coreos.com podmonitors.monitoring.coreos.com \
  prometheusrules.monitoring.coreos.com >/dev/null 2>&1; then
  helm template "$REL" charts/raftcron -n "$NS" -f charts/raftcron/ci/all-on-values.yaml \
    --show-only templates/monitoring.yaml --show-only templates/prometheusrule.yaml >"$WORK/monitoring.yaml"
  kubectl apply --server-side --dry-run=server --validate=strict -f "$WORK/monitoring.yaml"
else
  echo "NOTE: no Prometheus Operator CRDs on this cluster; ServiceMonitor, PodMonitor and PrometheusRule not checked"
fi

step "3. the operator, outside the cluster, as its ServiceAccount"
# The operator watches ScheduledJobs in every namespace: with someone else's
# ScheduledJobs on this cluster, a second operator would reconcile them too.
others=$(kubectl get sj -A -o name 2>/dev/null | wc -l)
# ... and another installation's running operator would reconcile ours.
other_ops=$(kubectl get deploy -A -l app.kubernetes.io/name=raftcron,app.kubernetes.io/component=operator \
  -o jsonpath='{range .items[?(@.status.readyReplicas)]}{.metadata.namespace}/{.metadata.name} {end}' 2>/dev/null |
  tr ' ' '\n' | grep -v -e "^$NS/" -e '^$' || true)
if [[ ! -x $OPERATOR ]]; then
  echo "NOTE: $OPERATOR not built; skipped"
elif [[ $others != 0 ]]; then
  echo "NOTE: $others ScheduledJobs of others exist on this cluster; skipped (a second operator would reconcile them)"
elif [[ -n $other_ops ]]; then
  echo "NOTE: another raftcron operator runs on this cluster ($other_ops); skipped (it would reconcile the test's ScheduledJob)"
else
  cp "$OPERATOR" "$WORK/raftcron-operator" # a parallel cargo build may replace target/debug
  kc=$WORK/operator.kubeconfig
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
    base64 -d >"$WORK/ca.crt"
  rm -f "$kc"
  KUBECONFIG=$kc kubectl config set-cluster c --server="$server" --certificate-authority="$WORK/ca.crt" --embed-certs >/dev/null
  KUBECONFIG=$kc kubectl config set-credentials sa \
    --token="$(kubectl create token "$REL-operator" -n "$NS" --duration=1h)" >/dev/null
  KUBECONFIG=$kc kubectl config set-context c --cluster=c --user=sa >/dev/null
  KUBECONFIG=$kc kubectl config use-context c >/dev/null
  echo "as: $(KUBECONFIG=$kc kubectl auth whoami -o jsonpath='{.status.userInfo.username}')"
  kubectl get cm "$REL-operator-config" -n "$NS" -o jsonpath='{.data.cluster\.yaml}' >"$WORK/cluster.yaml"
  # Port 9 (discard): no node answers, so the ScheduledJob ends up SchedulerUnavailable.
  KUBECONFIG=$kc POD_NAME=e2e-operator RAFTCRON_LOG=info,kube=warn \
    "$WORK/raftcron-operator" --config "$WORK/cluster.yaml" --namespace "$NS" \
    --owner-configmap "$REL-operator-config" --lease "$REL-operator" --http 127.0.0.1:0 \
    --nodes 127.0.0.1:9 --webhook 127.0.0.1:0 --webhook-service "$REL-operator-webhook" \
    --webhook-secret "$REL-operator-webhook-tls" --webhook-configuration "$REL-sidecar-injector" \
    >"$WORK/operator.log" 2>&1 &
  op_pid=$!
  for _ in $(seq 60); do
    kubectl get pdb "$REL-node" -n "$NS" >/dev/null 2>&1 && break
    sleep 1
  done
  kubectl get sts,svc,pdb,cm -n "$NS" -l app.kubernetes.io/managed-by=raftcron-operator ||
    die "the operator created no node objects (see $WORK/operator.log)"
  kubectl get sts "$REL-node" -n "$NS" >/dev/null 2>&1 || die "no node StatefulSet (see $WORK/operator.log)"
  owner=$(kubectl get sts "$REL-node" -n "$NS" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
  [[ $owner == "ConfigMap/$REL-operator-config" ]] || die "StatefulSet owner is '$owner'"
  echo "node StatefulSet owned by $owner"
  echo "Lease holder: $(kubectl get lease "$REL-operator" -n "$NS" -o jsonpath='{.spec.holderIdentity}')"
  kubectl create ns "$JOBS" >/dev/null
  kubectl apply -f - <<YAML 2>&1 | quiet
apiVersion: raftcron.dev/v1alpha1
kind: ScheduledJob
metadata: {name: e2e-probe, namespace: $JOBS}
spec:
  schedule: "@every 30s"
  action: {http: {url: "http://example.invalid/ok"}}
YAML
  reason=
  for _ in $(seq 60); do
    reason=$(kubectl get sj e2e-probe -n "$JOBS" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}' 2>/dev/null || true)
    [[ -n $reason ]] && break
    sleep 1
  done
  echo "ScheduledJob: finalizers=$(kubectl get sj e2e-probe -n "$JOBS" -o jsonpath='{.metadata.finalizers}') Ready reason=$reason"
  [[ $reason == SchedulerUnavailable ]] || die "no Ready condition from the operator (see $WORK/operator.log)"
  bundle() { kubectl get mutatingwebhookconfiguration "$REL-sidecar-injector" -o jsonpath='{.webhooks[0].clientConfig.caBundle}'; }
  for _ in $(seq 60); do [[ -n $(bundle) ]] && break; sleep 1; done
  [[ -n $(bundle) ]] || die "the operator set no caBundle (see $WORK/operator.log)"
  keys=$(kubectl get secret "$REL-operator-webhook-tls" -n "$NS" -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}')
  [[ $keys == "ca.crt ca.key tls.crt tls.key " ]] || die "webhook Secret keys: '$keys'"
  owner=$(kubectl get secret "$REL-operator-webhook-tls" -n "$NS" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
  [[ $owner == "ConfigMap/$REL-operator-config" ]] || die "webhook Secret owner is '$owner'"
  echo "webhook Secret $REL-operator-webhook-tls ($keys) owned by $owner; caBundle set"
  # What a helm upgrade may do: the caBundle goes, and the operator puts it back.
  kubectl patch mutatingwebhookconfiguration "$REL-sidecar-injector" --type json \
    -p '[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]' >/dev/null
  for _ in $(seq 30); do [[ -n $(bundle) ]] && break; sleep 1; done
  [[ -n $(bundle) ]] || die "the caBundle was not patched back"
  echo "caBundle removed by hand: patched back"
  if grep -i "forbidden" "$WORK/operator.log"; then die "the operator was refused an API call"; fi
  echo "operator log: no 'forbidden'"
  kill "$op_pid"
  wait "$op_pid" 2>/dev/null || true
  op_pid=
  # Its cleanup needs a node to confirm; with none, drop the finalizer by hand.
  kubectl patch sj e2e-probe -n "$JOBS" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
  kubectl delete ns "$JOBS" --wait=false >/dev/null
fi

step "4. RBAC matrix"
scripts/rbac-matrix.sh "$NS" "$REL"

echo "-- injection webhook rules"
can() { # <ServiceAccount> <verb> <resource> <namespace|-A> <want>
  local got scope=(-n "$4")
  [[ $4 == -A ]] && scope=(-A)
  got=$(kubectl auth can-i "$2" "$3" "${scope[@]}" --as="system:serviceaccount:$NS:$1" 2>/dev/null || true)
  printf '  %-9s %-7s %-70s %-16s want %-3s got %s\n' "${1#"$REL"-}" "$2" "$3" "$4" "$5" "$got"
  [[ $got == "$5" ]] || die "$1 may $2 $3: $got, want $5"
}
for v in get list watch create patch; do can "$REL-operator" $v "secrets/$REL-operator-webhook-tls" "$NS" yes; done
can "$REL-operator" get secrets/other "$NS" no
can "$REL-operator" delete "secrets/$REL-operator-webhook-tls" "$NS" no
for v in get list watch patch; do can "$REL-operator" $v "mutatingwebhookconfigurations.admissionregistration.k8s.io/$REL-sidecar-injector" -A yes; done
can "$REL-operator" patch mutatingwebhookconfigurations.admissionregistration.k8s.io/other -A no
can "$REL-operator" create mutatingwebhookconfigurations.admissionregistration.k8s.io -A no
for v in list watch; do can "$REL-operator" $v pods -A yes; done
for v in get create patch delete; do can "$REL-operator" $v pods -A no; done
can "$REL-node" create tokenreviews.authentication.k8s.io -A yes
can "$REL-node" create tokenrequests.authentication.k8s.io -A no

step "5. helm upgrade (nodes.replicas 3 -> 5)"
checksum() { kubectl get deploy "$REL-operator" -n "$NS" -o jsonpath='{.spec.template.metadata.annotations.checksum/config}'; }
before=$(checksum)
helm upgrade "$REL" charts/raftcron -n "$NS" --reuse-values --set nodes.replicas=5 | sed -n '1,6p'
after=$(checksum)
kubectl get cm "$REL-operator-config" -n "$NS" -o jsonpath='{.data.cluster\.yaml}' | grep -q '^replicas: 5$' ||
  die "config not updated"
[[ $before != "$after" ]] || die "config checksum unchanged: the operator would not restart"
echo "config has replicas: 5; pod template checksum/config ${before:0:12}... -> ${after:0:12}... (a rollout)"
kubectl get rs -n "$NS" -l app.kubernetes.io/component=operator

step "6. helm uninstall leaves nothing behind"
helm uninstall "$REL" -n "$NS"
left=
for _ in $(seq 90); do
  # openshift-service-ca.crt: the OpenShift-derived controller manager of
  # /opt/k8s publishes it in every namespace, as kube-root-ca.crt.
  left=$(kubectl get all,cm,secret,sa,role,rolebinding,pdb,netpol,lease,pvc -n "$NS" -o name 2>/dev/null |
    grep -v -e '^configmap/kube-root-ca.crt$' -e '^configmap/openshift-service-ca.crt$' -e '^serviceaccount/default$' || true)
  [[ -z $left ]] && break
  sleep 1
done
[[ -z $left ]] || die "left in $NS: $left"
echo "namespace $NS: only kube-root-ca.crt (and openshift-service-ca.crt) and the default ServiceAccount remain; the webhook Secret was garbage-collected"
cluster_left=$(kubectl get clusterroles,clusterrolebindings,mutatingwebhookconfigurations -o name | grep -F "/$REL" || true)
[[ -z $cluster_left ]] || die "cluster-scoped leftovers: $cluster_left"
echo "no ClusterRole, ClusterRoleBinding or MutatingWebhookConfiguration named $REL* remains"
echo "chart-e2e: all checks passed"
