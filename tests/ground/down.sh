#!/usr/bin/env bash
# Stops exactly the processes tests/ground/up.sh STATE_DIR recorded, newest first,
# and fails if any of them is still alive afterwards.
# Usage: tests/ground/down.sh STATE_DIR [--purge]   (--purge also removes STATE_DIR)
set -uo pipefail
state=${1:?usage: down.sh STATE_DIR [--purge]}
state=${state%/}

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
# Anything still running with the state directory on its command line is ours too (for
# instance when pids/ was lost): stop it as well.
strays() {
  { pgrep -f -- "$state/"
    for p in $(pgrep -f moto_server); do
      [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$state" ]] && echo "$p"
    done
  } | grep -vx -e "$$" -e "$PPID" || true
}
for p in $(strays); do kill -TERM "$p" 2>/dev/null; done
deadline=$((SECONDS + 10))
while [[ -n $(strays) ]] && ((SECONDS < deadline)); do sleep 0.1; done
for p in $(strays); do kill -KILL "$p" 2>/dev/null; done
sleep 0.2
left=()
for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
for p in $(strays); do alive "$p" && left+=("$p"); done
if ((${#left[@]})); then
  printf '[ground] ERROR: processes still running after stop: %s\n' "${left[*]}" >&2
  exit 1
fi
rm -rf "$state/pids"
if [[ ${2:-} == --purge ]]; then rm -rf "$state"; fi
exit 0
