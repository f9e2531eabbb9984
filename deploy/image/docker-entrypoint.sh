#!/usr/bin/env bash
# Flink's native Kubernetes mode starts the JobManager and TaskManagers as
# `/docker-entrypoint.sh <command...>` (kubernetes.entry.path). The official
# Flink image's script writes configuration and drops privileges; neither is
# needed here (the operator mounts the configuration, the image runs as
# citylake), so the command runs as given.
set -euo pipefail
exec "$@"
