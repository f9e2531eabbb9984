"""The ``rollups`` job: ``readings_1m`` and ``readings_1h`` from deduplicated
landing readings, with event-time windows and watermarks."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import CityConfig
from citylake.pipelines.readings.job import deduplicated

INPUTS = ("readings",)
OUTPUTS = ("readings_1m", "readings_1h")
WINDOWS = {"readings_1m": "1' MINUTE", "readings_1h": "1' HOUR"}


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    deduplicated(t_env)
    sql = (Path(__file__).parent / "rollup.sql").read_text("utf-8")
    return {
        name: t_env.sql_query(sql.replace("'{window}'", f"'{window}")) for name, window in WINDOWS.items()
    }
