"""The latest route's hot answer, in process: the tier's lookup plus the body,
as the route wrote it before (rows -> Arrow table -> dicts -> pydantic models
-> JSON) and as it writes it now (orjson straight from the rows,
services/query/hot_json.py). Same tier, same devices, same run; no HTTP, so
the difference is the CPU the route no longer spends per request.

    .venv/bin/python bench/bench_hot_latest.py [--devices 100000 --metrics 10 --calls 20000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from citylake.services.query import hot_json
from citylake.services.query.hot_tier import HotTier
from citylake.services.query.latest import LATEST_SCHEMA
from citylake.services.query.models import DeviceLatest, LatestReading
from citylake_devstack.scalereport.summary import quantile


def filled(devices: int, metrics: int) -> HotTier:
    now = datetime.now(UTC)
    rows = devices * metrics
    stamps = pa.array([now] * rows, pa.timestamp("ms", tz="UTC"))
    hot = HotTier()
    hot.apply(
        pa.table(
            {
                "device_id": [f"dev-{d:06d}" for d in range(devices) for _ in range(metrics)],
                "metric": [f"m{m}" for _ in range(devices) for m in range(metrics)],
                "ts": stamps,
                "value": np.random.default_rng(12).random(rows),
                "text": pa.nulls(rows, pa.string()),
                "unit": ["u"] * rows,
                "quality": pa.array([0] * rows, pa.uint8()),
                "ingest_ts": stamps,
            }
        )
    )
    return hot


def models_body(device_id: str, rows: list[dict[str, object]]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=LATEST_SCHEMA)
    readings = [LatestReading.model_validate(row) for row in table.to_pylist()]
    return DeviceLatest(device_id=device_id, readings=readings).model_dump_json().encode()


def timed(hot: HotTier, body: Callable[[str, list[dict[str, object]]], bytes], ids: list[str]) -> list[float]:
    micros = []
    for device_id in ids:
        started = time.perf_counter()
        rows = hot.latest(device_id)
        assert rows is not None
        body(device_id, rows)
        micros.append((time.perf_counter() - started) * 1e6)
    return micros


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    hot = filled(args.devices, args.metrics)
    rng = np.random.default_rng(7)
    ids = [f"dev-{d:06d}" for d in rng.integers(0, args.devices, args.calls)]
    sample = ids[0]
    rows = hot.latest(sample) or []
    assert hot_json.device_latest(sample, rows) == models_body(sample, rows), "the bodies differ"
    print(
        f"{args.devices:,} devices x {args.metrics} metrics, {args.calls:,} calls each; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    results = {}
    # Interleaved halves, so a change in the shared machine's load touches both alike.
    half = len(ids) // 2
    for name, body in (("models", models_body), ("lean", hot_json.device_latest)):
        results[name] = timed(hot, body, ids[:half])
    for name, body in (("lean", hot_json.device_latest), ("models", models_body)):
        results[name] += timed(hot, body, ids[half:])
    for name, label in (("models", "before: Arrow + pydantic"), ("lean", "now: orjson from the rows")):
        values = results[name]
        print(f"  {label:28} p50 {quantile(values, 0.5):8.1f} µs  p99 {quantile(values, 0.99):8.1f} µs")
    print(
        f"ratio now / before: p50 {quantile(results['lean'], 0.5) / quantile(results['models'], 0.5):.2f}, "
        f"p99 {quantile(results['lean'], 0.99) / quantile(results['models'], 0.99):.2f}"
    )


if __name__ == "__main__":
    main()
