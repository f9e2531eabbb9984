#!/usr/bin/env bash
# Everything `make demo` and `make test` need, idempotent: Debian packages, the
# Python environment, the Flink jars, the daprd runtime, kustomize and
# kubeconform for the Kubernetes manifests' offline checks, and kube-apiserver,
# etcd, kubectl and the operators' CRDs for their server-side check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/apt.sh"
bash "$here/venv.sh"
bash "$here/flink-jars.sh"
bash "$here/flink-sql-client.sh"
bash "$here/kafka-jars.sh"
bash "$here/daprd.sh"
bash "$here/k8s-tools.sh"
bash "$here/k8s-apiserver.sh"
