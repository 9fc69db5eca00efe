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

step "the agents"
"${kubectl[@]}" -n airflow-agents get deployments,pods -o wide

cat <<MSG

The demo is running. In this shell:
  source $state/env
  \$ASO_KUBECTL -n airflow-agents get deployments
Stop it with:
  tests/ground/down.sh $state --purge
MSG
