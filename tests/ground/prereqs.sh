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
for tool in openssl curl; do have "$tool" || apt_install "$tool"; done
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
for tool in go cargo python3 openssl curl setsid pgrep; do
  have "$tool" || missing+=("$tool")
done
if have cargo; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >/dev/null 2>&1 || missing+=(rustfmt)
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >/dev/null 2>&1 || missing+=(clippy)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "[prereqs] ERROR: missing: ${missing[*]} (Go >= 1.24, Rust stable, Python >= 3.10 with venv, openssl, curl, procps, util-linux)" >&2
  exit 1
fi
