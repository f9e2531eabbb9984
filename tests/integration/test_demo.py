"""`citylake demo` (what `make demo` runs) brings the whole system up, shows a
result through Dapr, and stops everything it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_slice_and_stops_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "city.yaml"
    config.write_text(
        (REPO / "city.yaml").read_text().replace("data_dir: ./var", f"data_dir: {tmp_path / 'var'}")
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "citylake",
            "demo",
            "--config",
            str(config),
            "--devices",
            "4",
            "--modbus-devices",
            "2",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "readings in the lake" in output
    assert "latest of air-000000 through Dapr: 200" in output
    assert '"device_id":"air-000000"' in output
    # The configured pump stations reached the lake's devices through the devices job.
    devices = re.search(r"lake +readings \d+, devices (\d+), device_events (\d+)", output)
    assert devices is not None and int(devices.group(1)) >= 2, output
    workdir = str(tmp_path / "var" / "demo")
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir in text:
            leftovers.append(text)
    assert leftovers == []
