"""The soak's short version (`make soak` is the long one): half a simulated
day of 300 devices in one minute through `citylake run`, with landing
collection (a 20 s replay window, so collection shows within the minute),
compaction and vacuum running; exits 0 only if every acknowledged reading is
in the lake once, the sums agree, landing stayed under its bound and its
files were collected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_short_soak_keeps_every_reading_and_collects_landing(tmp_path: Path) -> None:
    report = tmp_path / "report"
    argv = [
        sys.executable, str(REPO / "bench" / "soak.py"),
        "--devices", "300", "--days", "0.5", "--minutes", "1", "--replay-window-s", "20", "--sample-s", "2",
        "--landing-bound-mb", "64", "--workdir", str(tmp_path / "soak"), "--report", str(report),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["acked"]["readings"] == summary["plan"]["readings"] == summary["lake"]["count"]
    assert summary["landing_files_collected"] > 0
    assert all(summary["checks"].values()) and summary["failures"] == []
    assert {p.name for p in report.glob("*.png")} == {"disk.png", "state.png", "memory.png", "rows.png"}
