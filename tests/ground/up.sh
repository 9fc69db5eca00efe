#!/usr/bin/env bash
# Starts the test ground on loopback and leaves it running:
#   etcd + kube-apiserver (TLS, RBAC, service-account keys) + kube-controller-manager
#   + kube-scheduler + kwok (one fake node, pods become Running) + moto (Secrets Manager).
#
# Usage: tests/ground/up.sh STATE_DIR
#
# STATE_DIR receives certificates, data, logs/, pids/ and `env`, a file to source:
#   KUBECONFIG, AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_* test credentials, ASO_* paths.
# Stop everything with tests/ground/down.sh STATE_DIR (stops exactly the pids it recorded).
# Binaries come from tests/ground/assets.sh (built once, cached outside the repository).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${1:?usage: up.sh STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)
mkdir -p "$state/logs" "$state/pids" "$state/pki"

log() { printf '[ground] %s\n' "$*" >&2; }
# A failed start stops whatever it had already started.
ok=0
trap '[[ $ok == 1 ]] || "$here/down.sh" "$state" >/dev/null 2>&1 || true' EXIT
fail() {
  printf '[ground] ERROR: %s\n' "$1" >&2
  if [[ -n "${2:-}" && -f "$state/logs/$2.log" ]]; then
    printf '[ground] last lines of %s:\n' "$state/logs/$2.log" >&2
    tail -n 25 "$state/logs/$2.log" >&2
  fi
  exit 1
}

eval "$("$here/assets.sh" kube etcd kwok helm moto)"
for b in "$ASO_KUBE_BIN/kube-apiserver" "$ASO_KUBE_BIN/kube-controller-manager" \
         "$ASO_KUBE_BIN/kube-scheduler" "$ASO_KUBE_BIN/kubectl" "$ASO_ETCD_BIN/etcd" \
         "$ASO_KWOK_DIR/kwok" "$ASO_HELM_BIN/helm" "$ASO_MOTO_VENV/bin/moto_server"; do
  [[ -x $b ]] || fail "missing test asset $b (re-run tests/ground/assets.sh)"
done
command -v openssl >/dev/null || fail "openssl is not installed (apt-get install openssl)"
command -v curl >/dev/null || fail "curl is not installed (apt-get install curl)"

started=$SECONDS

# Free loopback ports, chosen by the kernel.
read -r etcd_port etcd_peer api_port kcm_port sched_port kwok_port moto_port < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(7):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# start NAME CMD...: run in the background, in its own session, logging to logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$state/pids/$name"
}

# wait_for NAME SECONDS CHECK...: poll CHECK until it succeeds, the process dies, or time runs out.
wait_for() {
  local name=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit)) pid
  pid=$(cat "$state/pids/$name")
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$name exited during start-up" "$name"
    ((SECONDS < deadline)) || fail "$name was not healthy after ${limit}s" "$name"
    sleep 0.1
  done
}

# ---- certificates (X.509 v3 everywhere: rustls refuses v1 client certificates) ----
pki=$state/pki
ssl() { openssl "$@" >>"$state/logs/openssl.log" 2>&1; }
if [[ ! -f $pki/admin.crt ]]; then
  ssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca.key"
  ssl req -x509 -new -key "$pki/ca.key" -subj "/CN=aso-test-ca" -days 3650 -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  sign() { # sign NAME SUBJECT EXTENSIONS
    ssl ecparam -name prime256v1 -genkey -noout -out "$pki/$1.key"
    ssl req -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr"
    printf '%b\n' "$3" >"$pki/$1.ext"
    ssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
  }
  sign apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign admin "/O=system:masters/CN=aso-admin" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  ssl genrsa -out "$pki/sa.key" 2048
  ssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
fi
[[ -f $pki/admin.crt ]] || fail "could not generate certificates (see $state/logs/openssl.log)"

kubeconfig=$state/kubeconfig
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: aso-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: aso-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: aso-test
  context: {cluster: aso-test, user: aso-admin, namespace: default}
current-context: aso-test
EOF

# ---- etcd ----
start etcd "$ASO_ETCD_BIN/etcd" --name aso-test --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "aso-test=http://127.0.0.1:$etcd_peer" \
  --unsafe-no-fsync --quota-backend-bytes 1073741824 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

# ---- moto (Secrets Manager emulator); starts while the API server boots ----
# moto's command line cannot name the state directory: its working directory does (down.sh).
(cd "$state" && start moto "$ASO_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port")

# ---- kube-apiserver ----
start kube-apiserver "$ASO_KUBE_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --cert-dir "$state/apiserver-certs" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
  --disable-admission-plugins ServiceAccount  # kwok runs no containers: no token volumes needed
wait_for kube-apiserver 60 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:$api_port/readyz"

# ---- kube-controller-manager (ReplicaSets, garbage collection, namespaces) ----
start kube-controller-manager "$ASO_KUBE_BIN/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=false \
  --controllers '*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ephemeral-volume,-bootstrapsigner,-tokencleaner'

# ---- kube-scheduler (kwok does not schedule) ----
start kube-scheduler "$ASO_KUBE_BIN/kube-scheduler" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false

# ---- kwok: one fake node whose pods become Running ----
start kwok "$ASO_KWOK_DIR/kwok" --kubeconfig "$kubeconfig" --config "$ASO_KWOK_DIR/stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --server-address "127.0.0.1:$kwok_port" --cidr 10.244.0.0/16 --node-ip 127.0.0.1

kubectl=("$ASO_KUBE_BIN/kubectl" --kubeconfig "$kubeconfig")
"${kubectl[@]}" apply -f - >>"$state/logs/setup.log" 2>&1 <<'EOF' || fail "could not create the fake node" setup
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "500"}
  capacity: {cpu: "64", memory: 256Gi, pods: "500"}
EOF

wait_for kube-controller-manager 30 curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler 30 curl -fsSk "https://127.0.0.1:$sched_port/healthz"
node_ready() {
  [[ $("${kubectl[@]}" get node kwok-node-0 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for kwok 30 node_ready
wait_for moto 60 curl -fsS "http://127.0.0.1:$moto_port/moto-api/"

ok=1
cat >"$state/env" <<EOF
export KUBECONFIG=$kubeconfig
export ASO_GROUND_DIR=$state
export ASO_KUBECTL=$ASO_KUBE_BIN/kubectl
export ASO_HELM=$ASO_HELM_BIN/helm
export ASO_MOTO_ENDPOINT=http://127.0.0.1:$moto_port
export ASO_MOTO_VENV=$ASO_MOTO_VENV
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$moto_port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
log "up in $((SECONDS - started)) s: API server https://127.0.0.1:$api_port, Secrets Manager emulator http://127.0.0.1:$moto_port"
log "use it: source $state/env; stop it: tests/ground/down.sh $state"
