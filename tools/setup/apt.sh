#!/usr/bin/env bash
# Debian packages citylake runs against. Installs only what is missing, so a
# second run costs one dpkg query.
set -euo pipefail
# chromium: headless, for the query dashboard's browser test (tests/integration/test_dashboard_browser.py).
pkgs=(openjdk-17-jre-headless mosquitto mosquitto-clients sip-tester socat python3-venv maven iproute2 iptables chromium)
# snmpd, snmp (snmptrap), libcoap3-bin, rabbitmq-server: real peers of the SNMP, CoAP and AMQP adapters' tests.
pkgs+=(snmpd snmp libcoap3-bin rabbitmq-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing Debian packages: ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# mosquitto's Debian service would hold port 1883; citylake starts its own brokers.
if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then
  $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
