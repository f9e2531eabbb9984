"""The ``devices`` job: what every source says about a device, as partial
``devices`` rows, one per landing ``devices`` row (``reported.sql``) and one
per device event (``events.sql``); ``lake/views/devices.sql`` merges them
into one row per device by the merge rule (lake/README.md).

No window and no state: each row is written as it is read, so the job runs
the same in both modes, no event is ever too late for it, and a source that
has not landed anything (a site without cameras) holds nothing back."""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import CityConfig
from citylake.pipelines.sqltext import literal, render

INPUTS = ("devices", "device_events")
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
    events = render((HERE / "events.sql").read_text("utf-8"), source_protocol=source_protocol(config))
    reported = t_env.sql_query((HERE / "reported.sql").read_text("utf-8"))
    return {"devices": reported.union_all(t_env.sql_query(events))}
