"""Every command in DESIGN.md exists, takes --config, and says clearly what it cannot do yet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citylake.cli import app
from tests.lakedata import T0, reading, write_lake_readings

runner = CliRunner()

COMMANDS = [
    ["demo"],
    ["ingest"],
    ["pipeline", "run"],
    ["pipeline", "submit"],
    ["pipeline", "list"],
    ["pipeline", "cancel"],
    ["serve"],
    ["sql"],
    ["simulate", "mqtt"],
    ["simulate", "modbus"],
    ["simulate", "gb28181"],
    ["lake", "compact"],
    ["lake", "stats"],
    ["lake", "retain"],
]
TAKE_CONFIG = [c for c in COMMANDS if c[0] != "simulate"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("command", TAKE_CONFIG, ids=" ".join)
def test_every_command_takes_config(command: list[str]) -> None:
    assert "--config" in runner.invoke(app, [*command, "--help"]).output


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(f"site: s1\ndata_dir: {tmp_path / 'data'}\n")
    return path


def test_serve_offers_every_service_and_the_sidecar_port() -> None:
    result = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for service in ("query", "registry", "alerts"):
        assert service in result.output
    assert "--dapr-http-port" in result.output


def test_bad_config_exits_2_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("site: s1\nservices:\n  query:\n    port: -1\n")
    result = runner.invoke(app, ["lake", "stats", "--config", str(path)])
    assert result.exit_code == 2
    assert "line 4: services.query.port" in result.output


def test_ingest_without_sources_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "--config", str(config_file(tmp_path))])
    assert result.exit_code == 2
    assert "no enabled sources" in result.output


def test_sql_formats(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    write_lake_readings(
        tmp_path / "data", [reading("air-1", "temp", T0, 21.5), reading("air-2", "temp", T0, 3.0)]
    )
    query = "SELECT device_id, ts, value FROM readings ORDER BY device_id"
    as_json = runner.invoke(app, ["sql", query, "--config", str(config), "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [
        {"device_id": "air-1", "ts": "2026-11-25T08:00:00.000Z", "value": 21.5},
        {"device_id": "air-2", "ts": "2026-11-25T08:00:00.000Z", "value": 3.0},
    ]
    as_csv = runner.invoke(app, ["sql", query, "--config", str(config), "--format", "csv"])
    assert as_csv.stdout.splitlines()[0] == '"device_id","ts","value"'
    assert len(as_csv.stdout.splitlines()) == 3


def test_sql_error_is_reported_not_raised(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sql", "SELEC nonsense", "--config", str(config_file(tmp_path))])
    assert result.exit_code == 1
    assert "query failed" in result.output


def test_lake_stats_counts_files_and_rows(tmp_path: Path) -> None:
    write_lake_readings(tmp_path / "data", [reading("a", "m", T0, 1.0)] * 3)
    result = runner.invoke(app, ["lake", "stats", "--config", str(config_file(tmp_path))])
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "readings " in line and "1m" not in line)
    assert "│ 1 " in line and "│ 3 " in line and "2026-11-25" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "streaming", "--from", "2026-01-01", "--to", "2026-01-02"], "use them with --mode batch"),
        (["--mode", "batch", "--from", "2026-01-01"], "give both --from and --to"),
        (
            ["--mode", "batch", "--from", "yesterday", "--to", "2026-01-02"],
            "--from 'yesterday' is not ISO 8601",
        ),
        (["--mode", "batch", "--from", "2026-01-02", "--to", "2026-01-01"], "is not before --to"),
    ],
)
def test_backfill_range_is_checked(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["pipeline", "run", "readings", *args, "--config", str(config_file(tmp_path))]
    )
    assert result.exit_code == 2
    assert message in result.output
