"""lake/views/*.sql, the read-time folds of tables whose lake rows are
partial, run in DuckDB over hand-written rows standing in for ``{raw}`` (the
table's files cast to the contract's columns, plus ``date``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import citylake.lake
from citylake.schemas import PARTITION_COLUMN, table

VIEWS = Path(citylake.lake.__file__).parent / "views"
T0 = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
Row = dict[str, Any]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def contract(name: str) -> pa.Schema:
    spec = table(name)
    schema = spec.schema
    if spec.time_column is not None:
        schema = schema.append(pa.field(PARTITION_COLUMN, pa.date32()))
    return schema


def run_view(name: str, rows: list[Row]) -> tuple[list[str], list[Row]]:
    """The view's column names and its rows, ordered by device and first column."""
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    schema = contract(name)
    raw = pa.Table.from_pylist([dict.fromkeys(schema.names) | row for row in rows], schema=schema)
    connection.register("raw_rows", raw)
    sql = (VIEWS / f"{name}.sql").read_text("utf-8")
    assert sql.count("{raw}") == 1 and "{" not in sql.replace("{raw}", "")
    cursor = connection.execute(sql.replace("{raw}", "raw_rows"))
    columns = [d[0] for d in cursor.description]
    result = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
    return columns, sorted(result, key=lambda r: (r["device_id"], str(r[columns[0]])))


# --- alerts ------------------------------------------------------------------


def alert(alert_id: str, started: float, ended: float | None, **columns: object) -> Row:
    return {
        "alert_id": alert_id, "device_id": "boiler-1", "metric": "temp", "rule": "hot",
        "severity": "critical", "started_at": at(started), "ended_at": None if ended is None else at(ended),
        "value": 95.0, "message": "it's hot", "date": date(2025, 11, 25), **columns,
    }  # fmt: skip


def test_alerts_view_has_the_contract_columns() -> None:
    columns, _ = run_view("alerts", [alert("a", 0, None)])
    assert columns == contract("alerts").names


def test_alerts_view_shows_one_row_per_alert_the_closing_one_when_closed() -> None:
    rows = [
        alert("closed", 0, None),
        alert("closed", 0, 5),
        alert("open", 10, None, device_id="boiler-2"),
        # A re-run over the same readings wrote the opening row again.
        alert("open", 10, None, device_id="boiler-2"),
        alert("reopened", 20, 25),
        alert("reopened", 20, None),  # read after the closing row: order does not matter
    ]
    _, got = run_view("alerts", rows)
    assert [(r["alert_id"], r["ended_at"]) for r in got] == [
        ("closed", at(5)),
        ("reopened", at(25)),
        ("open", None),
    ]
    assert got[0] == alert("closed", 0, 5)


def test_alerts_view_takes_the_latest_close_if_closed_twice() -> None:
    _, got = run_view("alerts", [alert("a", 0, 5), alert("a", 0, None), alert("a", 0, 7)])
    assert [r["ended_at"] for r in got] == [at(7)]


# --- devices -----------------------------------------------------------------


def said(device: str, first: float | None, last: float | None, **columns: object) -> Row:
    """A partial row: what one source said of a device at ``last``."""
    return {
        "device_id": device,
        "first_seen": None if first is None else at(first),
        "last_seen": None if last is None else at(last),
        **columns,
    }


def device(device: str, first: float, last: float, **columns: object) -> Row:
    return dict.fromkeys(contract("devices").names) | said(device, first, last, **columns)


def test_devices_view_has_the_contract_columns() -> None:
    columns, _ = run_view("devices", [said("cam-1", 0, 0)])
    assert columns == contract("devices").names


def test_devices_view_merges_partial_rows_into_one_row_per_device() -> None:
    rows = [
        # Written out of order, as files from several commits are read.
        said("cam-1", 2.5, 2.5, longitude=117.3, status="offline"),
        said(
            "cam-1", 0.0, 0.4, name="Gate", type="camera", protocol="gb28181", address="North gate",
            longitude=117.0, latitude=31.0, status="online",
        ),
        said("cam-1", 1.9, 1.9, name="Gate camera", manufacturer="Hik", latitude=31.8),
        said("cam-2", 0.1, 0.1, protocol="mqtt", status="online"),
        said("cam-2", 3.0, 3.2, status="offline"),
        said("cam-2", 4.0, 4.1, name="Meter"),  # says nothing of the status
    ]  # fmt: skip
    _, got = run_view("devices", rows)
    assert got == [
        device(
            "cam-1", 0.0, 2.5, name="Gate camera", type="camera", protocol="gb28181", manufacturer="Hik",
            address="North gate", longitude=117.3, latitude=31.8, status="offline",
        ),
        device("cam-2", 0.1, 4.1, name="Meter", protocol="mqtt", status="offline"),
    ]  # fmt: skip


def test_devices_view_breaks_ties_by_the_larger_value() -> None:
    """Two sources at the same millisecond: the pick must not depend on file
    order; numbers compare as numbers (10.5 > 9.5), not as text."""
    twice = [
        said("cam-1", 0, 1, name="A", status="offline", longitude=9.5),
        said("cam-1", 0, 1, name="B", status="online", longitude=10.5),
    ]
    for rows in (twice, twice[::-1]):
        _, got = run_view("devices", rows)
        assert (got[0]["name"], got[0]["status"], got[0]["longitude"]) == ("B", "online", 10.5)


def test_devices_view_merges_attributes_per_key() -> None:
    rows = [
        said("m-1", 0, 0, attributes='{"floor": "3", "zone": "b", "tags": ["x"]}'),
        said("m-1", 1, 1, attributes='{"zone": "c", "floor": null}'),  # JSON null keeps the floor
        said("m-1", 2, 2, attributes=None),
        said("m-1", 3, 3, attributes="not json"),  # ignored by the merge
        said("m-1", 0.5, 0.5, attributes='{"zone": "a", "room": 12}'),  # older than zone c
    ]
    _, got = run_view("devices", rows)
    assert got[0]["attributes"] == '{"floor":"3","room":12,"tags":["x"],"zone":"c"}'


def test_devices_view_ranks_an_untimed_row_below_every_timed_one() -> None:
    rows = [said("p-1", None, None, name="untimed", model="X"), said("p-1", 5, 5, name="timed")]
    _, got = run_view("devices", rows)
    assert got == [device("p-1", 5, 5, name="timed", model="X")]
