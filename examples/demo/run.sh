#!/usr/bin/env bash
# The demo: builds or reuses the test assets, starts a local control plane and the Secrets Manager
# emulator, installs the Remote Execution agent stand-in with helm, writes example secrets, and
# shows the agents running. Everything stays up afterwards so that you can look around; the last
# lines say how to use it and how to stop it.
#
# Usage: examples/demo/run.sh     (state in $ASO_DEMO_DIR, default /tmp/aso-demo)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
demo=$root/examples/demo
state=${ASO_DEMO_DIR:-/tmp/aso-demo}
step() { printf '\n==> %s\n' "$*" >&2; }

"$root/tests/ground/prereqs.sh"
step "test assets (built once into ~/.cache/airflow-secrets-operator; ~10 min the first time)"
eval "$("$root/tests/ground/assets.sh" kube etcd kwok helm moto)"

if [[ -d $state/pids ]]; then
  step "stopping the previous demo in $state"
  "$root/tests/ground/down.sh" "$state" --purge
fi
step "starting the control plane and the Secrets Manager emulator"
"$root/tests/ground/up.sh" "$state"
# shellcheck disable=SC1091
source "$state/env"
kubectl=("$ASO_KUBECTL")

step "installing the agent release 'astro-agent' in namespace 'airflow-agents' with helm"
"${kubectl[@]}" create namespace airflow-agents >/dev/null
"$ASO_HELM" install astro-agent "$root/tests/agent-chart" -n airflow-agents \
  -f "$demo/agent-values.yaml" --wait --timeout 120s >/dev/null

step "writing example secrets to Secrets Manager (emulator)"
"$ASO_MOTO_VENV/bin/python" "$demo/seed_secrets.py" "$demo/secrets.json"

step "building the operator"
(cd "$root" && cargo build --quiet --bin airflow-secrets-operator)
step "installing the CRD and starting the operator (logs: $state/logs/operator.log)"
"${kubectl[@]}" apply --server-side -f "$root/crds/" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid "${CARGO_TARGET_DIR:-$root/target}/debug/airflow-secrets-operator" run --http-address "127.0.0.1:$port" \
  >"$state/logs/operator.log" 2>&1 </dev/null &
echo $! >"$state/pids/operator"
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done

step "applying the binding (examples/demo/binding.yaml)"
"${kubectl[@]}" apply --server-side -f "$demo/binding.yaml" >/dev/null
until [[ $("${kubectl[@]}" -n airflow-agents get asb agents -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]; do
  sleep 0.2
done
"${kubectl[@]}" -n airflow-agents rollout status deployment/astro-agent-worker-default-worker --timeout 60s >/dev/null

step "the binding"
"${kubectl[@]}" -n airflow-agents get airflowsecretbindings
"${kubectl[@]}" -n airflow-agents get asb agents -o 'jsonpath={range .status.entries[*]}{.kind}{"\t"}{.name}{"\t"}{.envName}{"\t"}{.state}{"\n"}{end}'

step "the agents, rolled out with the values (env names and where they come from; values stay in the Secret)"
"${kubectl[@]}" -n airflow-agents get deployments,pods
for d in astro-agent-worker-default-worker astro-agent-dag-processor astro-agent-triggerer astro-agent-sentinel; do
  echo "--- $d"
  "${kubectl[@]}" -n airflow-agents get deployment "$d" \
    -o 'jsonpath={range .spec.template.spec.containers[0].env[*]}{.name}{"\t"}{.valueFrom.secretKeyRef.name}{"\n"}{end}'
done
echo "(the sentinel is left alone by default)"

cat <<MSG

The demo is running. In this shell:
  source $state/env
  \$ASO_KUBECTL -n airflow-agents get asb,secrets,deployments
  curl -s http://127.0.0.1:$port/metrics
Rotate a secret and watch the agents roll once:
  \$ASO_MOTO_VENV/bin/python -c 'import boto3; boto3.client("secretsmanager").put_secret_value(SecretId="airflow/variables/environment", SecretString="rotated")'
  \$ASO_KUBECTL -n airflow-agents get replicasets -w
Stop it with:
  tests/ground/down.sh $state --purge
MSG
