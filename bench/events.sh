#!/usr/bin/env bash
# Event-driven refresh: how long from a PutSecretValue and its EventBridge event in SQS to the
# managed Secret and to the agent worker's new ReplicaSet, over N changes (default 100), with the
# bindings' polling at 1 h (so every change arrives through the event). The operator (the static
# release binary the image ships) consumes a queue on the emulator; each change is a
# PutSecretValue followed by the CloudTrail event EventBridge would deliver for it. Prints p50 /
# p99 / max of both latencies and the Secrets Manager calls per change; docs/benchmarks.md
# records the figures. Usage: bench/events.sh [N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
n=${1:-100}
# shellcheck source=bench/ground.sh
source "$root/bench/ground.sh"
# The emulator serves SQS on the same endpoint as Secrets Manager.
export AWS_ENDPOINT_URL_SQS=$ASO_MOTO_ENDPOINT
cargo build -q --release --locked --target x86_64-unknown-linux-musl --bin airflow-secrets-operator
bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/airflow-secrets-operator
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

ns=bench-events
k create namespace "$ns" >/dev/null
"$ASO_HELM" install astro-agent "$root/tests/agent-chart" -n "$ns" --wait \
  --set resourceNamePrefix=astro-agent --set 'workers[0].name=default-worker' >/dev/null
queue=$("$py" - <<'EOF'
import boto3
boto3.client("secretsmanager").create_secret(Name="bench-events/db", SecretString="postgresql://u:v0@db/x")
print(boto3.client("sqs").create_queue(QueueName="aso-bench-events")["QueueUrl"])
EOF
)
KUBECONFIG=$ASO_OPERATOR_KUBECONFIG RUST_LOG=info \
  "$bin" run --namespace "$ns" --http-address "127.0.0.1:$port" --sqs-queue-url "$queue" \
  >"$state/operator.log" 2>&1 &
op_pid=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
# The operator's log outlives the test ground when the run fails.
trap 'rc=$?; ((rc)) && cp "$state/operator.log" "${TMPDIR:-/tmp}/aso-bench-events-operator.log"; finish' EXIT
k apply -f - >/dev/null <<EOF
apiVersion: airflow-secrets.io/v1alpha1
kind: AirflowSecretBinding
metadata: {name: agents, namespace: $ns}
spec:
  connections: [{connId: db, secretId: bench-events/db}]
  target: {workloads: {helmRelease: astro-agent}}
  refreshInterval: 1h
EOF
rs() { k -n "$ns" get rs -o name | grep -c 'astro-agent-worker-default-worker-' || true; }
until [[ $(rs) -ge 2 ]]; do sleep 0.2; done
sleep 3

N=$n NS=$ns QUEUE=$queue PORT=$port KUBECTL=$ASO_KUBECTL "$py" - <<'EOF'
import base64, json, os, subprocess, time, urllib.request
import boto3

n, ns, queue, port = int(os.environ["N"]), os.environ["NS"], os.environ["QUEUE"], os.environ["PORT"]
sm, sqs = boto3.client("secretsmanager"), boto3.client("sqs")
kubectl = os.environ["KUBECTL"]

def kget(*args):
    return subprocess.run([kubectl, "-n", ns, "get", *args], capture_output=True, text=True).stdout

def worker_rs():
    # The Deployment's revision grows with each new ReplicaSet (counting ReplicaSets would stop
    # at the revision history limit).
    out = kget("deployment", "astro-agent-worker-default-worker",
               "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}")
    return int(out or 0)

def secret_value():
    out = kget("secret", "agents-airflow", "-o", "jsonpath={.data.AIRFLOW_CONN_DB}")
    return base64.b64decode(out).decode() if out else None

def calls():
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("airflow_secrets_secretsmanager_calls_total{"):
            op = line.split('operation="')[1].split('"')[0]
            out[op] = out.get(op, 0) + float(line.split()[-1])
    return out

def event(i, arn, version):
    return {"version": "0", "id": f"bench-{i}", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.secretsmanager", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [],
            "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "PutSecretValue",
                       "awsRegion": "us-east-1", "eventType": "AwsApiCall", "readOnly": False,
                       "requestParameters": {"secretId": "bench-events/db"},
                       "responseElements": {"arn": arn, "versionId": version,
                                            "versionStages": ["AWSCURRENT"]}}}

to_secret, to_rs = [], []
before = calls()
for i in range(1, n + 1):
    value = f"postgresql://u:v{i}@db/x"
    rs0 = worker_rs()
    r = sm.put_secret_value(SecretId="bench-events/db", SecretString=value)
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event(i, r["ARN"], r["VersionId"])))
    t0, seen_secret = time.monotonic(), None
    while True:
        now = time.monotonic() - t0
        if seen_secret is None and secret_value() == value:
            seen_secret = time.monotonic() - t0  # an upper bound: includes the kubectl call
        if worker_rs() > rs0:
            to_rs.append(time.monotonic() - t0)
            to_secret.append(seen_secret if seen_secret is not None else to_rs[-1])
            break
        if now > 60:
            raise SystemExit(f"change {i}: no new ReplicaSet within 60 s")
        time.sleep(0.02)
after = calls()

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs))) - 1))]

print(f"## {n} changes (PutSecretValue + its event; polling at 1 h)")
print("| what | p50 | p99 | max |")
print("|---|---|---|---|")
for name, xs in (("event → managed Secret", to_secret), ("event → new worker ReplicaSet", to_rs)):
    print(f"| {name} | {pct(xs, .5):.2f} s | {pct(xs, .99):.2f} s | {max(xs):.2f} s |")
per = {op: (after.get(op, 0) - before.get(op, 0)) / n for op in sorted(set(after) | set(before))}
print("Secrets Manager calls per change: " + ", ".join(f"{op} {v:.2f}" for op, v in per.items()))
EOF
