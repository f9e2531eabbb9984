#!/usr/bin/env bash
# kustomize and kubeconform, which `make test` uses to build and validate the
# Kubernetes manifests in deploy/ offline (tests/unit/test_deploy.py). Built
# from their Go modules at pinned releases into .cache/bin/, like daprd: the
# Go module proxy is reachable where release downloads are not. A second run
# costs two `--version` calls.
set -euo pipefail
# kustomize 5.8.3 needs Go 1.27; 5.8.2 is the newest that builds with Go 1.26.
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-5.8.2}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-0.8.0}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CITYLAKE_CACHE:-$root/.cache}"
mkdir -p "$cache/bin"

# install NAME VERSION MODULE_PATH VERSION_ARGS...: go install MODULE_PATH@vVERSION
# into a private GOBIN, then move the binary to .cache/bin/NAME-VERSION.
install() {
  local name="$1" version="$2" module="$3"
  shift 3
  local bin="$cache/bin/$name-$version"
  if [ -x "$bin" ] && "$bin" "$@" >/dev/null 2>&1; then
    ln -sf "$name-$version" "$cache/bin/$name"
    return 0
  fi
  command -v go >/dev/null || { echo "setup: Go is needed to build $name (Go >= 1.26)" >&2; exit 1; }
  echo "setup: building $name v$version from its Go module (first time only, ~1-3 min)" >&2
  local gobin
  gobin="$(mktemp -d)"
  (cd /tmp && CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$module@v$version")
  mv "$gobin/$name" "$bin.tmp" && rm -rf "$gobin"
  mv "$bin.tmp" "$bin"
  ln -sf "$name-$version" "$cache/bin/$name"
}

install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5 version
install kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform -v
