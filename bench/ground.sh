# Sourced by the bench scripts: tools, test assets, a test ground of its own (stopped on exit,
# with the operator the script started as $op_pid), the operator's chart RBAC, and helpers.
# Expects $root; sets $state, $py and k().
"$root/tests/ground/prereqs.sh"
eval "$("$root/tests/ground/assets.sh" all)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-secrets-operator/target}
state=$(mktemp -d "${TMPDIR:-/tmp}/aso-bench.XXXXXX")
op_pid=
finish() {
  [[ -n $op_pid ]] && kill "$op_pid" 2>/dev/null || true
  "$root/tests/ground/down.sh" "$state" --purge >/dev/null 2>&1 || true
}
trap finish EXIT
"$root/tests/ground/up.sh" "$state" >/dev/null
"$root/tests/ground/operator-rbac.sh" "$state" >/dev/null
# shellcheck disable=SC1091
source "$state/env"
k() { "$ASO_KUBECTL" "$@"; }
py="$ASO_MOTO_VENV/bin/python"
