#!/usr/bin/env bash
# Benchmark of the reconcile core on the local control plane + Secrets Manager emulator:
#   1. 20 idle bindings (one connection each, refreshInterval 10s) on one agent release: the
#      operator's Kubernetes requests over 30 s — Deployment LISTs, Secret / Deployment writes,
#      status writes — counted from the API server's apiserver_request_total (nothing else here
#      LISTs Deployments or writes Secrets);
#   2. one discovery binding over N secrets (default 10,000): apply → Ready, the size of the
#      binding object, status writes and reconcile errors over 30 s after it settled.
# Prints one table; docs/benchmarks.md records the figures.
#
# Usage: bench/reconcile.sh [N]      (builds the test assets and the debug binary if needed)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
large=${1:-10000}
# shellcheck source=bench/ground.sh
source "$root/bench/ground.sh"
cargo build -q --bin airflow-secrets-operator
bin=$CARGO_TARGET_DIR/debug/airflow-secrets-operator

# Sum of apiserver_request_total per "VERB resource[/subresource]" for our resources.
requests() {
  k get --raw /metrics | awk '
    /^apiserver_request_total\{/ {
      match($0, /resource="[^"]*"/); r = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /subresource="[^"]*"/); s = substr($0, RSTART + 13, RLENGTH - 14)
      match($0, /verb="[^"]*"/); v = substr($0, RSTART + 6, RLENGTH - 7)
      if (r == "deployments" || r == "secrets" || r == "airflowsecretbindings") {
        key = v " " r (s == "" ? "" : "/" s); n[key] += $NF
      }
    }
    END { for (key in n) print key, n[key] }' | sort
}
delta() { # before-file after-file "VERB resource"
  local b a
  b=$(awk -v k="$3" '$1 " " $2 == k {print $3}' "$1"); a=$(awk -v k="$3" '$1 " " $2 == k {print $3}' "$2")
  echo $(( ${a:-0} - ${b:-0} ))
}
start_operator() { # namespace log
  KUBECONFIG=$ASO_OPERATOR_KUBECONFIG RUST_LOG=info "$bin" run --namespace "$1" \
    --http-address 127.0.0.1:0 >"$2" 2>&1 &
  op_pid=$!
}

# 1. Idle bindings.
ns=bench-idle
k create namespace "$ns" >/dev/null
"$ASO_HELM" install astro-agent "$root/tests/agent-chart" -n "$ns" --wait \
  --set resourceNamePrefix=astro-agent --set 'workers[0].name=default-worker' >/dev/null
"$py" - <<'EOF'
import boto3
c = boto3.client("secretsmanager")
for i in range(20):
    c.create_secret(Name=f"bench-idle/c{i:02}", SecretString=f"postgres://h/{i}")
EOF
start_operator "$ns" "$state/operator-idle.log"
for i in $(seq -w 0 19); do
  cat <<EOF
---
apiVersion: airflow-secrets.io/v1alpha1
kind: AirflowSecretBinding
metadata: {name: b$i, namespace: $ns}
spec:
  connections: [{connId: c$i, secretId: bench-idle/c$i}]
  target: {workloads: {helmRelease: astro-agent}}
  refreshInterval: 10s
EOF
done | k apply -f - >/dev/null
k -n "$ns" wait --for=condition=Ready asb --all --timeout=120s >/dev/null
rs_after_apply=$(k -n "$ns" get rs -o name | wc -l)
sleep 12
requests >"$state/before"
sleep 30
requests >"$state/after"
rs_idle=$(k -n "$ns" get rs -o name | wc -l)
kill "$op_pid"; wait "$op_pid" 2>/dev/null || true; op_pid=

# 2. One discovery binding over many secrets.
ns2=bench-large
k create namespace "$ns2" >/dev/null
LARGE=$large "$py" - <<'EOF'
import os
import boto3
c = boto3.client("secretsmanager")
for i in range(int(os.environ["LARGE"])):
    c.create_secret(Name=f"bench-large/connections/conn_{i:05}", SecretString=f"postgres://u:p@h/{i}")
EOF
start_operator "$ns2" "$state/operator-large.log"
t0=$(date +%s.%N)
k apply -f - >/dev/null <<EOF
apiVersion: airflow-secrets.io/v1alpha1
kind: AirflowSecretBinding
metadata: {name: large, namespace: $ns2}
spec:
  discovery: {connectionsPrefix: bench-large/connections}
  target: {injection: SecretOnly}
  refreshInterval: 10s
EOF
k -n "$ns2" wait --for=condition=Ready asb/large --timeout=300s >/dev/null
t1=$(date +%s.%N)
sleep 5
requests >"$state/large-before"
sleep 30
requests >"$state/large-after"
size=$(k -n "$ns2" get asb large -o json | wc -c)
status_size=$(k -n "$ns2" get asb large -o jsonpath='{.status}' | wc -c)
synced=$(k -n "$ns2" get asb large -o jsonpath='{.status.syncedEntries}')
errors=$(grep -c "reconcile error" "$state/operator-large.log" || true)
kill "$op_pid"; wait "$op_pid" 2>/dev/null || true; op_pid=

cat <<EOF

## 20 idle bindings (refreshInterval 10s) on one release, 30 s after they settled
| what | count |
|---|---|
| Deployment LISTs | $(delta "$state/before" "$state/after" "LIST deployments") |
| Deployment writes (PATCH) | $(delta "$state/before" "$state/after" "PATCH deployments") |
| Secret writes (POST / PATCH / DELETE) | $(( $(delta "$state/before" "$state/after" "POST secrets") + $(delta "$state/before" "$state/after" "PATCH secrets") + $(delta "$state/before" "$state/after" "DELETE secrets") )) |
| Secret GETs | $(delta "$state/before" "$state/after" "GET secrets") |
| binding status writes (PATCH, 20 bindings x 3 refreshes each) | $(delta "$state/before" "$state/after" "PATCH airflowsecretbindings/status") |
| ReplicaSets after apply / after idle (3 targeted Deployments + sentinel) | $rs_after_apply / $rs_idle |

## One discovery binding over $large secrets (SecretOnly)
| what | value |
|---|---|
| apply -> Ready | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s |
| syncedEntries | $synced |
| binding object / its status | $size / $status_size bytes |
| status writes in 30 s (refreshInterval 10s) | $(delta "$state/large-before" "$state/large-after" "PATCH airflowsecretbindings/status") |
| Secret writes in 30 s | $(( $(delta "$state/large-before" "$state/large-after" "PATCH secrets") + $(delta "$state/large-before" "$state/large-after" "POST secrets") )) |
| reconcile errors logged | $errors |
EOF
