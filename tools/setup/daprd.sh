#!/usr/bin/env bash
# Builds the Dapr runtime (daprd) from its Go module at the pinned release.
# Why build: the only registries reachable from city sites and CI are package
# registries, so the sidecar comes from the Go module proxy, not a release
# download. Recent releases register components only behind build tags, so an
# untagged build would load none; `stablecomponents` gives pub/sub (MQTT),
# state stores (SQLite, Redis, ...) and the rest of the stable set.
set -euo pipefail
DAPR_VERSION="${DAPR_VERSION:-1.17.5}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CITYLAKE_CACHE:-$root/.cache}"
bin="$cache/bin/daprd-$DAPR_VERSION"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  exit 0
fi
command -v go >/dev/null || { echo "daprd: Go is needed to build daprd (apt-get install golang, or Go >= 1.25)" >&2; exit 1; }
echo "daprd: building v$DAPR_VERSION from the Go module (first time only, ~10-20 min on 2 cores)" >&2
mod="$(cd /tmp && go mod download -json "github.com/dapr/dapr@v$DAPR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[ -n "$mod" ] || { echo "daprd: could not download github.com/dapr/dapr@v$DAPR_VERSION from the Go module proxy" >&2; exit 1; }
src="$cache/build/dapr-$DAPR_VERSION"
if [ ! -f "$src/go.mod" ]; then
  rm -rf "$src.tmp" && mkdir -p "$cache/build"
  cp -r "$mod" "$src.tmp" && chmod -R u+w "$src.tmp" && mv "$src.tmp" "$src"
fi
# The Go module proxy does not serve durabletask-go v0.11.1 (dapr 1.17.5's pin);
# v0.11.0 is API-compatible and only backs Dapr Workflows, which citylake does not use.
if grep -q "durabletask-go v0.11.1" "$src/go.mod" && ! grep -q "durabletask-go =>" "$src/go.mod"; then
  (cd "$src" && go mod edit -replace github.com/dapr/durabletask-go=github.com/dapr/durabletask-go@v0.11.0)
fi
mkdir -p "$cache/bin"
(cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags stablecomponents \
   -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION" \
   -o "$bin.tmp" ./cmd/daprd)
mv "$bin.tmp" "$bin"
ln -sf "daprd-$DAPR_VERSION" "$cache/bin/daprd"
"$bin" --version >&2
