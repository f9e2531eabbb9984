"""Polled meters on one line: N DL/T 645 meters (default 200, the six default
DIs each) behind ONE serial
server, read by the real IngestRunner with the real Dlt645Source (landing
Parquet as usual), against the simulator in another process.

A line answers one request at a time, so what matters is how much citylake
adds per exchange. Baseline, same run, same simulator: a bare asyncio loop
that writes the same request frames on one TCP connection and reads each reply
until ``find_frame`` cuts it, nothing else (no parsing, rows, landing).
The meters' poll interval (1 s, six reads a poll) offers more than the line
can carry, so both sides run saturated and exchanges per second is the figure
to compare. (Not much more: with 200 meters at 0.05 s, a profile showed the
runner's loop spending most of the time skipping polls whose previous poll
still waited for the line, which measures the skips, not the line.) Time per
exchange is measured around ``MeterLink.exchange`` for citylake, which
includes waiting for the line's lock behind the other meters (a queue, not
cost), and around the bare write/read for the baseline; percentiles from
``citylake_devstack.scalereport.summary.quantile``.

    .venv/bin/python bench/bench_meter_line.py [--meters N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from citylake.ingest.dlt645.adapter import Dlt645Source
from citylake.ingest.dlt645.codec import find_frame, read_request
from citylake.ingest.dlt645.config import DEFAULT_DATA_ITEMS, Dlt645SourceConfig, resolve_data_item
from citylake.ingest.meter_link import FrameFinder
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.scalereport.summary import quantile
from citylake_devstack.simulators.dlt645 import demo_meters
from citylake_devstack.simulators.line import start_line_simulator

# The six DIs a Dlt645Source reads by default, all of which the demo meters have.
ITEMS = [resolve_data_item(spec) for spec in DEFAULT_DATA_ITEMS]


async def run_citylake(
    port: int, meters: list[str], seconds: float, workdir: Path, interval_s: float
) -> tuple[int, list[float]]:
    source = Dlt645Source(
        Dlt645SourceConfig.model_validate(
            {"name": "bench", "type": "dlt645", "url": f"tcp://127.0.0.1:{port}", "interval_s": interval_s,
             "timeout_s": 2, "meters": [{"meter_address": m} for m in meters]}
        )
    )  # fmt: skip
    [link] = source.links.values()
    durations: list[float] = []
    exchange = link.exchange

    async def timed(request: bytes, finder: FrameFinder, timeout_s: float) -> bytes:
        start = time.perf_counter()
        reply = await exchange(request, finder, timeout_s)
        durations.append(time.perf_counter() - start)
        return reply

    link.exchange = timed  # type: ignore[method-assign,assignment]
    runner = IngestRunner([source], DataLayout(workdir), "bench")
    await runner.start()
    await asyncio.sleep(1.0)  # warm-up
    durations.clear()
    before = link.exchanges
    await asyncio.sleep(seconds)
    count = link.exchanges - before
    await runner.stop()
    return count, durations[:count]


async def run_bare(port: int, meters: list[str], seconds: float) -> tuple[int, list[float]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [read_request(m, item.di) for m in meters for item in ITEMS]
    durations: list[float] = []
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        for request in requests:
            start = time.perf_counter()
            writer.write(request)
            await writer.drain()
            buffer = b""
            while find_frame(buffer) is None:
                buffer += await reader.read(512)
            durations.append(time.perf_counter() - start)
            count += 1
    writer.close()
    return count, durations


def line(name: str, count: int, seconds: float, durations: list[float]) -> str:
    ms = [d * 1000 for d in durations]
    return (
        f"{name:10}{count / seconds:>12.0f}{quantile(ms, 0.5):>10.3f}{quantile(ms, 0.99):>10.3f}"
        f"{max(ms, default=float('nan')):>10.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of each meter (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-meter-line-") as tmp:
        workdir = Path(tmp)
        table = demo_meters(args.meters)
        sim, port = start_line_simulator(
            "citylake_devstack.simulators.dlt645", ["--meters", json.dumps(table)], workdir, "dlt645-sim"
        )
        try:
            meters = list(table)
            bare_count, bare = asyncio.run(run_bare(port, meters, args.seconds))
            ours_count, ours = asyncio.run(
                run_citylake(port, meters, args.seconds, workdir / "data", args.interval)
            )
        finally:
            sim.stop()
    print(f"{args.meters} DL/T 645 meters on one serial server, six DIs each, {args.seconds:g}s per side")
    print(
        f"offered {6 * args.meters / args.interval:.0f} exchanges/s to citylake (interval {args.interval:g}s)"
    )
    print(
        f"{'':10}{'exch/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}  (citylake: lock wait + exchange)"
    )
    print(line("bare", bare_count, args.seconds, bare))
    print(line("citylake", ours_count, args.seconds, ours))
    print(f"ratio citylake/bare exchanges per second: {ours_count / max(bare_count, 1):.2f}")


if __name__ == "__main__":
    main()
