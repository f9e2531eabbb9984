#!/usr/bin/env bash
# Regenerates deploy/schemas/*.json (see generate.py) from what the package
# registries serve: the Kubernetes OpenAPI spec and the Dapr CRDs from the Go
# module proxy, the Flink operator CRDs from Maven Central. Not part of
# `make test` (the schemas are committed); run it after changing a version
# here or a kind in generate.py, and commit the result.
set -euo pipefail
# The oldest Kubernetes minor still supported (Nov 2026): what deploy/ asks of a
# cluster is then available on every supported one.
K8S_VERSION="${K8S_VERSION:-1.35.4}"
# The release tools/setup/daprd.sh builds (its module is already in the cache).
DAPR_VERSION="${DAPR_VERSION:-1.17.5}"
# The newest flink-kubernetes-operator-api Maven Central serves.
FLINK_OPERATOR_VERSION="${FLINK_OPERATOR_VERSION:-1.10.0}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python=python3

module_dir() {
  (cd /tmp && go mod download -json "$1") | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
}
k8s="$(module_dir "k8s.io/kubernetes@v$K8S_VERSION")"
dapr="$(module_dir "github.com/dapr/dapr@v$DAPR_VERSION")"
[ -d "$k8s/api/openapi-spec/v3" ] || { echo "no OpenAPI spec in k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
[ -d "$dapr/charts/dapr/crds" ] || { echo "no CRDs in github.com/dapr/dapr@v$DAPR_VERSION" >&2; exit 1; }

jars="$(mktemp -d)"
trap 'rm -rf "$jars"' EXIT
mvn -q -B dependency:copy \
  -Dartifact="org.apache.flink:flink-kubernetes-operator-api:$FLINK_OPERATOR_VERSION" \
  -DoutputDirectory="$jars"
jar="$jars/flink-kubernetes-operator-api-$FLINK_OPERATOR_VERSION.jar"

"$python" "$here/generate.py" \
  --k8s-openapi "$k8s/api/openapi-spec/v3" \
  --dapr-crds "$dapr/charts/dapr/crds" \
  --flink-operator-jar "$jar" \
  --out "$here"
{
  echo "# Sources of the schemas in this folder (written by generate.sh)"
  echo "k8s.io/kubernetes v$K8S_VERSION api/openapi-spec/v3"
  echo "github.com/dapr/dapr v$DAPR_VERSION charts/dapr/crds"
  echo "org.apache.flink:flink-kubernetes-operator-api:$FLINK_OPERATOR_VERSION META-INF/fabric8 (flinkVersion enum + v2_0)"
} > "$here/SOURCES"
