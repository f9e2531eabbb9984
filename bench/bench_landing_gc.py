"""What one landing-collector run costs at the 100k-device run's rate: a
minute of 1 s landing files (4.4k readings each) checked against a lake
partition that also holds a compacted file of the day so far (sorted by
device, so its row groups span the whole day and the time filter prunes
nothing). Lake files are written with pyarrow in Flink's layout; what is
measured is the collector's anti-join and footer reads.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_landing_gc.py [--files 60 --rows 4400 --day-rows 20000000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citylake.config import CityConfig
from citylake.ingest.landing import LandingWriter
from citylake.lake.landing_gc import collect_landing
from citylake.schemas import DataLayout, table

T0 = 1_764_072_000_000
DEVICES = 100_000


def readings(start: int, count: int) -> pa.Table:
    n = pa.array(range(start, start + count), pa.int64())
    device = pc.cast(
        pc.binary_join_element_wise("dev-", pc.cast(pc.divide(n, 7), pa.string()), ""), pa.string()
    )
    return pa.table(
        {
            "device_id": device,
            "ts": pc.cast(pc.add(n, T0), pa.timestamp("ms", tz="UTC")),
            "metric": pa.array(["kwh"] * count),
            "value": pc.cast(n, pa.float64()),
            "text": pa.nulls(count, pa.string()),
            "unit": pa.nulls(count, pa.string()),
            "quality": pa.array([0] * count, pa.uint8()),
            "source": pa.array(["bench"] * count),
            "site": pa.array(["bench"] * count),
            "ingest_ts": pc.cast(pc.add(n, T0), pa.timestamp("ms", tz="UTC")),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60, help="landing files the run examines")
    parser.add_argument("--rows", type=int, default=4400, help="readings per landing file")
    parser.add_argument("--day-rows", type=int, default=20_000_000, help="rows of the compacted lake file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="citylake-gc-bench-"))
    layout = DataLayout(root)
    spec = table("readings")
    lake = layout.lake(spec) / "date=2025-11-25"
    lake.mkdir(parents=True)
    print(f"writing a compacted lake file of {args.day_rows:,} rows", flush=True)
    day = readings(10**9, args.day_rows).sort_by([("device_id", "ascending"), ("ts", "ascending")])
    pq.write_table(day, lake / "compacted-0.parquet", compression="zstd", row_group_size=1_000_000)
    writer = LandingWriter(layout)
    print(f"landing {args.files} files of {args.rows} readings and their lake part files", flush=True)
    for i in range(args.files):
        rows = readings(i * args.rows, args.rows)
        writer.write(spec, rows.to_batches()[0].cast(spec.schema))
        pq.write_table(rows, lake / f"part-{i}-0.parquet", compression="zstd")
    config = CityConfig.model_validate(
        {
            "site": "bench",
            "data_dir": root,
            "pipelines": {"jobs": ["readings"]},
            "landing": {"replay_window_h": 0},
        }
    )
    started = time.perf_counter()
    result = collect_landing(config)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"removed {result.removed} of {args.files} files ({args.files * args.rows:,} readings) "
        f"against {args.day_rows + args.files * args.rows:,} lake rows in {elapsed:.2f} s; "
        f"peak RSS {peak_mb:.0f} MB (most of it this bench building its data)"
    )


if __name__ == "__main__":
    main()
