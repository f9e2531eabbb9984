"""The product CLI loads no dev code (tests/integration/test_wheel.py runs the
same check in a real product install); the test bench's commands arrive
through the ``citylake.commands`` entry points, and a broken one does not take
the product's commands with it."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citylake import cli
from citylake.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_cli_loads_no_dev_code() -> None:
    # A fresh interpreter: this one has pytest and maybe the dev code loaded.
    # The shared venv has the test bench installed, so its command modules load
    # (that is how they are listed), but nothing they run: no simulator, no
    # site of the demo, no scale run, no report and no matplotlib.
    heavy = ("citylake_devstack.scalereport", "citylake_devstack.simulators", "citylake_devstack.scale",
             "citylake_devstack.demo_site")  # fmt: skip
    script = (
        "import sys, citylake.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'pytest', '_pytest')"
        f" or m.startswith({heavy!r}) or 'simulator' in m))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_test_bench_adds_its_commands_through_entry_points() -> None:
    commands = {ep.name: ep.value for ep in entry_points(group=cli.COMMANDS_GROUP)}
    assert commands == {
        "demo": "citylake_devstack.commands.demo:demo",
        "simulate": "citylake_devstack.commands.simulate:app",
        "scale": "citylake_devstack.commands.scale:app",
    }
    shown = CliRunner().invoke(app, ["--help"])
    for name in ("demo", "simulate", "scale", "ingest", "pipeline"):
        assert f" {name} " in shown.output


def test_a_broken_add_on_is_named_and_the_rest_still_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint("broken", "citylake_nonexistent.commands:app", cli.COMMANDS_GROUP)
    fine = EntryPoint("fine", "citylake_devstack.commands.simulate:app", cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken, fine])
    shown = CliRunner().invoke(app, ["--help"])
    assert shown.exit_code == 0, shown.output
    assert " fine " in shown.output and " ingest " in shown.output
    assert " broken " not in shown.output
    err = capsys.readouterr().err + (shown.stderr if shown.stderr_bytes else "")
    assert "command 'broken' from citylake_nonexistent.commands:app not loaded" in err
    assert "No module named 'citylake_nonexistent'" in err
    assert CliRunner().invoke(app, ["fine", "mqtt", "--help"]).exit_code == 0


def test_a_scale_report_rebuilds_through_the_command(tmp_path: Path) -> None:
    # The command's own import path: `scale report` rebuilds a report here.
    from citylake_devstack.scalereport import build_report
    from tests.unit.test_scale_report import synthetic

    build_report(synthetic(), tmp_path)
    (tmp_path / "index.html").unlink()
    result = CliRunner().invoke(app, ["scale", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "index.html").exists()
