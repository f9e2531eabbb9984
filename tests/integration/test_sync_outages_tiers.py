"""The three tiers' outage proof, short: bench/bench_sync_outages.py's `short`
scenario as it is (edge, region and centre each a real `citylake sync
serve`/`push` in its own network namespace, 2 % loss each way and a 2 Mbit/s
tbf on the edge's uplink), with six injected outages, two of them a receiver
killed with SIGKILL where it was. Every outage must heal with no operator
action and the centre's lake must be the union of the edge's, each reading
once (count, distinct keys, sum, readings per site). `make bench-sync` runs
the same with 100 outages (sync/README.md has its figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root for network namespaces, veth pairs, iptables and tc (CI runs as root)",
    ),
]
ROOT = Path(__file__).resolve().parents[2]


def test_three_tiers_heal_every_outage_and_the_centre_holds_the_union_once(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "bench_sync_outages.py"), "--tiers", "3", "--outages", "6",
            "--kill-every", "3", "--files", "2", "--rows", "2000", "--deadline", "60", "--out", str(out),
        ],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'devstack'}"},
        capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"bench exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    figures = json.loads(out.read_text())
    assert figures["tiers"] == 3 and figures["outages"] == 6
    assert figures["success_ratio"] == 1.0 and not figures["failed"]
    assert figures["receiver_kills"] == 2
    assert figures["lake_exact"], figures["checks"]
    readings = figures["readings"]
    assert readings == 6 * 2 * 2000
    checks = figures["checks"]
    assert checks["centre_per_site"] == checks["region_per_site"] == {"edge-north": readings}, checks
    assert checks["centre"] == checks["region"], checks
