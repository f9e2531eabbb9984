#!/usr/bin/env bash
# The Python environment: .venv with citylake installed editable, every version
# fixed by constraints.txt. Re-installs only when pyproject.toml or
# constraints.txt changed (a stamp holds their hash).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv"
py="$(command -v python3.11 || command -v python3)"
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || { echo "setup: Python 3.11 is required (apache-flink 2.3 wheels); found $("$py" --version)" >&2; exit 1; }
want="$(cat "$root/pyproject.toml" "$root/devstack/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.citylake-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/citylake" ]; then
  exit 0
fi
echo "setup: building the Python environment in .venv (first time ~2-4 min)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade "pip==25.3"
# The test bench (devstack/) is a distribution of its own, beside the product.
"$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[dev]" -e "$root/devstack"
echo "$want" > "$stamp"
