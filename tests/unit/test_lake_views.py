"""lake/views/*.sql, the read-time folds of tables whose lake rows are
partial, run in DuckDB over hand-written rows standing in for ``{raw}`` (the
table's files cast to the contract's columns, plus ``date``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from citylake.lake.catalog import fold_sql
from citylake.schemas import PARTITION_COLUMN, table

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
    sql = fold_sql(table(name))
    assert sql is not None and sql.count("{raw}") == 1 and "{" not in sql.replace("{raw}", "")
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


# --- readings: the conflict rule ------------------------------------------------


def reading(site: str, ingest: float, value: float | None, minute: float = 0, **columns: object) -> Row:
    return {
        "device_id": "meter-1", "ts": at(minute), "metric": "flow", "value": value, "text": None,
        "unit": "m3/h", "quality": 0, "source": "mqtt", "site": site, "ingest_ts": at(ingest),
        "date": date(2025, 11, 25), **columns,
    }  # fmt: skip


def winners(rows: list[Row]) -> list[tuple[Any, ...]]:
    """The view's rows as (ts, site, ingest_ts, value), for rows in both orders."""
    found: list[list[tuple[Any, ...]]] = []
    for ordered in (rows, rows[::-1]):
        _, got = run_view("readings", ordered)
        found.append(sorted((r["ts"], r["site"], r["ingest_ts"], r["value"]) for r in got))
    assert found[0] == found[1], "the pick depends on the order the files were read in"
    return found[0]


def test_readings_view_has_the_contract_columns() -> None:
    columns, _ = run_view("readings", [reading("edge-a", 1, 1.0)])
    assert columns == contract("readings").names


def test_readings_view_keeps_one_row_per_key_from_two_edges_the_later_ingest() -> None:
    """Two edges heard the same meter at the same instant and both shipped it:
    the copy ingested later wins, whichever site's name is larger."""
    got = winners([reading("edge-b", 1, 5.0), reading("edge-a", 2, 7.0)])
    assert got == [(at(0), "edge-a", at(2), 7.0)]


def test_readings_view_keeps_one_row_of_a_replayed_key() -> None:
    """A backfill replayed past the job's dedupe window: one row, the replay's."""
    got = winners(
        [reading("edge-a", 1, 5.0), reading("edge-a", 30, 5.0), reading("edge-a", 1, 6.0, minute=1)]
    )
    assert got == [(at(0), "edge-a", at(30), 5.0), (at(1), "edge-a", at(1), 6.0)]


def test_readings_view_resolves_a_device_that_moved_sites() -> None:
    """A meter moved from edge-a to edge-b: its readings before and after stay
    (different instants are different keys), the instant both sites sent
    resolves by the rule."""
    rows = [
        reading("edge-a", 0.5, 1.0, minute=0),
        reading("edge-a", 1.5, 2.0, minute=1),
        reading("edge-b", 1.6, 2.5, minute=1),  # the moment of the move, heard by both
        reading("edge-b", 2.5, 3.0, minute=2),
    ]
    assert winners(rows) == [
        (at(0), "edge-a", at(0.5), 1.0),
        (at(1), "edge-b", at(1.6), 2.5),
        (at(2), "edge-b", at(2.5), 3.0),
    ]


def test_readings_view_breaks_equal_times_by_site_then_value() -> None:
    assert winners([reading("edge-b", 1, 5.0), reading("edge-a", 1, 9.0)]) == [(at(0), "edge-b", at(1), 5.0)]
    assert winners([reading("edge-a", 1, 10.5), reading("edge-a", 1, 9.5)]) == [
        (at(0), "edge-a", at(1), 10.5)
    ]
    # A text reading (no value) against a value: a null never wins over a value.
    got = winners([reading("edge-a", 1, None, text="ok"), reading("edge-a", 1, 1.0)])
    assert got == [(at(0), "edge-a", at(1), 1.0)]


def test_device_events_view_keeps_one_row_per_event_by_the_same_rule() -> None:
    def event(site: str, ingest: float, attributes: str | None) -> Row:
        return {
            "device_id": "cam-1", "ts": at(0), "kind": "alarm", "attributes": attributes, "source": "gb",
            "site": site, "ingest_ts": at(ingest), "date": date(2025, 11, 25),
        }  # fmt: skip

    rows = [event("edge-b", 1, '{"a": 1}'), event("edge-a", 2, '{"a": 2}'), event("edge-b", 2, None)]
    for ordered in (rows, rows[::-1]):
        columns, got = run_view("device_events", ordered)
        assert columns == contract("device_events").names
        assert [(r["site"], r["attributes"]) for r in got] == [("edge-b", None)]


# --- rollups: one row per window, the same rule at every tier -----------------


def rolled(site: str | None, count: int, avg: float, minute: int = 0, **columns: object) -> Row:
    return {
        "device_id": "air-1", "metric": "pm25", "window_start": at(minute), "count": count,
        "min": avg - 1, "max": avg + 1, "avg": avg, "last": avg, "site": site,
        "date": date(2025, 11, 25), **columns,
    }  # fmt: skip


def rollup_winners(name: str, rows: list[Row]) -> list[tuple[Any, ...]]:
    """The view's rows as (window_start, site, count, avg), for rows in both orders."""
    found: list[list[tuple[Any, ...]]] = []
    for ordered in (rows, rows[::-1]):
        columns, got = run_view(name, ordered)
        assert columns == contract(name).names
        found.append(sorted((r["window_start"], r["site"], r["count"], r["avg"]) for r in got))
    assert found[0] == found[1], "the pick depends on the order the files were read in"
    return found[0]


@pytest.mark.parametrize("name", ["readings_1m", "readings_1h"])
def test_rollups_view_counts_a_window_two_sites_rolled_up_once(name: str) -> None:
    """Two edges heard the same device for the whole window (or a backfill was
    replayed at two edges): the same readings, equal rows; one counts, so the
    window's count is the distinct readings', not twice that."""
    got = rollup_winners(
        name, [rolled("edge-a", 6, 20.0), rolled("edge-b", 6, 20.0), rolled("edge-b", 3, 9.0, 1)]
    )
    assert got == [(at(0), "edge-b", 6, 20.0), (at(1), "edge-b", 3, 9.0)]


def test_rollups_view_breaks_equal_counts_by_site_then_values_a_null_site_lowest() -> None:
    assert rollup_winners("readings_1m", [rolled("edge-b", 6, 1.0), rolled("edge-a", 6, 9.0)]) == [
        (at(0), "edge-b", 6, 1.0)
    ]
    # One site's two rows of a window (its streaming job and a batch run): the larger last.
    assert rollup_winners("readings_1m", [rolled("edge-a", 6, 1.0), rolled("edge-a", 6, 2.0)]) == [
        (at(0), "edge-a", 6, 2.0)
    ]
    # A file from before rollups carried a site: any site's row wins over it.
    assert rollup_winners("readings_1m", [rolled(None, 6, 9.0), rolled("edge-a", 6, 1.0)]) == [
        (at(0), "edge-a", 6, 1.0)
    ]


def test_rollups_view_keeps_the_site_that_saw_more_of_a_window_a_device_moved_in() -> None:
    """A device moved from edge-a to edge-b 40 s into a minute: edge-a rolled up
    4 of its readings, edge-b 2. The rule keeps edge-a's row (the larger count,
    the smaller loss): that minute counts 4 of the 6 distinct readings, which
    the readings view still holds whole (lake/README.md, "Conflict rule"). A
    batch run that took late readings in wins over the streaming row the same
    way."""
    got = rollup_winners("readings_1m", [rolled("edge-a", 4, 20.0), rolled("edge-b", 2, 30.0)])
    assert got == [(at(0), "edge-a", 4, 20.0)]
    got = rollup_winners("readings_1m", [rolled("edge-a", 5, 20.0), rolled("edge-a", 6, 21.0)])
    assert got == [(at(0), "edge-a", 6, 21.0)]
