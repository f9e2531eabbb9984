"""The hot tier answers like the lake would, whatever the order or repetition
of what it is fed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake.services.query.hot_tier import HotTier
from tests.lakedata import reading, write_lake_readings

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Windows are relative to the wall clock: each test's instants start now."""
    global NOW  # noqa: PLW0603 - the helpers below read it
    NOW = datetime.now(UTC).replace(microsecond=0)


def batch(
    *rows: tuple[str, str, datetime, float | None, str | None], ingest: datetime | None = None
) -> pa.Table:
    ingest = ingest or NOW
    return pa.table(
        {
            "device_id": pa.array([r[0] for r in rows]).dictionary_encode(),
            "metric": [r[1] for r in rows],
            "ts": pa.array([r[2] for r in rows], pa.timestamp("ms", tz="UTC")),
            "value": pa.array([r[3] for r in rows], pa.float64()),
            "text": pa.array([r[4] for r in rows], pa.string()),
            "unit": ["m"] * len(rows),
            "quality": pa.array([0] * len(rows), pa.uint8()),
            "source": ["s"] * len(rows),
            "ingest_ts": pa.array([ingest] * len(rows), pa.timestamp("ms", tz="UTC")),
        }
    )


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_latest_is_the_newest_reading_whatever_the_arrival_order() -> None:
    hot = HotTier()
    hot.apply(batch(("p1", "level", ago(5), 2.0, None), ("p1", "level", ago(1), 3.0, None)))
    hot.apply(batch(("p1", "level", ago(30), 9.0, None)))  # late: older than what is known
    hot.apply(batch(("p1", "state", ago(2), None, "open"), ("p2", "level", ago(3), 7.0, None)))
    assert [(r["metric"], r["value"], r["text"]) for r in hot.latest("p1") or []] == [
        ("level", 3.0, None),
        ("state", None, "open"),
    ]
    assert hot.latest("p1", "level") == [
        {"metric": "level", "ts": ago(1), "value": 3.0, "text": None, "unit": "m", "quality": 0}
    ]
    assert hot.latest("p1", "flow") == []
    assert hot.latest("unknown") is None


def test_a_batch_twice_changes_nothing_and_a_correction_wins_by_ingest_time() -> None:
    hot = HotTier()
    first = batch(("p1", "level", ago(5), 2.0, None), ("p1", "level", ago(4), 2.5, None))
    hot.apply(first)
    hot.apply(first)
    hot.evict()  # merges chunks, which drops repeats
    assert hot.counts() == {"devices": 1, "latest_values": 1, "recent_readings": 2}
    hot.apply(batch(("p1", "level", ago(4), 2.6, None), ingest=NOW + timedelta(seconds=1)))
    assert (hot.latest("p1", "level") or [{}])[0]["value"] == 2.6
    assert [r["value"] for r in hot.readings("p1", ago(60), NOW)] == [2.0, 2.6]


def test_readings_of_the_recent_window_in_time_order_and_old_ones_evicted() -> None:
    hot = HotTier(window=timedelta(seconds=60))
    hot.apply(batch(("p1", "level", ago(90), 1.0, None), ("p1", "level", ago(30), 2.0, None)))
    hot.apply(batch(("p1", "level", ago(10), 3.0, None), ("p2", "level", ago(10), 8.0, None)))
    for _ in range(20):  # many small chunks are merged as they come
        hot.apply(batch(("p3", "level", ago(5), 0.0, None)))
    got = hot.readings("p1", ago(60), NOW + timedelta(seconds=1))
    assert [(r["value"], r["ts"]) for r in got] == [(2.0, ago(30)), (3.0, ago(10))]
    assert hot.readings("p1", ago(20), ago(9)) == [got[1]]
    assert hot.readings("nobody", ago(60), NOW) == []
    # The 90 s old reading never entered the window, but it is p1's history:
    # latest values are not windowed.
    hot.evict()
    assert hot.counts()["recent_readings"] == 4


def test_covers_only_ranges_inside_the_window_and_after_the_rebuild() -> None:
    hot = HotTier(window=timedelta(minutes=10))
    assert not hot.covers(ago(60)), "not ready before the rebuild"
    hot.ready, hot.covered_from_ms = True, int(ago(120).timestamp() * 1000)
    assert hot.covers(ago(60))
    assert not hot.covers(ago(300)), "before the rebuild the window may have gaps"


def test_missing_columns_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="lacks columns ingest_ts"):
        HotTier().apply(batch(("p1", "level", ago(1), 1.0, None)).drop(["ingest_ts"]))


def test_rebuild_from_the_lake_then_live_rows_merge_without_duplicates(tmp_path: Path) -> None:
    rows = [reading("p1", "level", ago(s), float(s)) for s in (400, 200, 100)]
    rows.append(reading("p2", "level", ago(3 * 86_400), 5.0))  # old: latest only
    write_lake_readings(tmp_path, rows)
    lake = Lake(DataLayout(tmp_path))
    hot = HotTier(window=timedelta(minutes=5))
    hot.rebuild(lake)
    assert hot.ready
    assert (hot.latest("p2") or [{}])[0]["value"] == 5.0
    assert [r["value"] for r in hot.readings("p1", ago(300), NOW)] == [200.0, 100.0]
    hot.apply(batch(("p1", "level", ago(100), 100.0, None), ingest=ago(100)))  # the same reading, live
    hot.apply(batch(("p1", "level", ago(1), 1.0, None)))
    assert [r["value"] for r in hot.readings("p1", ago(300), NOW)] == [200.0, 100.0, 1.0]
    assert (hot.latest("p1") or [{}])[0]["value"] == 1.0
    lake.close()


def test_the_rebuild_takes_each_keys_newest_reading_and_a_later_ingest_on_a_tie(tmp_path: Path) -> None:
    """What the lake's latest view answers: newest event time, and of two rows
    at one instant the one ingested later."""
    at = ago(3 * 86_400)  # outside the window: only the latest-value arrays hold it
    rows = [
        reading("p1", "level", at - timedelta(seconds=10), 9.0),
        {**reading("p1", "level", at, 1.0), "ingest_ts": at + timedelta(seconds=1)},
        {**reading("p1", "level", at, 2.0), "ingest_ts": at + timedelta(seconds=5)},
        reading(
            "p1",
            "temp",
            at - timedelta(seconds=1),
            7.0,
        ),
    ]
    write_lake_readings(tmp_path, rows)
    lake = Lake(DataLayout(tmp_path))
    hot = HotTier(window=timedelta(minutes=5))
    hot.rebuild(lake)
    latest = {r["metric"]: r for r in hot.latest("p1") or []}
    assert latest["level"]["value"] == 2.0 and latest["level"]["ts"] == at
    assert latest["temp"]["value"] == 7.0
    lake.close()


def test_the_rebuild_agrees_with_the_readings_view_on_equal_ingest_times(tmp_path: Path) -> None:
    """Two edges' copies of one key, ingested at the same instant: the rebuild
    (over every copy) takes the one the lake's deduplicated view shows (the
    larger site, then the larger value)."""
    at = ago(3 * 86_400)
    rows = [
        {**reading("p1", "level", at, 9.0), "site": "edge-a"},
        {**reading("p1", "level", at, 1.0), "site": "edge-b"},
        {**reading("p1", "temp", at, 3.0), "site": "edge-a"},
        {**reading("p1", "temp", at, 4.0), "site": "edge-a"},
    ]
    write_lake_readings(tmp_path, rows)
    lake = Lake(DataLayout(tmp_path))
    view = dict(lake.cursor().execute("SELECT metric, value FROM readings WHERE device_id = 'p1'").fetchall())
    assert view == {"level": 1.0, "temp": 4.0}
    hot = HotTier(window=timedelta(minutes=5))
    hot.rebuild(lake)
    assert {r["metric"]: r["value"] for r in hot.latest("p1") or []} == view
    lake.close()
