#!/usr/bin/env bash
# Builds the static (musl) binary and the container image without a Docker engine (buildah,
# daemonless, `--target prebuilt` of the Dockerfile), then checks what users rely on: a static
# binary that runs, and an image with a non-root user, the entrypoint and the OCI labels.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fail() { echo "[image] ERROR: $*" >&2; exit 1; }

target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >/dev/null
command -v musl-gcc >/dev/null || fail "musl-gcc missing (apt-get install musl-tools)"
command -v buildah >/dev/null || fail "buildah missing (apt-get install buildah)"

echo "[image] building the static binary" >&2
cargo build --release --locked --target "$target" --bin airflow-secrets-operator
bin=${CARGO_TARGET_DIR:-$root/target}/$target/release/airflow-secrets-operator
file_out=$(file "$bin" 2>/dev/null || true)
if command -v file >/dev/null; then
  [[ $file_out == *"static"* ]] || fail "not a static binary: $file_out"
fi
ldd "$bin" 2>&1 | grep -qE "not a dynamic executable|statically linked" || fail "the binary has dynamic dependencies: $(ldd "$bin" 2>&1)"
"$bin" --version | grep -q airflow-secrets-operator || fail "the static binary does not run"
"$bin" crd | cmp -s - <(cat crds/*.yaml) || fail "the static binary prints other CRDs than crds/"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"; buildah --storage-driver vfs rmi -f localhost/airflow-secrets-operator:test >/dev/null 2>&1 || true' EXIT
cp "$bin" "$ctx/airflow-secrets-operator"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
echo "[image] building the image (buildah, --target prebuilt)" >&2
buildah --storage-driver vfs bud --quiet --target prebuilt -f "$root/Dockerfile" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t localhost/airflow-secrets-operator:test "$ctx" >/dev/null

inspect() { buildah --storage-driver vfs inspect --type image --format "$1" localhost/airflow-secrets-operator:test; }
[[ $(inspect '{{.OCIv1.Config.User}}') == 65532:65532 ]] || fail "image user is $(inspect '{{.OCIv1.Config.User}}')"
[[ $(inspect '{{.OCIv1.Config.Entrypoint}}') == '[/airflow-secrets-operator]' ]] || fail "entrypoint $(inspect '{{.OCIv1.Config.Entrypoint}}')"
[[ $(inspect '{{.OCIv1.Config.Cmd}}') == '[run]' ]] || fail "cmd $(inspect '{{.OCIv1.Config.Cmd}}')"
for label in org.opencontainers.image.title org.opencontainers.image.version org.opencontainers.image.revision org.opencontainers.image.licenses; do
  [[ -n $(inspect "{{index .OCIv1.Config.Labels \"$label\"}}") ]] || fail "label $label missing"
done
size=$(buildah --storage-driver vfs push --quiet localhost/airflow-secrets-operator:test "oci-archive:$ctx/image.tar" >/dev/null && du -k "$ctx/image.tar" | cut -f1)
echo "[image] ok: static binary $(du -k "$bin" | cut -f1) KiB, image archive ${size} KiB, user 65532, entrypoint /airflow-secrets-operator run" >&2
