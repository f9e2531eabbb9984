"""Outages heal by themselves: many short outages between an edge and its
region in network namespaces, and how often and how fast the sync heals.

An edge namespace runs `citylake sync push --follow`, a region namespace
`citylake sync serve` (real processes, joined by a veth pair with a 2 Mbit/s
tbf on the edge's uplink and random loss both ways, `devstack/netns.py`).
Each outage: the edge's lake gains a few part files (Flink's layout); after a
random 0..1 s (so the outage lands in an upload, a commit or between rounds)
the link goes down for a random 0.3..3 s and comes back, or, every
``--kill-every``-th outage, the receiver is killed (SIGKILL, wherever it is)
and a new one started after that long. The outage heals when the region's
tree for the edge equals the edge's (one Merkle root) within ``--deadline``
seconds of the link's return (the new receiver listening); its time to
consistent is from the return to that moment. At the end the region's lake
must hold every reading once (count, distinct keys, sum). Needs root; not
part of make test (`make bench-sync`).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py [--outages 100 --loss 0.02]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from citylake.devstack.netns import NetnsPair
from citylake.devstack.process import ManagedProcess
from citylake.lake import Lake
from citylake.scalereport.summary import quantile
from citylake.schemas import DataLayout, table
from citylake.sync.edge import HashCache, edge_lake
from citylake.sync.region import Limits, RegionStore

SITE, KEY, PORT = "edge-north", "edge-north-key-0123456789", 8090
CITYLAKE = [sys.executable, "-m", "citylake"]
READINGS = table("readings")
T0 = 1_795_132_800_000  # 2026-11-20, ms
DAY_MS = 86_400_000
CHECK_SQL = (
    "SELECT count(*), count(DISTINCT (device_id, ts)), coalesce(sum(value), 0), count(DISTINCT value) "
    "FROM readings"
)


def part_file(layout: DataLayout, day: int, name: str, first: int, n: int) -> Path:
    """Readings ``first`` .. ``first + n - 1`` (value = number) as Flink's sink
    commits a part file (hidden, then renamed); noise in ``source`` makes the
    file as incompressible as real measurements (tests/synclake.py's files)."""
    numbers = np.arange(first, first + n, dtype=np.int64)
    noise = np.random.default_rng(first).random(n)
    rows = pa.table({
        "device_id": pa.array([f"dev-{i % 50}" for i in numbers], pa.string()),
        "ts": pa.array(T0 + day * DAY_MS + numbers, pa.timestamp("ms")),
        "metric": pa.array(["level"] * n, pa.string()),
        "value": pa.array(numbers.astype(np.float64)),
        "text": pa.array([None] * n, pa.string()),
        "unit": pa.array(["m"] * n, pa.string()),
        "quality": pa.array(np.zeros(n, dtype=np.int32)),
        "source": pa.array([f"{noise[i]:.12f}" for i in range(n)], pa.string()),
        "site": pa.array([SITE] * n, pa.string()),
        "ingest_ts": pa.array(np.full(n, T0, dtype=np.int64), pa.timestamp("ms")),
    })  # fmt: skip
    path = layout.lake(READINGS) / f"date=2026-11-{20 + day}" / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.inprogress")
    pq.write_table(rows, hidden, compression="zstd")
    hidden.rename(path)
    return path


def edge_root(layout: DataLayout) -> str:
    return edge_lake(layout, [READINGS], HashCache(layout.data_dir / "bench-hashes.json")).tree.root


def region_root(layout: DataLayout) -> str:
    tree, _ = RegionStore(layout, Limits(1, 1, 1)).tree(SITE)
    return tree.root


def lake_check(layout: DataLayout) -> tuple[object, ...]:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        return tuple(row or ())
    finally:
        lake.close()


def main() -> None:  # noqa: PLR0912, PLR0915 - one run, in order: network, processes, outages, figures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=int, default=100)
    parser.add_argument("--files", type=int, default=3, help="part files written before each outage")
    parser.add_argument("--rows", type=int, default=3500, help="readings per part file")
    parser.add_argument("--loss", type=float, default=0.02, help="random loss each way")
    parser.add_argument("--rate", default="2mbit", help="tbf on the edge's uplink")
    parser.add_argument("--deadline", type=float, default=120.0, help="s after the link's return")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--kill-every", type=int, default=10, help="every Nth outage kills the receiver instead (0: never)"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="citylake-outages-"))
    edge, region = DataLayout(work / "edge"), DataLayout(work / "region")
    with NetnsPair() as net:
        if args.loss > 0:
            net.loss(args.loss)
        net.limit(args.rate)
        serve_cfg = work / "region.yaml"
        serve_cfg.write_text(yaml.safe_dump({
            "site": "region-south", "data_dir": str(region.data_dir),
            "sync": {"host": net.region_ip, "port": PORT, "site_keys": {SITE: [KEY]},
                     "request_timeout_s": 20},
        }))  # fmt: skip
        push_cfg = work / "edge.yaml"
        push_cfg.write_text(yaml.safe_dump({
            "site": SITE, "data_dir": str(edge.data_dir),
            "sync": {"region_url": f"http://{net.region_ip}:{PORT}", "api_key": KEY, "tables": ["readings"],
                     "chunk_bytes": 64 * 1024, "interval_s": 0.5, "timeout_s": 3, "retry_max_s": 1,
                     "retry_window_s": 10, "wire_codec": "zstd-9"},
        }))  # fmt: skip
        serve_argv = net.exec_argv(net.region, [*CITYLAKE, "sync", "serve", "--config", str(serve_cfg)])

        def start_serve(n: int) -> ManagedProcess:
            process = ManagedProcess("sync-serve", serve_argv, work / f"serve-{n}.log").start()
            process.wait_until(lambda: net.listening(net.region, PORT), 60, "sync receiver")
            return process

        serve = start_serve(0)
        push = ManagedProcess(
            "sync-push",
            net.exec_argv(net.edge, [*CITYLAKE, "sync", "push", "--follow", "--config", str(push_cfg)]),
            work / "push.log",
        ).start()
        written = files = 0
        healed: list[float] = []
        failed: list[int] = []
        cut_s: list[float] = []
        behind = kills = 0
        file_bytes = 0
        sent_before, _ = net.edge_bytes()
        started = time.monotonic()
        try:
            for outage in range(args.outages):
                for _ in range(args.files):
                    path = part_file(edge, files % 2, f"{uuid.uuid4()}-0-{files}", written, args.rows)
                    file_bytes += path.stat().st_size
                    written += args.rows
                    files += 1
                time.sleep(rng.uniform(0, 1.0))
                down = rng.uniform(0.3, 3.0)
                target = edge_root(edge)
                killing = args.kill_every > 0 and (outage + 1) % args.kill_every == 0
                if killing:
                    # The receiver dies (kill -9) where it is: in an upload, a commit, or idle.
                    serve.signal(signal.SIGKILL)
                    serve.stop()
                else:
                    net.cut()
                # The outage found the region behind: an upload or commit in flight, cut.
                behind += region_root(region) != target
                time.sleep(down)
                if killing:
                    kills += 1
                    serve = start_serve(kills)
                else:
                    net.restore()
                cut_s.append(down)
                back = time.monotonic()
                while time.monotonic() - back < args.deadline:
                    if not push.alive() or not serve.alive():
                        raise RuntimeError(f"a sync process died: {push.log_tail()} {serve.log_tail()}")
                    if region_root(region) == target:
                        healed.append(time.monotonic() - back)
                        break
                    time.sleep(0.1)
                else:
                    failed.append(outage)
                result = "NOT healed" if failed and failed[-1] == outage else f"healed in {healed[-1]:.1f} s"
                what = "receiver killed, restarted after" if killing else "cut"
                print(f"outage {outage + 1}/{args.outages}: {what} {down:.1f} s, {result}", flush=True)
        finally:
            sent_after, _ = net.edge_bytes()
            push.stop()
            serve.stop()
        elapsed = time.monotonic() - started
    edge_check, region_check = lake_check(edge), lake_check(region)
    exact = edge_check == region_check == (written, written, float(sum(range(written))), written)
    figures = {
        "outages": args.outages,
        "healed": len(healed),
        "success_ratio": len(healed) / args.outages,
        "receiver_kills": kills,
        "outages_with_the_region_behind": behind,
        "lake_exact": exact,
        "edge_check": edge_check,
        "region_check": region_check,
        "cut_s_total": round(sum(cut_s), 1),
        "time_to_consistent_s": {
            "p50": round(quantile(healed, 0.5), 2),
            "p99": round(quantile(healed, 0.99), 2),
            "max": round(max(healed, default=float("nan")), 2),
        },
        "file_bytes_written": file_bytes,
        "bytes_on_link_edge_to_region": sent_after - sent_before,
        "link_over_file_bytes": round((sent_after - sent_before) / max(1, file_bytes), 3),
        "readings": written,
        "elapsed_s": round(elapsed, 1),
        "loss": args.loss,
        "rate": args.rate,
    }
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=1))
    if failed or not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
