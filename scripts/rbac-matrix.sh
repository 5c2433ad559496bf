#!/usr/bin/env bash
# What the chart's ServiceAccounts may do, asked of the API server with
# `kubectl auth can-i --as=system:serviceaccount:NS:SA`: every call the code
# makes must be "yes", and a set of things it must never do "no".
# Exits non-zero on any mismatch.
#
#   scripts/rbac-matrix.sh NAMESPACE [FULLNAME]    # FULLNAME: the chart's full name, default raftcron
#
# 1. The release installed as FULLNAME in NAMESPACE, which must have the
#    chart's default node grants: no Jobs, no Secrets anywhere.
# 2. The other two settings of rbac.nodes.{jobs,secrets}, rendered from
#    charts/raftcron (rbac.yaml only) under the full names FULLNAME-rm-ns and
#    FULLNAME-rm-cw, applied, checked and deleted again:
#      per namespace  jobs and secrets granted in namespace rbac-matrix-granted
#                     (created for it) and nowhere else;
#      cluster-wide   jobs and secrets in every namespace.
# Uses kubectl from PATH (or $KUBECTL), helm from scripts/install-helm.sh,
# and the current KUBECONFIG (creating ClusterRoles needs an admin).
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${1:?usage: rbac-matrix.sh NAMESPACE [FULLNAME]}
FULL=${2:-raftcron}
KUBECTL=${KUBECTL:-kubectl}
HELM=$(scripts/install-helm.sh | tail -1)/helm
OTHER=rbac-matrix-elsewhere   # any other namespace: where ScheduledJobs live
GRANTED=rbac-matrix-granted   # a namespace listed in rbac.nodes.*.namespaces
OP=$FULL-operator
NODE=$FULL-node
fail=0

printf '%-8s %-9s %-58s %-24s %-4s %s\n' ACCOUNT VERB RESOURCE NAMESPACE WANT GOT
check() { # <account> <verb> <resource> <namespace|-A> <want yes|no> [extra can-i args]
  local sa=$1 verb=$2 res=$3 ns=$4 want=$5; shift 5
  local scope=(-n "$ns") shown=$ns
  [[ $ns == -A ]] && scope=(-A) && shown="(all namespaces)"
  local got
  got=$("$KUBECTL" auth can-i "$verb" "$res" "${scope[@]}" "$@" \
    --as="system:serviceaccount:$NS:$sa" 2>/dev/null || true)
  local mark=""
  [[ $got == "$want" ]] || { mark="  <-- MISMATCH"; fail=1; }
  printf '%-8s %-9s %-58s %-24s %-4s %s%s\n' "${sa#"$FULL"-}" "$verb" "$res${*:+ $*}" "$shown" "$want" "$got" "$mark"
}

# --- operator: what operator/src calls -------------------------------------------
for v in list watch patch; do check "$OP" $v scheduledjobs.raftcron.dev -A yes; done
check "$OP" patch scheduledjobs.raftcron.dev "$OTHER" yes --subresource=status
for v in create patch; do check "$OP" $v events.events.k8s.io "$OTHER" yes; done
for v in get list watch patch; do check "$OP" $v "leases.coordination.k8s.io/$OP" "$NS" yes; done
# Server-side apply of a missing object is authorized as create on its name.
for v in get create patch; do check "$OP" $v "statefulsets.apps/$NODE" "$NS" yes; done
for obj in "services/$NODE" "services/$NODE-headless" "poddisruptionbudgets.policy/$NODE" "configmaps/$NODE-config"; do
  for v in create patch; do check "$OP" $v "$obj" "$NS" yes; done
done
check "$OP" get "configmaps/$OP-config" "$NS" yes
# --- operator: must not ----------------------------------------------------------
check "$OP" create leases.coordination.k8s.io "$NS" no
check "$OP" list leases.coordination.k8s.io "$NS" no
check "$OP" patch leases.coordination.k8s.io/kube-controller-manager kube-system no
check "$OP" patch statefulsets.apps/someone-else "$NS" no
check "$OP" create statefulsets.apps/someone-else "$NS" no
check "$OP" create configmaps "$NS" no
check "$OP" create services/someone-else "$NS" no
check "$OP" delete "statefulsets.apps/$NODE" "$NS" no
check "$OP" patch "statefulsets.apps/$NODE" "$OTHER" no
check "$OP" patch "configmaps/$OP-config" "$NS" no
check "$OP" get secrets "$NS" no
check "$OP" list secrets -A no
check "$OP" delete pods "$NS" no
check "$OP" create pods/exec "$NS" no
check "$OP" delete scheduledjobs.raftcron.dev "$OTHER" no
check "$OP" create scheduledjobs.raftcron.dev "$OTHER" no
check "$OP" create jobs.batch "$OTHER" no
check "$OP" create clusterroles.rbac.authorization.k8s.io -A no
check "$OP" create rolebindings.rbac.authorization.k8s.io "$NS" no
check "$OP" patch customresourcedefinitions.apiextensions.k8s.io -A no

# --- nodes: what node/src calls ----------------------------------------------------
# node_checks <node ServiceAccount> <where Jobs and Secrets are granted: none | NAMESPACE | all>
node_checks() {
  local node=$1 grant=$2 want_other=no want_granted=no
  [[ $grant == all ]] && want_other=yes && want_granted=yes
  [[ $grant != none && $grant != all ]] && want_granted=yes
  for v in get list; do check "$node" $v scheduledjobs.raftcron.dev -A yes; done
  check "$node" patch scheduledjobs.raftcron.dev "$OTHER" yes --subresource=status
  for v in create patch; do check "$node" $v events.events.k8s.io "$OTHER" yes; done
  # Jobs and Secrets: only where granted (rbac.nodes.jobs / rbac.nodes.secrets).
  for v in create get list watch delete; do check "$node" $v jobs.batch "$GRANTED" $want_granted; done
  check "$node" get secrets "$GRANTED" $want_granted
  for v in create get list watch delete; do check "$node" $v jobs.batch "$OTHER" $want_other; done
  check "$node" get secrets "$OTHER" $want_other
  # --- nodes: must not, whatever the grants ----------------------------------------
  for ns in "$OTHER" "$GRANTED"; do
    check "$node" list secrets "$ns" no
    check "$node" watch secrets "$ns" no
    check "$node" update jobs.batch "$ns" no
    check "$node" create pods "$ns" no
  done
  check "$node" patch scheduledjobs.raftcron.dev "$OTHER" no
  check "$node" delete scheduledjobs.raftcron.dev "$OTHER" no
  check "$node" delete pods "$NS" no
  check "$node" create pods/exec "$NS" no
  check "$node" patch "statefulsets.apps/$NODE" "$NS" no
  check "$node" get "leases.coordination.k8s.io/$OP" "$NS" no
  check "$node" patch configmaps "$NS" no
  check "$node" create clusterroles.rbac.authorization.k8s.io -A no
  check "$node" create serviceaccounts/token "$NS" no
}

# The installed release: chart defaults, no Jobs or Secrets for the nodes.
"$KUBECTL" get ns "$GRANTED" >/dev/null 2>&1 || "$KUBECTL" create ns "$GRANTED" >/dev/null
echo "== $FULL (installed): rbac.nodes defaults"
node_checks "$NODE" none

# The other settings, rendered from the chart and applied beside it.
WORK=$(mktemp -d)
cleanup() {
  for f in "$WORK"/*.yaml; do [[ -f $f ]] && "$KUBECTL" delete -f "$f" --ignore-not-found >/dev/null 2>&1; done
  "$KUBECTL" delete ns "$GRANTED" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
variant() { # <suffix> <grant: NAMESPACE | all> <helm --set args...>
  local suffix=$1 name=$FULL-$1 grant=$2
  shift 2
  "$HELM" template "$name" charts/raftcron -n "$NS" --set fullnameOverride="$name" "$@" \
    --show-only templates/rbac.yaml >"$WORK/$suffix.yaml"
  "$KUBECTL" apply -f "$WORK/$suffix.yaml" >/dev/null
  echo "== $name: rbac.nodes.{jobs,secrets} $*"
  node_checks "$name-node" "$grant"
}
variant rm-ns "$GRANTED" --set "rbac.nodes.jobs.namespaces={$GRANTED}" --set "rbac.nodes.secrets.namespaces={$GRANTED}"
variant rm-cw all --set rbac.nodes.jobs.clusterWide=true --set rbac.nodes.secrets.clusterWide=true

if [[ $fail != 0 ]]; then
  echo "rbac-matrix: MISMATCH (see <-- above)" >&2
  exit 1
fi
echo "rbac-matrix: all as expected"
