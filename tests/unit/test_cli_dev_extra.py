"""The product CLI loads no dev code (tests/integration/test_wheel.py runs the
same check in a real product install); a dev command without the dev extra
says what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citylake.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_cli_loads_no_dev_code() -> None:
    # A fresh interpreter: this one has pytest and maybe the dev code loaded.
    # The shared venv has the dev extra, so matplotlib would load if imported.
    script = (
        "import sys, citylake.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'pytest', '_pytest')"
        " or m.startswith(('citylake.devstack', 'citylake.scalereport')) or 'simulator' in m))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_dev_command_without_the_dev_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As if the dev extra were not installed: importing matplotlib fails.
    for name in [m for m in sys.modules if m.startswith(("citylake.scalereport", "matplotlib"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(app, ["scale", "report", str(tmp_path)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "`citylake scale report` is a development command" in message
    assert "matplotlib is not installed" in message
    assert "citylake[dev]" in message


def test_with_the_dev_extra_the_dev_command_runs(tmp_path: Path) -> None:
    # The lazy import path itself: `scale report` rebuilds a report here (the
    # shared venv has the dev extra).
    from citylake.scalereport import build_report
    from tests.unit.test_scale_report import synthetic

    build_report(synthetic(), tmp_path)
    (tmp_path / "index.html").unlink()
    result = CliRunner().invoke(app, ["scale", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "index.html").exists()
