"""The serving store over a lake the real writer path made: readings landed by
ingest's LandingWriter, turned into the lake by the Flink ``readings`` and
``rollups`` jobs (batch mode on the mini-cluster), then compacted, retired and
vacuumed by the lake's own maintenance code. At every step the query service
answers ranges and city-wide aggregates from the store (X-Served-From: store)
with exactly the rows a lake-only service gives, and again after a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citylake.config import CityConfig, FlinkConfig, PipelinesConfig, ServiceConfig
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake.compaction import compact_table
from citylake.lake.retention import retain_table, vacuum_table
from citylake.pipelines import runner
from citylake.schemas import DataLayout, table
from citylake.services.query.app import QuerySettings, create_app

pytestmark = pytest.mark.integration
DAY0 = datetime(2026, 11, 23, tzinfo=UTC)
DEVICES = [f"meter-{d}" for d in range(4)]


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def land(data_dir: Path, start: datetime, minutes: int, offset: float) -> None:
    """One ingest commit: every device, two metrics, a reading a minute."""
    batcher = ColumnBatcher(table("readings"))
    for minute in range(minutes):
        ts = start + timedelta(minutes=minute)
        for number, device in enumerate(DEVICES):
            for metric in ("flow", "level"):
                batcher.append({
                    "device_id": device, "ts": ms(ts), "metric": metric,
                    "value": number * 1000 + minute + offset, "text": None, "unit": "m", "quality": 0,
                    "source": "s", "site": "x", "ingest_ts": ms(ts) + 500,
                })  # fmt: skip
    batch, bad = batcher.take()
    assert not bad, bad
    LandingWriter(DataLayout(data_dir)).commit([(table("readings"), batch)])


def city(data_dir: Path) -> CityConfig:
    flink = FlinkConfig(allowed_lateness_s=60, checkpoint_interval_s=1, monitor_interval_s=0.3)
    return CityConfig(site="x", data_dir=data_dir, pipelines=PipelinesConfig(flink=flink))


def run_job(data_dir: Path, job: str, start: datetime, end: datetime) -> None:
    runner.start(city(data_dir), job, "batch", time_range=(start, end)).wait()


def questions() -> list[str]:
    paths = []
    for day in (0, 1, 2):
        start = DAY0 + timedelta(days=day, hours=1)
        for device in ("meter-0", "meter-3"):
            paths.append(f"/v1/devices/{device}/readings?from={z(start)}&to={z(start + timedelta(hours=2))}")
        window = f"from={z(start)}&to={z(start + timedelta(hours=2))}"
        paths.append(f"/v1/devices/meter-1/readings?{window}&metric=flow&limit=50")
    paths.append(f"/v1/metrics/level/aggregate?from={z(DAY0)}&to={z(DAY0 + timedelta(days=3))}")
    return paths


def answer(client: TestClient, path: str) -> tuple[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.headers["x-served-from"], response.json()


def same_as_lake(stored: TestClient, lake: TestClient, within_horizon: list[str]) -> None:
    """Every question the lake answers the same from the store, once the store caught up."""
    # The lake's views trust a changed directory only once it settled (0.2 s)
    # and look at most every 0.25 s: after this both services see the change.
    time.sleep(1.0)
    deadline = time.monotonic() + 120
    for path in within_horizon:
        while (got := answer(stored, path))[0] != "store":
            assert time.monotonic() < deadline, f"the store never caught up with the lake: {path}"
            time.sleep(0.2)
        assert answer(lake, path) == ("lake", got[1]), path


def test_store_follows_what_the_jobs_and_maintenance_write(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    for day in range(3):  # three days, two commits a day: several lake files per partition
        land(tmp_path, DAY0 + timedelta(days=day, hours=1), 60, 0.0)
        land(tmp_path, DAY0 + timedelta(days=day, hours=2), 60, 0.5)
    run_job(tmp_path, "readings", DAY0, DAY0 + timedelta(days=3))
    run_job(tmp_path, "rollups", DAY0, DAY0 + timedelta(days=3))
    assert len(list((tmp_path / "lake" / "readings").rglob("part-*"))) >= 3

    stored_config = ServiceConfig.model_validate({"serving_refresh_s": 0.1})
    lake_config = ServiceConfig.model_validate({"serving_days": 0})
    paths = questions()
    with (
        TestClient(create_app(QuerySettings(tmp_path, stored_config))) as stored,
        TestClient(create_app(QuerySettings(tmp_path, lake_config))) as lake,
    ):
        same_as_lake(stored, lake, paths)
        readings_before = answer(lake, paths[0])[1]["items"]

        # New commits: the third day gets a later hour through ingest and the job.
        land(tmp_path, DAY0 + timedelta(days=2, hours=3), 30, 0.25)
        run_job(tmp_path, "readings", DAY0 + timedelta(days=2, hours=3), DAY0 + timedelta(days=2, hours=4))
        later = DAY0 + timedelta(days=2, hours=2, minutes=30)
        new_hour = f"/v1/devices/meter-2/readings?from={z(later)}&to={z(later + timedelta(hours=2))}"
        same_as_lake(stored, lake, [new_hour, *paths])
        assert any(i["ts"].startswith("2026-11-25T03:") for i in answer(stored, new_hour)[1]["items"])

        # Compaction merges each day's files into one: no row doubled or lost.
        result = compact_table(layout, table("readings"), min_files=2)
        assert result.files_in >= 2
        same_as_lake(stored, lake, [new_hour, *paths])
        assert answer(stored, paths[0])[1]["items"] == readings_before

        # Retention retires the first day, vacuum deletes it: the store drops it too.
        retain_table(layout, table("readings"), keep_days=2, today=(DAY0 + timedelta(days=2)).date())
        vacuum_table(layout, table("readings"), grace=timedelta(0))
        same_as_lake(stored, lake, [new_hour, *paths[3:]])
        gone = answer(stored, paths[0])
        assert gone == answer(lake, paths[0]) and gone[1]["items"] == []

    # A restart serves from the file it left, without loading it again.
    with (
        TestClient(create_app(QuerySettings(tmp_path, stored_config))) as stored,
        TestClient(create_app(QuerySettings(tmp_path, lake_config))) as lake,
    ):
        same_as_lake(stored, lake, [new_hour, *paths[3:]])
        store = stored.app.state.store  # type: ignore[attr-defined]
        (files,) = store.cursor().execute("SELECT count(*) FROM _files WHERE tbl = 'readings'").fetchone()
        assert files == 2, "the two kept days' compacted files, each loaded once"
