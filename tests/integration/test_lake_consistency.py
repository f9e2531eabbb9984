"""Snapshot consistency: analyst queries run in a loop while a real streaming
Flink job writes the lake and compaction and vacuum run beside it. No query
may see a duplicate, lose a row an earlier query saw, or meet a half-written
file; at the end the lake holds every landed reading exactly once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from citylake.config import load_config
from citylake.devstack import ManagedProcess
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.lake.compaction import compact_table
from citylake.lake.retention import vacuum_table
from citylake.schemas import DataLayout, table

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000
CITYLAKE = [sys.executable, "-m", "citylake"]
BATCH = 25
# Reading n has value n: a repeat shows in the distinct counts, a gap or a
# partial file in the sum once everything has landed.
CHECK_SQL = """
SELECT count(*), count(DISTINCT (device_id, ts)), coalesce(sum(value), 0),
       coalesce(max(value), -1), count(DISTINCT value)
FROM readings
"""


def meter_reading(n: int) -> dict[str, Any]:
    return {
        "device_id": f"meter-{n % 17}", "ts": T0 + n, "metric": "kwh", "value": float(n), "text": None,
        "unit": "kWh", "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
    }  # fmt: skip


class Traffic:
    """Ingest landing files, maintenance compacting and vacuuming, analysts querying."""

    def __init__(self, layout: DataLayout, lake: Lake) -> None:
        self.layout, self.lake = layout, lake
        self.writer = LandingWriter(layout)
        self.stop = threading.Event()
        self.landed = 0
        self.problems: list[str] = []
        self.counts = {"queries": 0, "compacted": 0, "merged": 0, "deleted": 0}

    def ingest(self) -> None:
        while not self.stop.is_set():
            batcher = ColumnBatcher(table("readings"))
            for n in range(self.landed, self.landed + BATCH):
                batcher.append(meter_reading(n))
            self.writer.write(table("readings"), batcher.take()[0])
            self.landed += BATCH
            time.sleep(0.2)

    def maintain(self) -> None:
        spec = table("readings")
        while not self.stop.is_set():
            result = compact_table(self.layout, spec, min_files=2)
            self.counts["compacted"] += result.files_out
            self.counts["merged"] += result.files_in
            # A short grace so deletes happen during the test, still far longer
            # than a query takes from planning to reading.
            self.counts["deleted"] += vacuum_table(self.layout, spec, timedelta(seconds=1)).files_deleted
            time.sleep(0.5)

    def query(self) -> None:
        seen = 0
        while not self.stop.is_set():
            try:
                rows, distinct, _, _, values = self.lake.cursor().execute(CHECK_SQL).fetchone()  # type: ignore[misc]
            except Exception as exc:  # a half-written or vanished file surfaces here
                self.problems.append(f"query failed: {exc}")
                return
            self.counts["queries"] += 1
            if rows != distinct or rows != values:
                self.problems.append(f"duplicates: {rows} rows, {distinct} keys, {values} values")
            if rows < seen:
                self.problems.append(f"rows went from {seen} to {rows}")
            seen = rows
            time.sleep(0.05)


def test_queries_see_consistent_snapshots_while_flink_writes_and_compaction_runs(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = city_config()
    layout = DataLayout(load_config(config).config.data_dir)
    lake = Lake(layout)
    traffic = Traffic(layout, lake)
    argv = [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config)]
    job = ManagedProcess("readings-job", argv, tmp_path / "job.log").start()
    threads = [
        threading.Thread(target=f) for f in (traffic.ingest, traffic.maintain, traffic.query, traffic.query)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(40)
        traffic.stop.set()
        for thread in threads:
            thread.join(60)
        deadline = time.monotonic() + 90
        final: Any = (0,)
        while final[0] < traffic.landed and time.monotonic() < deadline:
            assert job.alive(), job.log_tail()
            time.sleep(1)
            final = lake.cursor().execute(CHECK_SQL).fetchone()
        last = compact_table(layout, table("readings"), min_files=2)
        after = lake.cursor().execute(CHECK_SQL).fetchone()
    finally:
        traffic.stop.set()
        job.stop()
        lake.close()
    counts, landed = traffic.counts, traffic.landed
    assert not traffic.problems, traffic.problems[:5]
    assert counts["queries"] > 100 and counts["compacted"] > 3 and counts["deleted"] > 0, counts
    expected = (landed, landed, float(landed * (landed - 1) // 2), float(landed - 1), landed)
    assert tuple(final) == expected, (final, expected, counts)
    assert after == final and last.rows > 0
