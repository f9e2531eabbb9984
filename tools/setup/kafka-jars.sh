#!/usr/bin/env bash
# Fetches a Kafka broker (kafka_2.13 and its runtime dependencies, from Maven
# Central) into .cache/kafka-jars/<version>/: the real broker the Kafka
# adapter's integration test starts in KRaft mode (devstack/citylake_devstack/kafka.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CITYLAKE_CACHE:-$root/.cache}"
version="${KAFKA_VERSION:-4.4.0}"
dest="$cache/kafka-jars/$version"
if [ -f "$dest/.complete" ]; then exit 0; fi
echo "setup: fetching Kafka $version jars with Maven into $dest" >&2
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
mvn -q -B -f "$root/tools/setup/kafka-jars.pom.xml" dependency:copy-dependencies \
  -Dkafka.version="$version" -DincludeScope=runtime -DoutputDirectory="$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
