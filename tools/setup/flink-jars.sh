#!/usr/bin/env bash
# Fetches the jars the PyFlink jobs need (pipelines/flink-jars.pom.xml) with
# Maven, at the version of the installed Flink, into .cache/flink-jars/<version>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CITYLAKE_CACHE:-$root/.cache}"
flink_version="$("$root/.venv/bin/python" -c 'from pyflink.version import __version__; print(__version__)')"
dest="$cache/flink-jars/$flink_version"
if [ -f "$dest/.complete" ]; then exit 0; fi
echo "setup: fetching Flink $flink_version jars with Maven into $dest" >&2
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
mvn -q -B -f "$root/pipelines/flink-jars.pom.xml" dependency:copy-dependencies \
  -Dflink.version="$flink_version" -DexcludeTransitive=true -DoutputDirectory="$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
