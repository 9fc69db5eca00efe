#!/usr/bin/env bash
# Installs the operator's own Helm chart into the test ground (namespace aso-system, release
# aso-e2e) and writes $STATE/operator.kubeconfig, which impersonates the chart's ServiceAccount.
# The end-to-end tests run the operator with that kubeconfig, so they pass only with exactly
# the rights the chart grants.
#
# Usage: tests/ground/operator-rbac.sh STATE_DIR   (after tests/ground/up.sh STATE_DIR)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${1:?usage: operator-rbac.sh STATE_DIR}
# shellcheck disable=SC1091
source "$state/env"
kubectl=("$ASO_KUBECTL" --kubeconfig "$KUBECONFIG")
"${kubectl[@]}" create namespace aso-system >/dev/null
"$ASO_HELM" install aso-e2e "$root/charts/airflow-secrets-operator" -n aso-system \
  --set image.repository=example.invalid/airflow-secrets-operator \
  --set sources.allowInline=true --wait --timeout 60s >/dev/null
sa=$("${kubectl[@]}" -n aso-system get deployment -l app.kubernetes.io/instance=aso-e2e \
  -o 'jsonpath={.items[0].spec.template.spec.serviceAccountName}')
[[ -n $sa ]] || { echo "[operator-rbac] ERROR: the chart's Deployment names no ServiceAccount" >&2; exit 1; }
python3 - "$KUBECONFIG" "$state/operator.kubeconfig" "$sa" <<'PY'
import sys
src, dst, sa = sys.argv[1:]
text = open(src).read()
groups = "[system:serviceaccounts, system:serviceaccounts:aso-system, system:authenticated]"
marker = "    client-key: "
lines = []
for line in text.splitlines():
    lines.append(line)
    if line.startswith(marker):
        lines.append(f"    as: system:serviceaccount:aso-system:{sa}")
        lines.append(f"    as-groups: {groups}")
open(dst, "w").write("\n".join(lines) + "\n")
PY
grep -q "as: system:serviceaccount:aso-system:$sa" "$state/operator.kubeconfig"
echo "export ASO_OPERATOR_KUBECONFIG=$state/operator.kubeconfig" >>"$state/env"
echo "[operator-rbac] the operator under test runs as system:serviceaccount:aso-system:$sa" >&2
