"""Landing throughput: rows/s through citylake's validate -> batch -> durable
Parquet path, against pyarrow alone writing the same rows (the baseline).

    .venv/bin/python bench/bench_landing.py [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from citylake.ingest.landing import LandingWriter
from citylake.ingest.landing_buffer import FlushPolicy, LandingBuffer
from citylake.ingest.metrics import IngestMetrics
from citylake.schemas import DataLayout, table

T0 = 1_764_072_000_000


def make_rows(count: int) -> list[dict[str, object]]:
    return [
        {
            "device_id": f"dev-{i % 10_000:05d}",
            "ts": T0 + i,
            "metric": ("pm25", "temp", "db")[i % 3],
            "value": float(i % 997),
            "text": None,
            "unit": "u",
            "quality": 0,
            "source": "mqtt",
            "site": "s1",
            "ingest_ts": T0 + i,
        }
        for i in range(count)
    ]


def citylake_path(rows: list[dict[str, object]], directory: Path) -> float:
    buffer = LandingBuffer(LandingWriter(DataLayout(directory)), IngestMetrics(), FlushPolicy())
    spec = table("readings")
    started = time.perf_counter()
    for start in range(0, len(rows), 100):  # inputs of 100 readings, like batched JSON
        buffer.add("bench", spec, rows[start : start + 100], b"", None)
    asyncio.run(buffer.flush())
    return time.perf_counter() - started


def pyarrow_baseline(rows: list[dict[str, object]], directory: Path) -> float:
    schema = table("readings").schema
    started = time.perf_counter()
    columns = {name: [r[name] for r in rows] for name in schema.names}
    arrow = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(arrow, directory / "baseline.parquet", compression="zstd")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    ours, theirs = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ours.append(citylake_path(rows, Path(a)))
            theirs.append(pyarrow_baseline(rows, Path(b)))
    best_ours, best_theirs = min(ours), min(theirs)
    print(f"rows per run                 {args.rows}")
    print(f"citylake landing (validate + batch + fsync'd Parquet)  {args.rows / best_ours:12,.0f} rows/s")
    print(f"baseline pyarrow from_pydict + write_table            {args.rows / best_theirs:12,.0f} rows/s")
    print(f"ratio citylake / baseline    {best_theirs / best_ours:.2f}")


if __name__ == "__main__":
    main()
