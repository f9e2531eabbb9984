"""The lake for analysts: bytes per reading, and query latency through the lake
against the same readings in a native DuckDB table (the baseline).

Readings are generated deterministically (devices x metrics x samples, one
sample per hour per metric) and written as the lake holds them after
compaction: one sorted zstd file per date partition, read through ``Lake``.

    .venv/bin/python bench/bench_lake.py [--devices 100000 --metrics 10 --samples 100]
        [--runs 10] [--storage-sample 2000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from citylake.lake import Lake
from citylake.lake.catalog import raw_select
from citylake.lake.compaction import write_sorted
from citylake.schemas import DataLayout, table

T0 = "2026-11-20 00:00:00"
METRICS = ["pm25", "pm10", "no2", "o3", "temperature", "humidity", "noise", "level", "flow", "power"]


def generate_sql(devices: int, metrics: int, samples: int, step_minutes: int = 60) -> str:
    """Readings in arrival order (time first), as ingest lands them: one sample
    per ``step_minutes`` per device and metric, each device at its own offset
    within the step."""
    names = "[" + ", ".join(f"'{m}'" for m in METRICS[:metrics]) + "]"
    step = f"INTERVAL {step_minutes} MINUTE * s + INTERVAL 1 SECOND * (d % {step_minutes * 60})"
    half = f"{720 / step_minutes:g}"  # samples in half a day: sin(s * pi() / half) has a daily period
    return f"""
    SELECT 'dev-' || lpad(d::VARCHAR, 6, '0') AS device_id,
           (TIMESTAMP '{T0}' + {step})::TIMESTAMP_MS AS ts,
           {names}[m + 1] AS metric,
           -- a daily cycle plus sensor noise: smooth like real readings, not constant
           round(m * 10 + 5 * sin(s * pi() / {half} + d) + (hash(d, m, s) % 1000) / 100.0, 2) AS value,
           NULL::VARCHAR AS text,
           'u' AS unit,
           0::INTEGER AS quality,
           'mqtt' AS source,
           'edge-1' AS site,
           (TIMESTAMP '{T0}' + {step} + INTERVAL 800 MILLISECOND)::TIMESTAMP_MS AS ingest_ts
    FROM range({samples}) t(s), range({devices}) dv(d), range({metrics}) mt(m)
    """


def build_lake(workdir: Path, devices: int, metrics: int, samples: int) -> tuple[DataLayout, int, float]:
    layout = DataLayout(workdir / "data")
    root = layout.lake(table("readings"))
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'; SET preserve_insertion_order = false")
    conn.execute(f"CREATE VIEW generated AS {generate_sql(devices, metrics, samples)}")
    days = [
        d
        for (d,) in conn.execute(
            "SELECT DISTINCT CAST(ts AS DATE)::VARCHAR FROM generated "
            "WHERE device_id = 'dev-000000' ORDER BY 1"
        ).fetchall()
    ]
    started = time.perf_counter()
    for i, day in enumerate(days):
        staging = workdir / f"staging-{day}.parquet"
        conn.execute(
            f"COPY (SELECT * FROM generated WHERE CAST(ts AS DATE) = DATE '{day}') TO '{staging}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
        target = root / f"date={day}" / f"part-bench-{i}"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_sorted(table("readings"), [str(staging)], str(target))
        staging.unlink()
        print(f"  lake partition {day} written ({i + 1}/{len(days)})", flush=True)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in root.rglob("part-*"))
    return layout, rows, time.perf_counter() - started


def storage(workdir: Path, rows: int) -> None:
    """Bytes per reading of the same rows as JSON lines, plain pyarrow zstd
    Parquet in arrival order (what landing writes) and the lake's sorted file."""
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    devices = max(1, rows // 1000)
    conn.execute(f"CREATE TABLE sample AS {generate_sql(devices, 10, 100)}")
    n = conn.execute("SELECT count(*) FROM sample").fetchone()[0]  # type: ignore[index]
    json_path, plain_path, lake_path = (workdir / f"sample.{s}" for s in ("jsonl", "parquet", "lake.parquet"))
    conn.execute(f"COPY sample TO '{json_path}' (FORMAT json)")
    pq.write_table(conn.execute("SELECT * FROM sample").to_arrow_table(), plain_path, compression="zstd")
    write_sorted(table("readings"), [str(plain_path)], str(lake_path))
    sizes = {p: p.stat().st_size / n for p in (json_path, plain_path, lake_path)}
    print(f"\nstorage, {n:,} readings ({devices:,} devices x 10 metrics x 100 hourly samples):")
    print(f"  lake (sorted by device, metric, ts; zstd)  {sizes[lake_path]:7.2f} B/reading")
    print(
        f"  JSON lines                                  {sizes[json_path]:7.2f} B/reading "
        f"-> lake is {sizes[json_path] / sizes[lake_path]:.1f}x smaller (goal >= 5x)"
    )
    print(
        f"  plain zstd Parquet (pyarrow, arrival order) {sizes[plain_path]:7.2f} B/reading "
        f"-> lake is {sizes[plain_path] / sizes[lake_path]:.2f}x smaller"
    )


def timed(run: Callable[[], object], runs: int) -> list[float]:
    run()  # warm: footers and the OS page cache, for both sides alike
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def fetch(cursor: Callable[[], duckdb.DuckDBPyConnection], sql: str) -> None:
    cursor().execute(sql).fetchall()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def queries(layout: DataLayout, workdir: Path, runs: int, devices: int) -> None:
    lake = Lake(layout)
    native_path = workdir / "native.duckdb"
    native = duckdb.connect(str(native_path))
    native.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()
    # The same rows and column types, in the same order, as a DuckDB table.
    native.execute("DROP TABLE IF EXISTS readings")
    native.execute(f"CREATE TABLE readings AS {raw_select(lake.snapshot('readings'))}")
    print(f"\nnative DuckDB table loaded in {time.perf_counter() - started:.0f} s")
    device = f"dev-{devices // 2:06d}"
    day_hour = "2026-11-21 06:00:00"
    questions = {
        "latest value per device (pm25)": (
            "SELECT device_id, arg_max(value, ts) FROM readings WHERE metric = 'pm25' GROUP BY device_id"
        ),
        "1 h window of one device": (
            f"SELECT metric, ts, value FROM readings WHERE device_id = '{device}' "
            f"AND ts >= TIMESTAMPTZ '{day_hour}+00' AND ts < TIMESTAMPTZ '{day_hour}+00' + INTERVAL 1 HOUR"
        ),
        "city-wide hourly average": (
            "SELECT time_bucket(INTERVAL 1 HOUR, ts) AS hour, metric, avg(value) FROM readings GROUP BY 1, 2"
        ),
    }
    print(f"\nanalyst queries, {runs} runs each (ms): lake through DuckDB vs native DuckDB table")
    print(
        f"  {'question':34} {'lake p50':>9} {'lake p99':>9} "
        f"{'native p50':>11} {'native p99':>11} {'p99 ratio':>10}"
    )
    for name, sql in questions.items():
        lake_ms = timed(partial(fetch, lake.cursor, sql), runs)
        native_ms = timed(partial(fetch, native.cursor, sql), runs)
        ratio = p(lake_ms, 0.99) / p(native_ms, 0.99)
        print(
            f"  {name:34} {p(lake_ms, 0.5):9.1f} {p(lake_ms, 0.99):9.1f} "
            f"{p(native_ms, 0.5):11.1f} {p(native_ms, 0.99):11.1f} {ratio:9.2f}x"
        )
    lake.close()
    native.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10, choices=range(1, len(METRICS) + 1))
    parser.add_argument("--samples", type=int, default=100, help="hourly samples per device and metric")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--storage-sample", type=int, default=2_000_000, help="readings in the storage sample"
    )
    parser.add_argument("--workdir", type=Path, help="keep the generated lake here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="query the lake already in --workdir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        layout = DataLayout(workdir / "data")
        if not (args.reuse and layout.lake_root.exists()):
            storage(workdir, args.storage_sample)
            print(
                f"\nbuilding a lake of {args.devices * args.metrics * args.samples:,} readings ...",
                flush=True,
            )
            layout, rows, seconds = build_lake(workdir, args.devices, args.metrics, args.samples)
            size = sum(f.stat().st_size for f in layout.lake_root.rglob("part-*"))
            print(f"lake: {rows:,} readings, {size / rows:.2f} B/reading, written in {seconds:.0f} s")
        queries(layout, workdir, args.runs, args.devices)


if __name__ == "__main__":
    main()
