"""The serving store (services/query/store.py): the lake's newest days in a
DuckDB file, following the lake's log file by file, and the routes answering
from it exactly what the lake answers."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from citylake.config import ServiceConfig
from citylake.lake import Lake
from citylake.lake.compaction import compact_table
from citylake.lake.retention import retain_table, vacuum_table
from citylake.schemas import DataLayout, table
from citylake.services.query.app import QuerySettings, create_app
from citylake.services.query.store import ServingStore, StoreBounds, open_store, store_path
from tests.lakedata import T0, reading, write_lake_readings, write_lake_table
from tests.query_lake import build_lake

READINGS = table("readings")
ROWS_SQL = "SELECT device_id, metric, ts, value, text, unit, quality, ingest_ts FROM readings ORDER BY ALL"


def day_rows(day: int, devices: int = 3, minutes: int = 5, offset: float = 0.0) -> list[dict[str, object]]:
    start = T0 + timedelta(days=day)
    return [
        reading(f"dev-{d}", metric, start + timedelta(minutes=m), d * 100 + m + offset)
        for d in range(devices)
        for m in range(minutes)
        for metric in ("pm25", "temp")
    ]


def lake_rows(layout: DataLayout) -> list[tuple[Any, ...]]:
    lake = Lake(layout)
    try:
        return lake.cursor().execute(ROWS_SQL).fetchall()
    finally:
        lake.close()


def store_rows(store: ServingStore) -> list[tuple[Any, ...]]:
    return store.cursor().execute(ROWS_SQL).fetchall()


class Follows:
    """The store, following a Lake opened anew for each refresh (a service's
    lake refreshes its views itself; here the test decides when)."""

    def __init__(self, data_dir: Path, **bounds: int) -> None:
        self.layout = DataLayout(data_dir)
        self.store = ServingStore(self.layout, self.snapshot, StoreBounds(**bounds))

    def snapshot(self, name: str) -> Any:
        lake = Lake(self.layout)
        try:
            return lake.snapshot(name)
        finally:
            lake.close()


def test_refresh_mirrors_the_lake_through_commits_compaction_and_retention(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    write_lake_readings(tmp_path, day_rows(0), "part-a")
    write_lake_readings(tmp_path, day_rows(1), "part-a")
    follows = Follows(tmp_path)
    store = follows.store
    assert store.refresh()
    assert store_rows(store) == lake_rows(layout) and len(store_rows(store)) == 60
    assert not store.refresh(), "nothing new: a refresh changes nothing"

    # New commits of the writer: two more files in the newest day.
    write_lake_readings(tmp_path, day_rows(1, offset=0.5)[:10], "part-b")
    write_lake_readings(tmp_path, day_rows(2), "part-a")
    assert store.refresh()
    # part-b's ten are later copies of ten of day 1's keys: the conflict rule
    # (lake/views/readings.sql) gives one row per key in the store as in the lake.
    assert store_rows(store) == lake_rows(layout) and len(store_rows(store)) == 90

    # Compaction replaces day 1's two files with one sorted file: the log
    # removes the inputs, adds the output; no row may be doubled or lost.
    result = compact_table(layout, READINGS, min_files=2)
    assert result.files_in == 2
    assert store.refresh()
    assert store_rows(store) == lake_rows(layout) and len(store_rows(store)) == 90
    (count,) = store.cursor().execute("SELECT count(*) FROM _files WHERE tbl = 'readings'").fetchone() or (0,)
    assert count == 3, "day 0, day 1's compacted file, day 2"

    # Retention retires day 0, vacuum deletes its file: its rows leave the store.
    retain_table(layout, READINGS, keep_days=2, today=(T0 + timedelta(days=2)).date())
    vacuum_table(layout, READINGS, grace=timedelta(0))
    assert store.refresh()
    assert store_rows(store) == lake_rows(layout) and len(store_rows(store)) == 60
    assert store.horizon("readings") is not None
    assert store.serves("readings", T0 + timedelta(days=1))


def test_horizon_keeps_the_newest_days_within_the_bounds(tmp_path: Path) -> None:
    for day in range(4):
        write_lake_readings(tmp_path, day_rows(day), "part-a")
    follows = Follows(tmp_path, days=2)
    follows.store.refresh()
    days = {
        r[0]
        for r in follows.store.cursor().execute("SELECT DISTINCT CAST(ts AS DATE) FROM readings").fetchall()
    }
    assert days == {(T0 + timedelta(days=2)).date(), (T0 + timedelta(days=3)).date()}
    horizon = follows.store.horizon("readings")
    assert horizon is not None and horizon.date() == date(2026, 11, 27)
    assert not follows.store.serves("readings", horizon - timedelta(seconds=1)), "older: the lake's"
    assert follows.store.serves("readings", horizon)

    # readings_1m keeps its own, shorter, horizon (serving_1m_days).
    minutes = [
        {"device_id": "dev-0", "metric": "pm25", "window_start": T0 + timedelta(days=day), "count": 1}
        for day in range(4)
    ]
    for row in minutes:
        write_lake_table(tmp_path, "readings_1m", [row])
    follows.store.close()
    short = Follows(tmp_path, days=8, minute_days=1)
    short.store.refresh()
    assert short.store.horizon("readings_1m") == T0.replace(hour=0, minute=0) + timedelta(days=3)
    assert short.store.counts()["readings_1m"] == 1 and short.store.counts()["readings"] == 120
    short.store.close()

    # A row bound that holds one day's 30 rows but not two keeps only the newest.
    by_rows = Follows(tmp_path / "again", days=8, max_rows=45)
    for day in range(4):
        write_lake_readings(tmp_path / "again", day_rows(day), "part-a")
    by_rows.store.refresh()
    horizon = by_rows.store.horizon("readings")
    assert horizon is not None and horizon.date() == date(2026, 11, 28)
    assert by_rows.store.counts()["readings"] == 30


def test_store_serves_only_while_it_holds_the_lakes_current_snapshot(tmp_path: Path) -> None:
    write_lake_readings(tmp_path, day_rows(0), "part-a")
    follows = Follows(tmp_path)
    assert not follows.store.serves("readings", T0), "not caught up yet"
    follows.store.refresh()
    assert follows.store.serves("readings", T0)
    write_lake_readings(tmp_path, day_rows(0, offset=0.5)[:4], "part-b")
    assert not follows.store.serves("readings", T0), "the lake has a file the store has not loaded"
    follows.store.refresh()
    assert follows.store.serves("readings", T0)


def test_restart_goes_on_from_the_file_and_a_damaged_file_is_rebuilt(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    write_lake_readings(tmp_path, day_rows(0), "part-a")
    first = Follows(tmp_path)
    first.store.refresh()
    first.store.close()

    write_lake_readings(tmp_path, day_rows(1), "part-a")
    again = Follows(tmp_path)
    (loaded,) = again.store.cursor().execute("SELECT count(*) FROM readings").fetchone() or (0,)
    assert loaded == 30, "the restarted store still holds what it loaded"
    again.store.refresh()
    assert store_rows(again.store) == lake_rows(layout)
    (files,) = again.store.cursor().execute("SELECT count(*) FROM _files").fetchone() or (0,)
    assert files == 2, "day 0 was not loaded twice"
    again.store.close()

    store_path(layout).write_bytes(b"not a duckdb file" * 100)
    rebuilt = Follows(tmp_path)
    assert rebuilt.store.counts()["readings"] == 0
    rebuilt.store.refresh()
    assert store_rows(rebuilt.store) == lake_rows(layout)
    rebuilt.store.close()


def test_store_of_another_process_is_never_deleted(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    write_lake_readings(tmp_path, day_rows(0), "part-a")
    first = Follows(tmp_path)
    first.store.refresh()
    first.store.close()
    # Another process (a second replica on this data directory) holds the file.
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(store_path(layout))!r}); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert open_store(layout, Follows.snapshot.__get__(first), StoreBounds()) is None
    finally:
        holder.communicate("")
    reopened = Follows(tmp_path)
    assert reopened.store.counts()["readings"] == 30, "its file was left whole"
    reopened.store.close()


# -- the routes -------------------------------------------------------------


def build(data_dir: Path) -> None:
    write_lake_readings(data_dir, day_rows(0, devices=4, minutes=30), "part-a")
    write_lake_readings(data_dir, day_rows(1, devices=4, minutes=30), "part-a")
    write_lake_table(data_dir, "devices", [])
    write_lake_table(
        data_dir,
        "readings_1h",
        [
            {
                "device_id": f"dev-{d}",
                "metric": "pm25",
                "window_start": T0 + timedelta(days=day, hours=h),
                "count": 6,
                "min": 1.0,
                "max": float(d + h),
                "avg": d * 1.5 + h,
                "last": 2.0,
            }
            for day in (0, 1)
            for d in range(4)
            for h in range(3)
        ],
    )
    write_lake_table(data_dir, "readings_1m", minute_rows("edge-a"))
    # A second site rolled up dev-1's first minutes again, having heard more
    # of them: the rollups' rule keeps its rows, in the store as in the lake.
    write_lake_table(
        data_dir,
        "readings_1m",
        [dict(r, count=9) for r in minute_rows("edge-b", days=(1,)) if r["device_id"] == "dev-1"][:6],
        "part-b",
    )


def minute_rows(site: str, days: tuple[int, ...] = (0, 1)) -> list[dict[str, object]]:
    return [
        {
            "device_id": f"dev-{d}",
            "metric": metric,
            "window_start": T0 + timedelta(days=day, minutes=m),
            "count": 3,
            "min": 1.0,
            "max": float(d + m),
            "avg": d * 0.5 + m,
            "last": 2.0,
            "site": site,
        }
        for day in days
        for d in range(4)
        for m in range(20)
        for metric in ("pm25", "temp")
    ]


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def get(client: TestClient, path: str) -> tuple[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.headers.get("x-served-from", ""), response.json()


def wait_for_store(client: TestClient, path: str) -> None:
    deadline = time.monotonic() + 30
    while get(client, path)[0] != "store":
        assert time.monotonic() < deadline, "the store never caught up"
        time.sleep(0.1)


def test_routes_answer_from_the_store_what_the_lake_answers(tmp_path: Path) -> None:
    build(tmp_path)
    start = T0 + timedelta(days=1, minutes=5)
    paths = [
        f"/v1/devices/dev-2/readings?from={z(start)}&to={z(start + timedelta(hours=1))}",
        f"/v1/devices/dev-1/readings?from={z(start)}&to={z(start + timedelta(hours=1))}&metric=temp&limit=7",
        f"/v1/metrics/pm25/aggregate?from={z(T0)}&to={z(T0 + timedelta(days=2))}",
        f"/v1/devices/dev-1/rollups/1m?from={z(T0 + timedelta(days=1))}&to={z(start + timedelta(hours=1))}",
        f"/v1/devices/dev-3/rollups/1m?from={z(start)}&to={z(start + timedelta(hours=1))}&limit=5",
    ]
    settings = QuerySettings(tmp_path, ServiceConfig.model_validate({"serving_refresh_s": 0.05}))
    lake_only = QuerySettings(tmp_path, ServiceConfig.model_validate({"serving_days": 0}))
    with TestClient(create_app(settings)) as stored, TestClient(create_app(lake_only)) as lake:
        wait_for_store(stored, paths[0])
        for path in paths:
            served, body = get(stored, path)
            assert served == "store", path
            assert get(lake, path) == ("lake", body), path
        # The next page through the store's cursor is the lake's next page.
        _, first = get(stored, paths[1])
        assert first["next_cursor"]
        follow = paths[1] + f"&cursor={first['next_cursor']}"
        assert get(stored, follow)[1] == get(lake, follow)[1]
        _, minutes = get(stored, paths[4])
        assert len(minutes["items"]) == 5 and minutes["next_cursor"]
        follow = paths[4] + f"&cursor={minutes['next_cursor']}"
        assert get(stored, follow) == ("store", get(lake, follow)[1])
        counts = [item["count"] for item in get(stored, paths[3])[1]["items"]]
        assert counts[:6] == [9] * 6 and set(counts[6:]) == {3}, "edge-b's fuller copies win"

        # One device's hours are the lake's: the store keeps readings_1h in
        # the city-wide aggregate's order.
        hours = f"/v1/devices/dev-1/rollups/1h?from={z(T0)}&to={z(T0 + timedelta(days=2))}"
        assert get(stored, hours) == get(lake, hours) and get(stored, hours)[0] == "lake"

        # A new commit: the store answers again once it holds it, the same rows as the lake.
        write_lake_readings(tmp_path, day_rows(1, devices=4, minutes=30, offset=0.25)[:40], "part-b")
        wait_for_store(stored, paths[0])
        assert get(stored, paths[0])[1] == get(lake, paths[0])[1]

        # Unknown devices and ranges before the horizon are still the lake's answers.
        missing = paths[0].replace("dev-2", "nobody")
        assert stored.get(missing).status_code == 404
        old = paths[0].replace("2026-11-26", "2026-10-01")
        assert get(stored, old)[0] == "lake"


def test_district_latest_from_the_hot_tier_is_the_lakes_answer(tmp_path: Path) -> None:
    build_lake(tmp_path)
    hot = QuerySettings(tmp_path, ServiceConfig.model_validate({"live_pubsub": "citylake-pubsub"}))
    lake_only = QuerySettings(tmp_path, ServiceConfig.model_validate({"serving_days": 0}))
    with TestClient(create_app(hot)) as tiered, TestClient(create_app(lake_only)) as lake:
        deadline = time.monotonic() + 30
        while tiered.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the hot tier never rebuilt"
            time.sleep(0.1)
        for query in ("district=320106", "district=gulou", "type=ipc", "district=3201&limit=1"):
            path = f"/v1/metrics/temp/latest?{query}"
            served, body = get(tiered, path)
            assert served == "hot", path
            assert get(lake, path) == ("lake", body), path
        _, first = get(tiered, "/v1/metrics/temp/latest?district=3201&limit=1")
        assert [i["device_id"] for i in first["items"]] == ["air-1"] and first["next_cursor"]
        follow = f"/v1/metrics/temp/latest?district=3201&limit=1&cursor={first['next_cursor']}"
        assert get(tiered, follow) == ("hot", get(lake, follow)[1])
        assert get(tiered, "/v1/metrics/temp/latest")[0] == "lake", "every device: the lake's"
