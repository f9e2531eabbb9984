"""What `citylake sync push --follow` and `citylake sync serve` take in memory
and CPU while a day's backlog of an edge goes up: the figures the
deploy overlays' requests and limits of sync-push and sync-serve are set from
(deploy/README.md, "The edge budget").

An edge lake gains a day of part files (``--devices`` times ``--metrics``
readings every ``--every-s``, in ``--files-per-day`` files,
`citylake_devstack.synclake`); a receiver (`sync serve`, HTTPS with a
self-signed certificate and a site key, on 127.0.0.1) and the sender (`sync
push --follow` at the edge's codec) then run as real processes until the
receiver holds every reading, and on for ``--idle-s`` of follow rounds with
nothing new. Each process's RSS (its tree, by psutil) and CPU are sampled every
``--sample-s``. Printed as JSON: peak and idle RSS, mean and peak CPU of each.

    PYTHONPATH=$PWD:$PWD/devstack .venv/bin/python bench/bench_sync_memory.py [--devices 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil
import yaml

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake_devstack.process import ManagedProcess, free_port
from citylake_devstack.synclake import CHECK_SQL, READINGS, expected_check, part_file
from tests.selfsigned import make_server_certificate

SITE, KEY = "edge-bench", "edge-bench-key-0123456789abcdef"
CITYLAKE = [sys.executable, "-m", "citylake"]


@dataclass
class Trace:
    """RSS (MiB) and CPU (% of one core) of one process tree, sample by sample."""

    process: psutil.Process
    rss_mb: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    last: tuple[float, float] | None = None

    def sample(self) -> None:
        try:
            tree = [self.process, *self.process.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree)
            cpu_s = sum(sum(p.cpu_times()[:2]) for p in tree)
        except psutil.Error:
            return
        now = time.monotonic()
        if self.last is not None and now > self.last[0]:
            self.cpu_percent.append(100.0 * (cpu_s - self.last[1]) / (now - self.last[0]))
        self.last = (now, cpu_s)
        self.rss_mb.append(rss / 2**20)

    def figures(self, since: int = 0) -> dict[str, float]:
        rss, cpu = self.rss_mb[since:], self.cpu_percent[max(0, since - 1) :]
        return {
            "peak_rss_mb": round(max(rss), 1),
            "mean_cpu_percent": round(sum(cpu) / len(cpu), 1) if cpu else 0.0,
            "peak_cpu_percent": round(max(cpu), 1) if cpu else 0.0,
        }


def write_day(layout: DataLayout, args: argparse.Namespace) -> tuple[int, int]:
    """A day's readings of the site in its part files: (readings, bytes)."""
    readings = args.devices * args.metrics * 86_400 // args.every_s
    files = min(args.files_per_day, readings)
    written = size = 0
    for i in range(files):
        rows = readings // files + (1 if i < readings % files else 0)
        path = part_file(layout, 0, f"{uuid.uuid4()}-0-{i}", written, rows, SITE, args.devices)
        written += rows
        size += path.stat().st_size
    return written, size


def lake_check(layout: DataLayout) -> tuple[object, ...]:
    if not layout.lake(READINGS).exists():
        return ()
    lake = Lake(layout)
    try:
        return tuple(lake.cursor().execute(CHECK_SQL).fetchone() or ())
    except duckdb.Error:  # the first files not yet committed: nothing to read
        return ()
    finally:
        lake.close()


def config(path: Path, site: str, layout: DataLayout, sync: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"site": site, "data_dir": str(layout.data_dir), "sync": sync}))
    return path


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    edge, region = DataLayout(work / "edge"), DataLayout(work / "region")
    readings, size = write_day(edge, args)
    tls = make_server_certificate(work / "tls")
    port = free_port()
    serve_cfg = config(work / "region.yaml", "region-bench", region, {
        "host": "127.0.0.1", "port": port, "tls_cert_file": str(tls.cert), "tls_key_file": str(tls.key),
        "site_keys": {SITE: [KEY]},
    })  # fmt: skip
    push_cfg = config(work / "edge.yaml", SITE, edge, {
        "region_url": f"https://127.0.0.1:{port}", "api_key": KEY, "region_ca_file": str(tls.ca),
        "wire_codec": args.codec, "interval_s": args.interval_s,
    })  # fmt: skip
    serve = ManagedProcess(
        "sync-serve", [*CITYLAKE, "sync", "serve", "--config", str(serve_cfg)], work / "serve.log"
    )
    push = ManagedProcess(
        "sync-push", [*CITYLAKE, "sync", "push", "--follow", "--config", str(push_cfg)], work / "push.log"
    )
    with serve.start():
        serve.wait_port(port, 60)
        started = time.monotonic()
        with push.start():
            traces = {
                "sync-push": Trace(psutil.Process(push.pid)),
                "sync-serve": Trace(psutil.Process(serve.pid)),
            }
            expected = expected_check(readings)
            next_check = 0.0
            while True:
                for trace in traces.values():
                    trace.sample()
                if time.monotonic() >= next_check:
                    if lake_check(region) == expected:
                        break
                    next_check = time.monotonic() + 1.0
                if time.monotonic() - started > args.deadline_s:
                    raise SystemExit(f"not consistent in {args.deadline_s} s: {push.log_tail()}")
                time.sleep(args.sample_s)
            synced_s = time.monotonic() - started
            upload = {name: t.figures() for name, t in traces.items()}
            marks = {name: len(t.rss_mb) for name, t in traces.items()}
            idle_until = time.monotonic() + args.idle_s
            while time.monotonic() < idle_until:
                for trace in traces.values():
                    trace.sample()
                time.sleep(args.sample_s)
            idle = {name: t.figures(marks[name]) for name, t in traces.items()}
    return {
        "devices": args.devices,
        "readings": readings,
        "files": min(args.files_per_day, readings),
        "lake_mb": round(size / 2**20, 1),
        "codec": args.codec,
        "synced_s": round(synced_s, 1),
        "upload": upload,
        "idle": idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000, help="the site's devices")
    parser.add_argument("--metrics", type=int, default=2, help="readings per device each period")
    parser.add_argument("--every-s", type=int, default=900, help="a device's period")
    parser.add_argument("--files-per-day", type=int, default=1440, help="part files the day is in")
    parser.add_argument("--codec", default="zstd-9", help="sync.wire_codec of the sender (the edge's uplink)")
    parser.add_argument(
        "--interval-s", type=float, default=10.0, help="sync.interval_s between follow rounds"
    )
    parser.add_argument("--idle-s", type=float, default=30.0, help="follow rounds sampled after the sync")
    parser.add_argument("--sample-s", type=float, default=0.1)
    parser.add_argument("--deadline-s", type=float, default=900.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-memory-") as tmp:
        print(json.dumps(run(args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
