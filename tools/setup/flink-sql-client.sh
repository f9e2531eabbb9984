#!/usr/bin/env bash
# Flink's SQL Client (`citylake pipeline sql-client`) needs flink-sql-gateway,
# which the apache-flink wheel leaves out of its opt/: fetched with Maven at the
# installed Flink's version into .cache/flink-sql-client/<version>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CITYLAKE_CACHE:-$root/.cache}"
flink_version="$("$root/.venv/bin/python" -c 'from pyflink.version import __version__; print(__version__)')"
dest="$cache/flink-sql-client/$flink_version"
if [ -f "$dest/.complete" ]; then exit 0; fi
echo "setup: fetching flink-sql-gateway $flink_version with Maven into $dest" >&2
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
mvn -q -B dependency:copy -Dartifact="org.apache.flink:flink-sql-gateway:$flink_version" \
  -DoutputDirectory="$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
