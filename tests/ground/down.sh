#!/usr/bin/env bash
# Stops exactly the processes tests/ground/up.sh STATE_DIR recorded, newest first,
# and fails if any of them is still alive afterwards.
# Usage: tests/ground/down.sh STATE_DIR [--purge]   (--purge also removes STATE_DIR)
set -uo pipefail
state=${1:?usage: down.sh STATE_DIR [--purge]}
[[ -d $state/pids ]] || exit 0

# Alive means running: a zombie (exited, not yet reaped by its parent) does not count.
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}
pids=()
for name in operator kwok kube-scheduler kube-controller-manager kube-apiserver moto etcd; do
  f=$state/pids/$name
  [[ -f $f ]] || continue
  pid=$(cat "$f")
  # Each component was started with setsid: signal its whole process group
  # (moto's server, for instance, may fork).
  if alive "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; fi
  pids+=("$pid")
done
deadline=$((SECONDS + 15))
for pid in "${pids[@]}"; do
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; fi
done
sleep 0.2
left=()
for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
# Anything still running with the state directory on its command line is ours too.
while read -r p; do
  [[ -n $p && $p != "$$" && $p != "$PPID" ]] && left+=("$p")
done < <(pgrep -f -- "$state/" || true)
if ((${#left[@]})); then
  printf '[ground] ERROR: processes still running after stop: %s\n' "${left[*]}" >&2
  exit 1
fi
rm -rf "$state/pids"
if [[ ${2:-} == --purge ]]; then rm -rf "$state"; fi
exit 0
