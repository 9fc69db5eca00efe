#!/usr/bin/env bash
# What Secrets Manager costs: the operator on the local control plane against the emulator, for
# N secrets (default: 100 and 1000; pass sizes as arguments, e.g. `bench/secretsmanager.sh 10000`)
# in four shapes of bindings:
#   discovery  one binding discovering the prefix that holds the N secrets
#   per-conn   N bindings with one explicit connection each (the usual ESO migration)
#   shared     100 bindings with N/100 explicit connections each under the same prefix
#   sparse     N bindings with one explicit connection each, whose prefix also holds 10,000
#              unrelated secrets (the view must list by name, not the whole prefix)
# For each: time from the end of `kubectl apply` until every managed Secret exists, p50 / p99 from
# a binding's creation to its Secret's (watch events, timestamped here), Secrets Manager calls
# and value bytes of one idle refresh interval and of one changed secret, an operator restart
# (calls, value bytes and Secret writes until every binding has reconciled again, and how long
# that took), peak RSS (VmHWM: of the first process, at the end of its run; of the restarted
# one, once every binding has reconciled again), and process start → ready (/readyz: the
# binding API is listed). Calls are counted by the operator (`airflow_secrets_secretsmanager_*`)
# with AWS's page sizes (100 per ListSecrets page, 20 ids per BatchGetSecretValue), so they are
# the calls AWS would bill.
# `shapes="per-conn sparse" bench/secretsmanager.sh 1000` runs some shapes only; `interval=3`
# sets the bindings' refreshInterval in seconds (default 20); `appliers=4` applies the bindings
# with four parallel `kubectl apply`s (faster creation, so more of them queue at once).
# The discovery shape runs next to the agent release (tests/agent-chart, `astro-agent`: worker,
# DAG processor, triggerer Deployments in the operator's cache); `injection=Env` (or
# `KubernetesBackend`, `EnvFrom`) makes its binding deliver to that release instead of
# `SecretOnly`.
# Prints one table per size; docs/benchmarks.md records the figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sizes=("$@")
((${#sizes[@]})) || sizes=(100 1000)
interval=${interval:-20}
# shellcheck source=bench/ground.sh
source "$root/bench/ground.sh"
# The static release binary the image ships (tests/image.sh builds the same).
cargo build -q --release --locked --target x86_64-unknown-linux-musl --bin airflow-secrets-operator
bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/airflow-secrets-operator
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
metric() { # sum of the samples of one metric
  curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" 'index($0, m) == 1 {n += $NF} END {printf "%d", n}'
}
snapshot() { # list batch get bytes
  echo "$(metric 'airflow_secrets_secretsmanager_calls_total{operation="ListSecrets"') $(metric 'airflow_secrets_secretsmanager_calls_total{operation="BatchGetSecretValue"') $(metric 'airflow_secrets_secretsmanager_calls_total{operation="GetSecretValue"') $(metric airflow_secrets_secretsmanager_value_bytes_total)"
}
diff_calls() { # before after -> "L list + B batch + G get = T calls, X value bytes"
  read -r l0 b0 g0 v0 <<<"$1"; read -r l1 b1 g1 v1 <<<"$2"
  echo "$((l1 - l0)) + $((b1 - b0)) + $((g1 - g0)) = $((l1 - l0 + b1 - b0 + g1 - g0)) | $((v1 - v0))"
}
waited() { # seconds calls waited for the client-side rate limit
  curl -s "http://127.0.0.1:$port/metrics" | awk 'index($0, "airflow_secrets_secretsmanager_rate_limit_wait_seconds_total") == 1 {n += $NF} END {printf "%.1f", n}'
}
managed() { k -n "$1" get secrets -l app.kubernetes.io/managed-by=airflow-secrets-operator -o name | wc -l; }

seed() { # n prefix
  N=$1 P=$2 "$py" - <<'EOF'
import os
import boto3
c = boto3.client("secretsmanager")
for i in range(int(os.environ["N"])):
    c.create_secret(Name=f"{os.environ['P']}/c{i:05}", SecretString=f"postgres://user:pass@host-{i}:5432/db")
EOF
}

seed_unrelated() { # prefix: 10,000 secrets next to the bench's ids
  P=$1 "$py" - <<'EOF'
import os
import boto3
c = boto3.client("secretsmanager")
for i in range(10000):
    c.create_secret(Name=f"{os.environ['P']}/z{i:05}", SecretString="unrelated")
EOF
}

# Timestamps the objects a watch reports: "<epoch seconds> <name>" per event.
watch_times() { # namespace resource out-file [selector]
  local ns=$1 res=$2 out=$3 sel=${4:-}
  k -n "$ns" get "$res" ${sel:+-l "$sel"} --watch -o name 2>/dev/null |
    while read -r line; do echo "$EPOCHREALTIME ${line##*/}"; done >"$out" &
  watchers+=($!)
}
# p50 and p99 of (Secret first seen − binding first seen) over bindings named bNNNNN.
latency() { # bindings-file secrets-file
  awk 'NR == FNR {if (!($2 in b)) b[$2] = $1; next}
       {n = $2; sub(/-airflow$/, "", n); if ((n in b) && !(n in s)) {s[n] = $1 - b[n]}}
       END {for (n in s) print s[n]}' "$1" "$2" | sort -g |
    awk '{v[NR] = $1} END {if (NR == 0) {print "–"; exit}
         i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
         printf "%.2f / %.2f s", v[i50], v[i99]}'
}
versions() { k -n "$1" get secrets -l app.kubernetes.io/managed-by=airflow-secrets-operator \
  -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.resourceVersion}{"\n"}{end}' | sort; }
reconciled() { curl -s "http://127.0.0.1:$port/metrics" | grep -c '^airflow_secrets_reconciles_total{' || true; }
start_operator() { # namespace
  KUBECONFIG=$ASO_OPERATOR_KUBECONFIG RUST_LOG=info "$bin" run --namespace "$1" \
    --http-address "127.0.0.1:$port" >>"$state/$1.log" 2>&1 &
  op_pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
}
stop_operator() { kill "$op_pid"; wait "$op_pid" 2>/dev/null || true; op_pid=; }

bindings() { # shape n prefix namespace
  local shape=$1 n=$2 p=$3 ns=$4
  case $shape in
    discovery)
      local target='{injection: SecretOnly}'
      [[ ${injection:-SecretOnly} != SecretOnly ]] &&
        target="{workloads: {helmRelease: astro-agent}, injection: $injection}"
      printf -- '---\napiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {name: all, namespace: %s}\nspec:\n  discovery: {connectionsPrefix: %s}\n  target: %s\n  refreshInterval: %ss\n' "$ns" "$p" "$target" "$interval" ;;
    per-conn | sparse)
      for ((i = 0; i < n; i++)); do
        printf -- '---\napiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {name: b%05d, namespace: %s}\nspec:\n  connections: [{connId: c%05d, secretId: %s/c%05d}]\n  target: {injection: SecretOnly}\n  refreshInterval: %ss\n' "$i" "$ns" "$i" "$p" "$i" "$interval"
      done ;;
    shared)
      local per=$((n / 100))
      for ((b = 0; b < 100; b++)); do
        printf -- '---\napiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {name: s%03d, namespace: %s}\nspec:\n  connections:\n' "$b" "$ns"
        for ((j = 0; j < per; j++)); do
          local i=$((b * per + j))
          printf '    - {connId: c%05d, secretId: %s/c%05d}\n' "$i" "$p" "$i"
        done
        printf '  target: {injection: SecretOnly}\n  refreshInterval: %ss\n' "$interval"
      done ;;
  esac
}

run_shape() { # shape n
  local shape=$1 n=$2 ns p count wc t_start t_ready t_applied t_synced t_restart t_resynced s0 s1 s2 s3 sc rss rss_restart lat v0 v1 writes
  ns="bench-$shape-$n"
  p="bench/$n/connections"
  [[ $shape == sparse ]] && p="bench/sparse/$n/connections"
  count=$([[ $shape == discovery ]] && echo 1 || { [[ $shape == shared ]] && echo 100 || echo "$n"; })
  k create namespace "$ns" >/dev/null
  if [[ $shape == discovery ]]; then
    "$ASO_HELM" install astro-agent "$root/tests/agent-chart" -n "$ns" --wait \
      --set resourceNamePrefix=astro-agent --set 'workers[0].name=default-worker' >/dev/null
  fi
  bindings "$shape" "$n" "$p" "$ns" >"$state/$ns.yaml"
  t_start=$(now)
  start_operator "$ns"
  t_ready=$(now)
  watchers=()
  watch_times "$ns" airflowsecretbindings "$state/$ns.bindings"
  watch_times "$ns" secrets "$state/$ns.secrets" app.kubernetes.io/managed-by=airflow-secrets-operator
  sleep 1
  # Applied by `appliers` parallel `kubectl apply`s (default 1; one is ~15 objects/s on the local
  # control plane, so 10,000 take ~12 minutes with one).
  awk -v out="$state/$ns.part" -v k="${appliers:-1}" '/^---$/ {n++} {print > (out (n % k))}' "$state/$ns.yaml"
  local apply_pids=()
  for part in "$state/$ns".part*; do k apply -f "$part" >/dev/null & apply_pids+=($!); done
  wait "${apply_pids[@]}"
  t_applied=$(now)
  until (($(managed "$ns") >= count)); do sleep 0.2; done
  t_synced=$(now)
  sc=$(snapshot)
  wc=$(waited)
  sleep 1; kill "${watchers[@]}" 2>/dev/null || true
  lat=$(latency "$state/$ns.bindings" "$state/$ns.secrets")
  # Let every binding pass its first refresh, then count one whole interval.
  sleep $((interval + 5))
  s0=$(snapshot); sleep "$interval"; s1=$(snapshot)
  # One changed secret: counted over the next interval.
  "$py" -c "import boto3; boto3.client('secretsmanager').put_secret_value(SecretId='$p/c00007', SecretString='postgres://rotated@host/$shape')"
  sleep $((interval + 3))
  s2=$(snapshot)
  rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$op_pid/status")
  # Restart: until every binding has reconciled again (counters start at 0 in the new process).
  v0=$(versions "$ns")
  stop_operator
  t_restart=$(now)
  start_operator "$ns"
  until (($(reconciled) >= count)); do sleep 0.1; done
  t_resynced=$(now)
  s3=$(snapshot)
  rss_restart=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$op_pid/status")
  sleep 3
  v1=$(versions "$ns")
  writes=$(comm -13 <(echo "$v0") <(echo "$v1") | wc -l)
  stop_operator
  k delete namespace "$ns" --wait=false >/dev/null
  printf '| %s | %s | %s s | %s | %s, %s s | %s | %s | %s, %s Secret writes, %s s | %s / %s MiB | %s s |\n' "$shape" "$count" \
    "$(secs "$t_applied" "$t_synced")" "$lat" "$(diff_calls "0 0 0 0" "$sc")" "$wc" "$(diff_calls "$s0" "$s1")" "$(diff_calls "$s1" "$s2")" \
    "$(diff_calls "0 0 0 0" "$s3")" "$writes" "$(secs "$t_restart" "$t_resynced")" "$rss" "$rss_restart" "$(secs "$t_start" "$t_ready")"
}

for n in "${sizes[@]}"; do
  seed "$n" "bench/$n/connections"
  echo
  echo "## $n secrets (refreshInterval ${interval}s)"
  echo "| bindings | count | apply end → all Secrets | creation → Secret p50 / p99 | creation until all Secrets: calls \| value bytes, rate-limit wait | idle interval: List + Batch + Get = calls \| value bytes | one changed secret: calls \| value bytes | restart: calls \| value bytes, Secret writes, until all reconciled | peak RSS: run / after the restart | start → ready |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for shape in ${shapes:-discovery per-conn shared sparse}; do
    if [[ $shape == sparse ]]; then
      seed "$n" "bench/sparse/$n/connections"
      seed_unrelated "bench/sparse/$n/connections"
    fi
    run_shape "$shape" "$n"
  done
done
