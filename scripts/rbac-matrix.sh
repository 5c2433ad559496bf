#!/usr/bin/env bash
# What the chart's ServiceAccounts may do, asked of the API server with
# `kubectl auth can-i --as=system:serviceaccount:NS:SA`: every call the code
# makes must be "yes", and a set of things it must never do "no".
# Exits non-zero on any mismatch.
#
#   scripts/rbac-matrix.sh NAMESPACE [FULLNAME]    # FULLNAME: the chart's full name, default raftcron
# Uses kubectl from PATH (or $KUBECTL) and the current KUBECONFIG.
set -euo pipefail
NS=${1:?usage: rbac-matrix.sh NAMESPACE [FULLNAME]}
FULL=${2:-raftcron}
KUBECTL=${KUBECTL:-kubectl}
OTHER=rbac-matrix-elsewhere   # any other namespace: where ScheduledJobs live
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
for v in get list; do check "$NODE" $v scheduledjobs.raftcron.dev -A yes; done
check "$NODE" patch scheduledjobs.raftcron.dev "$OTHER" yes --subresource=status
for v in create patch; do check "$NODE" $v events.events.k8s.io "$OTHER" yes; done
for v in create get list watch delete; do check "$NODE" $v jobs.batch "$OTHER" yes; done
check "$NODE" get secrets "$OTHER" yes
# --- nodes: must not ---------------------------------------------------------------
check "$NODE" list secrets "$OTHER" no
check "$NODE" watch secrets "$OTHER" no
check "$NODE" patch scheduledjobs.raftcron.dev "$OTHER" no
check "$NODE" delete scheduledjobs.raftcron.dev "$OTHER" no
check "$NODE" update jobs.batch "$OTHER" no
check "$NODE" create pods "$OTHER" no
check "$NODE" delete pods "$NS" no
check "$NODE" create pods/exec "$NS" no
check "$NODE" patch "statefulsets.apps/$NODE" "$NS" no
check "$NODE" get "leases.coordination.k8s.io/$OP" "$NS" no
check "$NODE" patch configmaps "$NS" no
check "$NODE" create clusterroles.rbac.authorization.k8s.io -A no
check "$NODE" create serviceaccounts/token "$NS" no

if [[ $fail != 0 ]]; then
  echo "rbac-matrix: MISMATCH (see <-- above)" >&2
  exit 1
fi
echo "rbac-matrix: all as expected"
