#!/usr/bin/env bash
# Builds (or reuses) every binary the test ground needs, at the versions in
# pins.env, into a cache directory outside the repository:
#
#   $ASO_CACHE/<asset>-<version>/...       (default ~/.cache/airflow-secrets-operator)
#
# An asset directory counts as built only once it holds `.complete`, so an interrupted build
# is never mistaken for a finished one.
# Prints `export` lines for the paths on stdout (eval it); progress goes to stderr.
#
# Usage: tests/ground/assets.sh [all|kube|etcd|kwok|helm|moto|airflow|airflow33]...
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=pins.env
source "$here/pins.env"
# An Airflow venv's directory names every pinned package, so changing any pin rebuilds it.
airflow_providers="amazon-$AIRFLOW_AMAZON_PROVIDER_VERSION-cncf-kubernetes-$AIRFLOW_CNCF_KUBERNETES_PROVIDER_VERSION"
airflow_id="$AIRFLOW_VERSION-$airflow_providers"
airflow33_id="$AIRFLOW33_VERSION-$airflow_providers"

cache=${ASO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-secrets-operator}
mkdir -p "$cache"

log() { printf '[assets] %s\n' "$*" >&2; }
die() { printf '[assets] ERROR: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

# build_into NAME VERSION FUNCTION: run FUNCTION with $cache/NAME-VERSION as $1 (emptied
# first) and mark it complete only when FUNCTION succeeded. Built in place, because a Python
# venv cannot be moved after creation.
build_into() {
  local name=$1 version=$2 fn=$3 dest="$cache/$1-$2"
  if [[ -f "$dest/.complete" ]]; then
    return 0
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  local start=$SECONDS
  log "building $name $version (once; cached in $dest)"
  if ! "$fn" "$dest" >"$dest.log" 2>&1; then
    tail -n 40 "$dest.log" >&2
    die "building $name $version failed (full log: $dest.log)"
  fi
  touch "$dest/.complete"
  rm -f "$dest.log"
  log "built $name $version in $((SECONDS - start)) s"
}

# A scratch Go module that requires MODULE@VERSION, so that `go build` resolves
# the module's dependencies the way its own go.mod asks.
go_scratch() {
  local dir=$1 module=$2 version=$3
  mkdir -p "$dir"
  (cd "$dir" && go mod init aso.local/scratch >/dev/null 2>&1 && go mod edit -require="$module@$version")
}

build_kube() {
  local out=$1 work
  need go "install Go (https://go.dev/doc/install)"
  work=$(mktemp -d)
  go_scratch "$work" k8s.io/kubernetes "$K8S_VERSION"
  # k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at
  # exactly v0.0.0 and replaces them with local directories; a dependant must map them to
  # the published tags itself. Pseudo-versions (v0.0.0-2025...) are real and stay.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [[ -f "$gomod" ]] || die "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"
  local staging
  staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
  [[ -n "$staging" ]] || die "no v0.0.0 staging requirements found in $gomod"
  local args=() m
  for m in $staging; do args+=("-replace=$m=$m@$K8S_STAGING_VERSION"); done
  log "kubernetes: replacing $(wc -w <<<"$staging") staging modules with $K8S_STAGING_VERSION"
  (cd "$work" && go mod edit "${args[@]}")
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  (
    cd "$work"
    GOFLAGS=-mod=mod go mod download k8s.io/kubernetes
    GOFLAGS=-mod=mod go build -o "$out/" -ldflags "$ld" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$work"
}

build_etcd() {
  local out=$1 work
  need go "install Go (https://go.dev/doc/install)"
  work=$(mktemp -d)
  go_scratch "$work" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (cd "$work" && GOFLAGS=-mod=mod go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$work"
}

build_kwok() {
  local out=$1 work
  need go "install Go (https://go.dev/doc/install)"
  work=$(mktemp -d)
  go_scratch "$work" sigs.k8s.io/kwok "$KWOK_VERSION"
  (cd "$work" && GOFLAGS=-mod=mod go build -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # kwok has no behaviour of its own: the Stage objects that make nodes Ready and pods
  # Running ship in its module; concatenate them into one config file.
  local src
  src=$(cd "$work" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  local f first=1
  for f in "$src"/kustomize/stage/node/fast/*.yaml "$src"/kustomize/stage/node/heartbeat/*.yaml \
           "$src"/kustomize/stage/pod/fast/*.yaml; do
    case $(basename "$f") in kustomization.yaml) continue ;; esac
    if [[ $first == 0 ]]; then echo '---' >>"$out/stages.yaml"; fi
    first=0
    cat "$f" >>"$out/stages.yaml"
  done
  grep -q 'kind: Stage' "$out/stages.yaml" || die "no kwok stages found under $src/kustomize/stage"
  rm -rf "$work"
}

build_helm() {
  local out=$1 work
  need go "install Go (https://go.dev/doc/install)"
  work=$(mktemp -d)
  go_scratch "$work" helm.sh/helm/v3 "$HELM_VERSION"
  (cd "$work" && GOFLAGS=-mod=mod go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$out/helm" helm.sh/helm/v3/cmd/helm)
  rm -rf "$work"
}

python_venv() {
  local out=$1
  shift
  need python3 "install CPython 3.10+"
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --upgrade pip
  "$out/venv/bin/pip" install --quiet "$@"
}

build_moto() { python_venv "$1" "moto[server]==$MOTO_VERSION"; }

# airflow_venv DEST AIRFLOW_VERSION
airflow_venv() {
  # Apache Airflow is the oracle for connection and variable semantics; boto3 comes with
  # the Amazon provider, whose SecretsManagerBackend reads the emulator, and the kubernetes
  # client with the cncf-kubernetes provider, whose KubernetesSecretsBackend reads Secrets.
  # apache-airflow is pinned, so pip's resolver fits the providers' other dependencies to it.
  python_venv "$1" "apache-airflow==$2" \
    "apache-airflow-providers-amazon==$AIRFLOW_AMAZON_PROVIDER_VERSION" \
    "apache-airflow-providers-cncf-kubernetes==$AIRFLOW_CNCF_KUBERNETES_PROVIDER_VERSION"
}

build_airflow() { airflow_venv "$1" "$AIRFLOW_VERSION"; }
build_airflow33() { airflow_venv "$1" "$AIRFLOW33_VERSION"; }

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(all)
for w in "${want[@]}"; do
  case $w in
    all)
      build_into kube "$K8S_VERSION" build_kube
      build_into etcd "$ETCD_VERSION" build_etcd
      build_into kwok "$KWOK_VERSION" build_kwok
      build_into helm "$HELM_VERSION" build_helm
      build_into moto "$MOTO_VERSION" build_moto
      build_into airflow "$airflow_id" build_airflow
      build_into airflow "$airflow33_id" build_airflow33
      ;;
    kube) build_into kube "$K8S_VERSION" build_kube ;;
    etcd) build_into etcd "$ETCD_VERSION" build_etcd ;;
    kwok) build_into kwok "$KWOK_VERSION" build_kwok ;;
    helm) build_into helm "$HELM_VERSION" build_helm ;;
    moto) build_into moto "$MOTO_VERSION" build_moto ;;
    airflow) build_into airflow "$airflow_id" build_airflow ;;
    airflow33) build_into airflow "$airflow33_id" build_airflow33 ;;
    *) die "unknown asset '$w'" ;;
  esac
done

cat <<EOF
export ASO_KUBE_BIN=$cache/kube-$K8S_VERSION
export ASO_ETCD_BIN=$cache/etcd-$ETCD_VERSION
export ASO_KWOK_DIR=$cache/kwok-$KWOK_VERSION
export ASO_HELM_BIN=$cache/helm-$HELM_VERSION
export ASO_MOTO_VENV=$cache/moto-$MOTO_VERSION/venv
export ASO_AIRFLOW_VENV=$cache/airflow-$airflow_id/venv
export ASO_AIRFLOW33_VENV=$cache/airflow-$airflow33_id/venv
EOF
