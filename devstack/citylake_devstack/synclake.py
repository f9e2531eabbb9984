"""Edge lakes for the sync tests and benches: part files written as Flink's
sink commits them (hidden, then renamed), each reading numbered so a count, a
distinct count and a sum show any loss or repeat."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from citylake.schemas import DataLayout, table

READINGS = table("readings")
T0 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
CHECK_SQL = (
    "SELECT count(*), count(DISTINCT (device_id, ts)), coalesce(sum(value), 0), count(DISTINCT value) "
    "FROM readings"
)
SITE_COUNTS_SQL = "SELECT site, count(*) FROM readings GROUP BY site ORDER BY site"


def part_file(
    layout: DataLayout, day: int, name: str, first: int, n: int, site: str = "edge-a", devices: int = 50
) -> Path:
    """Readings ``first`` .. ``first + n - 1`` (value = number, from ``devices``
    devices in turn) in the partition of 2026-11-20 + ``day``. ``source`` is
    noise, so the file is as incompressible as real measurements."""
    if n < 1 or devices < 1 or first < 0:
        raise ValueError(f"part_file: n ({n}) and devices ({devices}) must be ≥ 1, first ({first}) ≥ 0")
    numbers = np.arange(first, first + n, dtype=np.int64)
    noise = np.random.default_rng(first).random(n)
    stamp = datetime.fromtimestamp((T0 + day * DAY_MS) / 1000, UTC).date().isoformat()
    rows = pa.table(
        {
            "device_id": pa.array([f"dev-{i % devices}" for i in numbers], pa.string()),
            "ts": pa.array(T0 + day * DAY_MS + numbers, pa.timestamp("ms")),
            "metric": pa.array(["level"] * n, pa.string()),
            "value": pa.array(numbers.astype(np.float64)),
            "text": pa.array([None] * n, pa.string()),
            "unit": pa.array(["m"] * n, pa.string()),
            "quality": pa.array(np.zeros(n, dtype=np.int32)),
            "source": pa.array([f"{noise[i]:.12f}" for i in range(n)], pa.string()),
            "site": pa.array([site] * n, pa.string()),
            "ingest_ts": pa.array(np.full(n, T0, dtype=np.int64), pa.timestamp("ms")),
        }
    )
    path = layout.lake(READINGS) / f"date={stamp}" / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.inprogress")
    pq.write_table(rows, hidden, compression="zstd")
    os.rename(hidden, path)
    return path


def expected_check(readings: int) -> tuple[int, int, float, int]:
    """What ``CHECK_SQL`` gives over readings 0 .. ``readings`` - 1, each once."""
    return (readings, readings, float(readings * (readings - 1) // 2), readings)


def edge_sites(n: int, first: str = "edge-north") -> list[str]:
    """The names of ``n`` edges of one region: ``first``, then ``edge-2`` ..."""
    if n < 1:
        raise ValueError(f"edge_sites: n ({n}) must be ≥ 1")
    return [first, *(f"edge-{i}" for i in range(2, n + 1))]


class ReadingNumbers:
    """One numbering of readings across edges (thread-safe), so that each
    reading of every edge has its own number and key: the union of the
    edges' lakes at the region and the centre holds ``expected_check(taken)``
    exactly when no reading is lost or repeated (readings with equal keys
    from two edges would be one row in the views, by the conflict rule)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    def take(self, n: int) -> int:
        """The first of ``n`` numbers no one else gets."""
        if n < 1:
            raise ValueError(f"ReadingNumbers.take: n ({n}) must be ≥ 1")
        with self._lock:
            first, self.taken = self.taken, self.taken + n
        return first


def range_check(ranges: list[tuple[int, int]]) -> tuple[int, int, float, int]:
    """What ``CHECK_SQL`` gives over readings ``first`` .. ``first + n - 1`` of
    each (first, n) in ``ranges`` (disjoint), each once: one edge's lake."""
    count = sum(n for _, n in ranges)
    total = sum(n * (2 * first + n - 1) // 2 for first, n in ranges)
    return (count, count, float(total), count)
