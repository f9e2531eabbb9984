"""Batch backfill: readings per second through the ``readings`` and ``rollups``
jobs in Flink batch mode (the local mini-cluster), each alone and both as ONE
Flink job (what a site's backfill runs: landing read and deduplicated once),
against DuckDB doing the same transform (dedupe on device, metric, ts; 1 m and
1 h rollups with the same ``last``; zstd Parquet partitioned by date) on the
same landing files.

Flink's start-up is stated apart: the gateway JVM's start, and per job the
wall time of the same job over an empty landing zone (planning, deploying the
tasks, finishing), which is subtracted to give the processing rate. Both
rates are printed; the ratio is of processing rates.

    .venv/bin/python bench/bench_backfill.py [--readings 2000000] [--parallelism 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from citylake.config import CityConfig, FlinkConfig, PipelinesConfig
from citylake.ingest.landing import LandingWriter
from citylake.pipelines import runner
from citylake.pipelines.jobs import JobSet
from citylake.schemas import DataLayout, table

T0 = 1_764_028_800_000  # 2025-11-25T00:00:00Z
DUPLICATE_EVERY = 100  # 1 % of readings arrive twice (gateway retries)


def land(layout: DataLayout, readings: int, devices: int) -> int:
    """Landing files as ingest writes them: 100k readings per commit, in
    arrival order, spread over two days, with repeats."""
    writer = LandingWriter(layout)
    spec = table("readings")
    landed = 0
    chunk = 100_000
    for start in range(0, readings, chunk):
        n = min(chunk, readings - start)
        rows = list(range(start, start + n)) + list(range(start, start + n, DUPLICATE_EVERY))
        devices_col = [f"dev-{i % devices:05d}" for i in rows]
        # One reading per device every devices*100 ms of event time: ~2 days for 2M readings.
        ts = [T0 + (i // devices) * 60_000 + (i % devices) for i in rows]
        batch = pa.RecordBatch.from_pydict(
            {
                "device_id": devices_col,
                "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                "metric": [("pm25", "no2", "noise")[i % 3] for i in rows],
                "value": [float((i * 7919) % 1000) / 10 for i in rows],
                "text": pa.nulls(len(rows), pa.string()),
                "unit": ["u"] * len(rows),
                "quality": pa.array([0] * len(rows), pa.uint8()),
                "source": ["mqtt"] * len(rows),
                "site": ["edge-1"] * len(rows),
                "ingest_ts": pa.array([t + 500 for t in ts], pa.timestamp("ms", tz="UTC")),
            },
            schema=spec.schema,
        )
        writer.write(spec, batch)
        landed += len(rows)
    return landed


FLINK_RUNS = {"readings": ("readings",), "rollups": ("rollups",), "both": ("readings", "rollups")}


def gateway_start_s() -> float:
    """The PyFlink gateway JVM's start (paid once per process)."""
    from pyflink.java_gateway import get_gateway

    started = time.perf_counter()
    get_gateway()
    return time.perf_counter() - started


def flink(config: CityConfig, empty: CityConfig) -> tuple[dict[str, float], dict[str, float]]:
    """Per run: wall seconds over the landing files, and over an empty landing zone (start-up)."""
    seconds, startup = {}, {}
    for name, jobs in FLINK_RUNS.items():
        job_set = JobSet.of(jobs)
        started = time.perf_counter()
        runner.start(empty, job_set, "batch").wait()
        startup[name] = time.perf_counter() - started
        _clear_lake(config)
        started = time.perf_counter()
        runner.start(config, job_set, "batch").wait()
        seconds[name] = time.perf_counter() - started
        if name != "both":
            _keep_lake(config, name)
    return seconds, startup


def _clear_lake(config: CityConfig) -> None:
    shutil.rmtree(DataLayout(config.data_dir).lake_root, ignore_errors=True)


def _keep_lake(config: CityConfig, name: str) -> None:
    """Each single job's output aside, so the combined run starts on an empty lake."""
    lake = DataLayout(config.data_dir).lake_root
    aside = config.data_dir / f"lake-{name}"
    shutil.rmtree(aside, ignore_errors=True)
    lake.rename(aside)


DUCKDB_READINGS = """
COPY (
  SELECT * EXCLUDE (copy_number) FROM (
    SELECT *, row_number() OVER (PARTITION BY device_id, metric, ts) AS copy_number
    FROM read_parquet('{landing}', hive_partitioning = true)
  ) WHERE copy_number = 1
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))
"""

DUCKDB_ROLLUP = """
COPY (
  SELECT device_id, metric, time_bucket(INTERVAL '{width}', ts) AS window_start,
         count(*) AS count, min(value) AS min, max(value) AS max, avg(value) AS avg,
         arg_max(value, (ts, value)) AS last, site,
         strftime(time_bucket(INTERVAL '{width}', ts), '%Y-%m-%d') AS date
  FROM (SELECT DISTINCT ON (device_id, metric, ts) * FROM read_parquet('{landing}', hive_partitioning = true))
  WHERE value IS NOT NULL
  GROUP BY ALL
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date))
"""


def duckdb_transform(layout: DataLayout, out: Path, threads: int) -> dict[str, float]:
    landing = layout.landing_glob(table("readings"))
    out.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect()
    conn.execute(f"SET TimeZone = 'UTC'; SET threads = {threads}")
    seconds = {}
    started = time.perf_counter()
    conn.execute(DUCKDB_READINGS.format(landing=landing, out=out / "readings"))
    seconds["readings"] = time.perf_counter() - started
    started = time.perf_counter()
    for name, width in (("readings_1m", "1 minute"), ("readings_1h", "1 hour")):
        conn.execute(DUCKDB_ROLLUP.format(landing=landing, out=out / name, width=width))
    seconds["rollups"] = time.perf_counter() - started
    seconds["both"] = seconds["readings"] + seconds["rollups"]
    return seconds


def rows_in(directory: Path) -> int:
    return sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--parallelism", type=int, default=2, help="Flink parallelism and DuckDB threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        layout = DataLayout(Path(tmp) / "data")
        landed = land(layout, args.readings, args.devices)
        print(f"landed {landed:,} readings ({args.readings:,} distinct, 1 % repeated) in landing files")
        flink_config = FlinkConfig(parallelism=args.parallelism)
        config = CityConfig(
            site="bench", data_dir=layout.data_dir, pipelines=PipelinesConfig(flink=flink_config)
        )
        empty = config.model_copy(update={"data_dir": Path(tmp) / "empty"})
        jvm_s = gateway_start_s()
        flink_s, startup_s = flink(config, empty)
        duck_s = duckdb_transform(layout, Path(tmp) / "duckdb", args.parallelism)
        combined = layout.lake_root
        checks = {
            name: (
                rows_in(layout.data_dir / ("lake-readings" if name == "readings" else "lake-rollups") / name),
                rows_in(combined / name),
                rows_in(Path(tmp) / "duckdb" / name),
            )
            for name in ("readings", "readings_1m", "readings_1h")
        }
        print(f"rows written (Flink job alone, Flink both as one job, DuckDB): {checks}")
        if any(len(set(counts)) != 1 for counts in checks.values()):
            raise SystemExit("Flink and DuckDB wrote different row counts: the comparison is void")
        print(f"\nbatch backfill of {landed:,} landed readings, parallelism/threads {args.parallelism}:")
        print(f"  Flink gateway JVM start: {jvm_s:.1f} s (once per process, in no row below)")
        print(
            f"  {'job':9} {'Flink s':>8} {'start-up s':>10} {'Flink r/s':>10} {'net r/s':>10} "
            f"{'DuckDB s':>9} {'DuckDB r/s':>11} {'ratio':>6} {'net ratio':>9}"
        )
        for name in FLINK_RUNS:
            wall, startup = flink_s[name], startup_s[name]
            f_rate, d_rate = landed / wall, landed / duck_s[name]
            net_rate = landed / max(wall - startup, 1e-9)
            print(
                f"  {name:9} {wall:8.1f} {startup:10.1f} {f_rate:10,.0f} {net_rate:10,.0f} "
                f"{duck_s[name]:9.1f} {d_rate:11,.0f} {f_rate / d_rate:6.2f} {net_rate / d_rate:9.2f}"
            )
        print(
            "  (ratio = Flink readings/s over DuckDB readings/s, wall time; net = without the start-up,"
            " the same job over an empty landing zone; 'both' = readings and rollups as one Flink job,"
            " against DuckDB's two transforms)"
        )


if __name__ == "__main__":
    main()
