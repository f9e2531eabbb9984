"""The ``devices`` job: landing device events folded, per device and
event-time minute, into partial ``devices`` rows (``fold.sql``), which
``lake/views/devices.sql`` folds into one row per device."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import CityConfig
from citylake.pipelines.sqltext import literal, render

INPUTS = ("device_events",)
OUTPUTS = ("devices",)
HERE = Path(__file__).parent


def source_protocol(config: CityConfig) -> str:
    """The type of the source named in an event's ``source`` column (mqtt,
    gb28181, ...) as a SQL expression; null for a source city.yaml no longer names."""
    if not config.sources:
        return "CAST(NULL AS STRING)"
    cases = " ".join(f"WHEN {literal(s.name)} THEN {literal(s.type)}" for s in config.sources)
    return f"CAST(CASE source {cases} END AS STRING)"


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    attributes = render((HERE / "attributes.sql").read_text("utf-8"), source_protocol=source_protocol(config))
    t_env.create_temporary_view("device_attributes", t_env.sql_query(attributes))
    return {"devices": t_env.sql_query((HERE / "fold.sql").read_text("utf-8"))}
