"""The ``readings`` job: landing readings, deduplicated, into the lake."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import CityConfig

INPUTS = ("readings",)
OUTPUTS = ("readings",)
HERE = Path(__file__).parent


def deduplicated(t_env: TableEnvironment) -> None:
    """Declare ``readings_deduped`` over ``landing_readings`` (shared with
    rollups and alerts): once per plan, so jobs combined into one Flink job
    dedupe landing readings once."""
    if "readings_deduped" in t_env.list_temporary_views():
        return
    t_env.create_temporary_view("readings_deduped", t_env.sql_query((HERE / "dedupe.sql").read_text("utf-8")))


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    """Lake tables by name, built from the ``landing_*`` tables the runner declared."""
    deduplicated(t_env)
    return {"readings": t_env.sql_query((HERE / "readings.sql").read_text("utf-8"))}
