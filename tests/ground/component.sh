#!/usr/bin/env bash
# Stops and starts one component of the test ground (tests/ground/up.sh) with its original
# command line, for the control-plane fault tests (tests/control_plane_faults.rs).
#
# Usage: tests/ground/component.sh STATE_DIR stop  NAME [SIGNAL]   (default KILL: a crash)
#        tests/ground/component.sh STATE_DIR start NAME [EXTRA ARGS…]
#        tests/ground/component.sh STATE_DIR restart NAME [SIGNAL]
#   NAME: etcd or kube-apiserver (the others work too, without a health check).
# `stop` saves the command line and working directory under STATE_DIR/cmdline/NAME before it
# signals the process group and waits for it to end; `start` runs the saved command again (in its
# own session, logging to logs/NAME.log, its pid in pids/NAME, as up.sh does), with EXTRA ARGS
# appended, and waits until the component is healthy. down.sh stops it as any other.
set -euo pipefail
state=${1:?usage: component.sh STATE_DIR stop|start|restart NAME ...}
verb=${2:?usage: component.sh STATE_DIR stop|start|restart NAME ...}
name=${3:?usage: component.sh STATE_DIR stop|start|restart NAME ...}
shift 3
state=$(cd "$state" && pwd)
saved=$state/cmdline/$name
mkdir -p "$state/cmdline"

log() { printf '[ground] %s\n' "$*" >&2; }
fail() { printf '[ground] ERROR: %s\n' "$*" >&2; exit 1; }
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

stop() {
  local signal=${1:-KILL} pid
  pid=$(cat "$state/pids/$name" 2>/dev/null) || fail "no pid recorded for $name"
  alive "$pid" || fail "$name (pid $pid) is not running"
  # NUL-separated, exactly as it was started. The recorded pid must be the component itself (not
  # a shell around it): its program is named NAME.
  local program
  program=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)
  [[ $(basename "$program") == "$name" ]] \
    || fail "pid $pid recorded for $name runs $program, not $name"
  cp "/proc/$pid/cmdline" "$saved.tmp"
  readlink "/proc/$pid/cwd" >"$saved.cwd"
  mv "$saved.tmp" "$saved"
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid"
  local deadline=$((SECONDS + 30))
  # Gone, not merely a zombie leader: the other threads of a killed process may still hold its
  # listening sockets for a moment (a restart would then fail with "address already in use").
  while [[ -d /proc/$pid ]] && { alive "$pid" || (($(ls "/proc/$pid/task" 2>/dev/null | wc -l) > 1)); }; do
    ((SECONDS < deadline)) || fail "$name (pid $pid) still running 30 s after SIG$signal"
    sleep 0.05
  done
}

healthy() {
  case $name in
    etcd)
      local url
      url=$(tr '\0' '\n' <"$saved" | grep -A1 -x -- --listen-client-urls | tail -n1)
      curl -fsS "$url/health" ;;
    kube-apiserver)
      curl -fsS --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" \
        --key "$state/pki/admin.key" "$(grep -m1 'server:' "$state/kubeconfig" | awk '{print $2}')/readyz" ;;
    *) true ;;
  esac
}

start() {
  [[ -f $saved ]] || fail "no saved command line for $name (stop it first)"
  local -a argv
  mapfile -d '' argv <"$saved"
  cd "$(cat "$saved.cwd")"
  # The pid of setsid itself, which execs the component (a background job is no group leader).
  setsid "${argv[@]}" "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name"
  local pid deadline=$((SECONDS + 60))
  pid=$(cat "$state/pids/$name")
  until healthy >/dev/null 2>&1; do
    alive "$pid" || { tail -n 20 "$state/logs/$name.log" >&2; fail "$name exited during start-up"; }
    ((SECONDS < deadline)) || fail "$name was not healthy 60 s after its start"
    sleep 0.1
  done
}

case $verb in
  stop) stop "$@" ;;
  start) start "$@" ;;
  restart) stop "$@"; start ;;
  *) fail "unknown verb $verb (stop, start, restart)" ;;
esac
