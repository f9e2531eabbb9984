"""The ``events`` job: landing ``device_events`` (every kind) and ``rejected``
into the lake tables of the same names, deduplicated, partitioned by date."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import CityConfig

INPUTS = ("device_events", "rejected")
OUTPUTS = ("device_events", "rejected")
HERE = Path(__file__).parent


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    return {name: t_env.sql_query((HERE / f"{name}.sql").read_text("utf-8")) for name in OUTPUTS}
