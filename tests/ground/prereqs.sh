#!/usr/bin/env bash
# Checks (and where possible installs) the tools the test ground needs, naming what is missing.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if have apt-get && [[ $(id -u) == 0 ]]; then
    echo "[prereqs] installing $* with apt-get" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1 || true
  fi
}
want=()
for tool in openssl curl file buildah; do have "$tool" || want+=("$tool"); done
have musl-gcc || want+=(musl-tools)
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
((${#want[@]} == 0)) || apt_install "${want[@]}"
for tool in go cargo python3 openssl curl setsid pgrep buildah musl-gcc; do
  have "$tool" || missing+=("$tool")
done
if have cargo; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >/dev/null 2>&1 || missing+=(rustfmt)
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >/dev/null 2>&1 || missing+=(clippy)
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || missing+=(rust-musl-target)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "[prereqs] ERROR: missing: ${missing[*]} (Go >= 1.24, Rust stable with the x86_64-unknown-linux-musl target, Python >= 3.10 with venv, openssl, curl, procps, util-linux, musl-tools, buildah)" >&2
  exit 1
fi
