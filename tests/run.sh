#!/usr/bin/env bash
# Runs every test: builds or reuses the test assets, starts the test ground (real control plane,
# Secrets Manager emulator, helm), runs lint and the whole Rust test suite against it, and stops
# exactly what it started, also when a test fails. Logs of a failed run are kept and named.
#
# Usage: tests/run.sh [extra cargo test arguments, e.g. a test name filter]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
t0=$SECONDS

step() { printf '\n==> %s\n' "$*" >&2; }

step "checking tools"
"$root/tests/ground/prereqs.sh"

step "test assets (built once into ~/.cache/airflow-secrets-operator)"
eval "$("$root/tests/ground/assets.sh" all)"
export ASO_AIRFLOW_VENV ASO_AIRFLOW33_VENV

step "lint: rustfmt and clippy"
cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings

step "static binary and container image (tests/image.sh)"
"$root/tests/image.sh"

step "building the tests"
cargo test --locked --no-run

state=$(mktemp -d "${TMPDIR:-/tmp}/aso-ground.XXXXXX")
finish() {
  local rc=$?
  set +e
  if ! "$root/tests/ground/down.sh" "$state"; then
    echo "[run] ERROR: the test ground did not stop cleanly" >&2
    rc=1
  fi
  if [[ $rc == 0 ]]; then
    rm -rf "$state"
  else
    echo "[run] FAILED; logs of the test ground are kept in $state/logs" >&2
  fi
  echo "[run] total $((SECONDS - t0)) s" >&2
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

step "starting the test ground"
"$root/tests/ground/up.sh" "$state"
step "installing the operator's chart: the operator under test gets exactly its rights"
"$root/tests/ground/operator-rbac.sh" "$state"
# shellcheck disable=SC1091
source "$state/env"

step "running the tests"
cargo test --locked --no-fail-fast "$@"
