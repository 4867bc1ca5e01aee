#!/usr/bin/env bash
# `make demo`: from a fresh clone to served models on a local Kubernetes with fake GPUs.
#
#   scripts/demo.sh        set everything up and show the ModelDeployments Ready
#   scripts/demo.sh down   stop the operator and the local control plane, remove their state
#
# Steps: Python environment; control plane binaries (built from pinned Go modules and cached;
# the first build takes about 10 minutes on 2 cores, later runs none); a local control plane with simulated
# H100 and L40S nodes; the operator chart installed the way a cluster admin would (CRDs,
# ServiceAccount, least-privilege ClusterRole); the operator on this machine with that
# ServiceAccount's token (pods are simulated by kwok here, so the operator cannot run in one);
# then the single-node examples, applied with kubectl. Engine pods become Ready without
# running vLLM: kwok plays the kubelet.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
state=${SOVEREIGN_CLUSTER_STATE:-$root/.state/cluster}
demo=$root/.state/demo
release=sovereign-operator
operator_ns=sovereign-system
metrics_port=${DEMO_METRICS_PORT:-18080}
health_port=${DEMO_HEALTH_PORT:-18081}
webhook_port=${DEMO_WEBHOOK_PORT:-18443}
examples=(examples/llama3-8b-single-gpu.yaml examples/llama3-70b-tp8.yaml)
python=$root/.venv/bin/python

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }

operator_pid() {  # the pid in the pid file, only if it is still our operator
  local pid
  [[ -f $demo/operator.pid ]] || return 1
  pid=$(cat "$demo/operator.pid")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q sovereign_operator.commands.run \
    && echo "$pid"
}

down() {
  step "Stopping the operator"
  if pid=$(operator_pid); then
    kill "$pid" && note "sent SIGTERM to $pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  else
    note "not running"
  fi
  step "Stopping the local control plane"
  if [[ -x $root/.venv/bin/sovereign ]]; then
    "$root/.venv/bin/sovereign" cluster down --state "$state" || true
  fi
  rm -rf "$demo"
  note "done; \`make demo\` starts again (the binaries stay cached)"
}

model_store() {  # model_store NAMESPACE: a bound PVC named model-store, as pvc:// sources need
  local ns=$1
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: model-store-$ns
spec:
  capacity: {storage: 2Ti}
  accessModes: [ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: /var/lib/sovereign/model-store}
  claimRef: {namespace: $ns, name: model-store}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: model-store, namespace: $ns}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: model-store-$ns
  resources: {requests: {storage: 2Ti}}
EOF
}

up() {
  step "1/7 Python environment (.venv)"
  make --no-print-directory venv

  step "2/7 Control plane binaries (kube-apiserver, etcd, kwok, kubectl, helm)"
  note "built once from pinned Go modules and cached; a cold build takes about 10 minutes on 2 cores"
  bin=$(bash e2e/cluster/build.sh | tail -1)
  export PATH="$bin:$PATH"

  step "3/7 Local control plane with simulated GPU nodes"
  "$root/.venv/bin/sovereign" cluster up --state "$state"
  export KUBECONFIG=$state/kubeconfig
  # llama3-70b-tp8.yaml keeps its pods in an EU region; give the H100 pool that label.
  kubectl label nodes -l nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 \
    node-restriction.kubernetes.io/region=eu-central --overwrite >/dev/null

  step "4/7 Operator chart: CRDs, ServiceAccount, least-privilege ClusterRole"
  mkdir -p "$demo"
  export HELM_CACHE_HOME=$demo/helm/cache HELM_CONFIG_HOME=$demo/helm/config HELM_DATA_HOME=$demo/helm/data
  helm upgrade --install "$release" charts/sovereign-operator --namespace "$operator_ns" \
    --create-namespace --set operator.enabled=false --wait >/dev/null
  note "installed release $release in $operator_ns (operator.enabled=false: it runs on this machine)"

  step "5/7 Operator, as the chart's ServiceAccount (TokenRequest token)"
  if pid=$(operator_pid); then kill "$pid"; sleep 1; fi
  "$python" -m sovereign_operator.local kubeconfig --admin-kubeconfig "$KUBECONFIG" \
    --out "$demo/operator.kubeconfig" --namespace "$operator_ns" --service-account "$release" >/dev/null
  # Audit checkpoints are signed with a key made once for the demo; the admission webhook is
  # registered by URL, since the operator runs on this machine beside the API server.
  [[ -f $demo/audit-key.pem ]] || "$root/.venv/bin/sovereign" audit keygen \
    --private-key "$demo/audit-key.pem" --public-key "$demo/audit-key.pub" >/dev/null
  nohup "$python" -m sovereign_operator.commands.run --kubeconfig "$demo/operator.kubeconfig" \
    --all-namespaces --operator-namespace "$operator_ns" --bind-address 127.0.0.1 \
    --metrics-port "$metrics_port" --health-port "$health_port" \
    --webhook-host 127.0.0.1 --webhook-port "$webhook_port" --webhook-cert-dir "$demo/webhook" \
    --audit-dir "$demo/audit" --audit-signing-key "$demo/audit-key.pem" \
    --audit-checkpoint-seconds 10 \
    >"$demo/operator.log" 2>&1 &
  echo $! >"$demo/operator.pid"
  for _ in $(seq 150); do
    curl -fsS "http://127.0.0.1:$health_port/readyz" >/dev/null 2>&1 && break
    operator_pid >/dev/null || { tail -20 "$demo/operator.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$health_port/readyz" >/dev/null || {
    echo "the operator did not become ready; see $demo/operator.log" >&2; exit 1; }
  note "pid $(cat "$demo/operator.pid"), log $demo/operator.log"

  step "6/7 The single-node examples"
  local applied=()
  for file in "${examples[@]}"; do
    read -r ns name < <("$python" -c 'import sys, yaml
meta = yaml.safe_load(open(sys.argv[1]))["metadata"]
print(meta["namespace"], meta["name"])' "$file")
    if ! kubectl get namespace "$ns" >/dev/null 2>&1; then
      kubectl create namespace "$ns" >/dev/null
      kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
    fi
    model_store "$ns"
    kubectl apply -f "$file"
    applied+=("$ns/$name")
  done

  step "7/7 Waiting for the models to be Ready"
  for item in "${applied[@]}"; do
    kubectl wait --for=condition=Ready "md/${item#*/}" -n "${item%%/*}" --timeout=180s
  done
  echo >&2
  kubectl get md -A

  cat >&2 <<EOF

Explore (in this shell: export KUBECONFIG=$KUBECONFIG PATH="$bin:\$PATH"):
  kubectl describe md llama3-70b -n clinical-ai       # conditions, plan, events
  kubectl get md -A -o wide                           # with the in-cluster endpoint
  kubectl get deploy,pods,svc,networkpolicy,pdb -n clinical-ai -l app.kubernetes.io/managed-by=sovereign-operator
  kubectl scale md/llama3-8b -n clinical-ai --replicas=2
  kubectl delete deploy llama3-8b-engine -n clinical-ai   # watch the operator restore it
  kubectl apply -f examples/modelpolicy-regulated.yaml    # then put the namespace under it:
  kubectl label ns clinical-ai data-classification=restricted
  kubectl get md,mpol -A                              # POLICY PolicyViolation; what breaks it:
  kubectl describe mpol regulated-workloads           # (running engines stay, rollouts are held)
  curl -s http://127.0.0.1:$metrics_port/metrics | grep ^sovereign_operator
  .venv/bin/sovereign audit verify $demo/audit/audit.log* --public-key $demo/audit-key.pub
  .venv/bin/sovereign report clinical-ai/llama3-70b --audit-dir $demo/audit --public-key $demo/audit-key.pub
  tail -f $demo/operator.log

Tear down: make demo-down
EOF
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
