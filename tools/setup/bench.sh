#!/usr/bin/env bash
# What `make bench` needs beyond `make setup` (not `make test`): PostgreSQL 15,
# the baseline of bench/bench_services.py, and wrk. Installs only what is
# missing, so a second run costs one dpkg query.
set -euo pipefail
pkgs=(postgresql-15 postgresql-contrib wrk)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing Debian packages for the benchmarks: ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package creates and starts a cluster on port 5432; the bench runs its own
# on a free port in a data directory of its own, so the packaged one is stopped.
if command -v pg_ctlcluster >/dev/null; then
  $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null && systemctl is-enabled -q postgresql 2>/dev/null; then
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
