"""The ``readings`` job: landing readings into the lake ``readings`` table."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

INPUTS = ("readings",)
OUTPUTS = ("readings",)


def transform(t_env: TableEnvironment) -> dict[str, Table]:
    """Lake tables by name, built from the ``landing_*`` tables the runner declared."""
    query = (Path(__file__).parent / "readings.sql").read_text(encoding="utf-8")
    return {"readings": t_env.sql_query(query)}
