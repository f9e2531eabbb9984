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
consistent is from the return to that moment. With ``--tiers 3`` a second
pair of namespaces joins the region's `sync push` to a centre's `sync
serve` (the region's lake is on the shared file system); the links take
turns, and an outage heals when both receivers hold their sender's snapshot.
At the end each tier's lake must hold every reading once (count, distinct
keys, sum). Needs root; not
part of make test (`make bench-sync`).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py [--outages 100 --tiers 3 --loss 0.02]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from citylake.lake import Lake
from citylake.schemas import DataLayout, table
from citylake.sync.edge import HashCache, edge_lake
from citylake.sync.region import Limits, RegionStore
from citylake_devstack.netns import NetnsPair
from citylake_devstack.process import ManagedProcess
from citylake_devstack.scalereport.summary import quantile

SITE, REGION, PORT = "edge-north", "region-south", 8090
KEYS = {SITE: "edge-north-key-0123456789", REGION: "region-south-key-0123456789"}
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


def lake_check(layout: DataLayout) -> tuple[object, ...]:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        return tuple(row or ())
    finally:
        lake.close()


@dataclass
class Link:
    """One tier's uplink: a sender's `sync push --follow` in ``net.edge``, its
    receiver's `sync serve` in ``net.region`` (the sender's lake files are on
    the shared file system; only the network is namespaced)."""

    net: NetnsPair
    work: Path
    sender: str
    sender_layout: DataLayout
    receiver: str
    receiver_layout: DataLayout
    receiver_sync: dict[str, Any]
    push: ManagedProcess | None = None
    serve: ManagedProcess | None = None
    serves: int = 0

    def start(self, codec: str) -> None:
        serve_cfg = self.work / f"{self.receiver}.yaml"
        sync = {"host": self.net.region_ip, "port": PORT, "request_timeout_s": 20} | self.receiver_sync
        serve_cfg.write_text(
            yaml.safe_dump(
                {"site": self.receiver, "data_dir": str(self.receiver_layout.data_dir), "sync": sync}
            )
        )
        self.serve_argv = self.net.exec_argv(
            self.net.region, [*CITYLAKE, "sync", "serve", "--config", str(serve_cfg)]
        )
        self.start_serve()
        push_cfg = self.work / f"{self.sender}-push.yaml"
        push_cfg.write_text(yaml.safe_dump({
            "site": self.sender, "data_dir": str(self.sender_layout.data_dir),
            "sync": {"region_url": f"http://{self.net.region_ip}:{PORT}", "api_key": KEYS[self.sender],
                     "tables": ["readings"], "chunk_bytes": 64 * 1024, "interval_s": 0.5, "timeout_s": 3,
                     "retry_max_s": 1, "retry_window_s": 10, "wire_codec": codec},
        }))  # fmt: skip
        argv = self.net.exec_argv(
            self.net.edge, [*CITYLAKE, "sync", "push", "--follow", "--config", str(push_cfg)]
        )
        self.push = ManagedProcess(f"push-{self.sender}", argv, self.work / f"push-{self.sender}.log").start()

    def start_serve(self) -> None:
        log = self.work / f"serve-{self.receiver}-{self.serves}.log"
        self.serve = ManagedProcess(f"serve-{self.receiver}", self.serve_argv, log).start()
        self.serve.wait_until(lambda: self.net.listening(self.net.region, PORT), 60, "sync receiver")
        self.serves += 1

    def kill_receiver(self) -> None:
        assert self.serve is not None
        self.serve.signal(signal.SIGKILL)
        self.serve.stop()

    def consistent(self) -> bool:
        """The receiver holds the sender's snapshot (the receiver's tree for
        the sender, its claim, against the sender's own)."""
        tree, _ = RegionStore(self.receiver_layout, Limits(1, 1, 1)).tree(self.sender)
        return tree.root == edge_root(self.sender_layout)

    def check_alive(self) -> None:
        for process in (self.push, self.serve):
            if process is not None and not process.alive():
                raise RuntimeError(f"{process.name} died: {process.log_tail()}")

    def stop(self) -> None:
        for process in (self.push, self.serve):
            if process is not None:
                process.stop()


def main() -> None:  # noqa: PLR0912, PLR0915 - one run, in order: network, processes, outages, figures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=int, default=100)
    parser.add_argument("--tiers", type=int, choices=(2, 3), default=2, help="edge, region (and centre)")
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
    edge, region, centre = (DataLayout(work / t) for t in ("edge", "region", "centre"))
    with contextlib.ExitStack() as stack:
        nets = [stack.enter_context(NetnsPair()) for _ in range(args.tiers - 1)]
        for net in nets:
            if args.loss > 0:
                net.loss(args.loss)
        nets[0].limit(args.rate)  # the edge's uplink; region → centre is a WAN without a tbf
        links = [Link(nets[0], work, SITE, edge, REGION, region, {"site_keys": {SITE: [KEYS[SITE]]}})]
        if args.tiers == 3:
            centre_sync = {"site_keys": {REGION: [KEYS[REGION]]}, "regions": {REGION: [SITE]}}
            links.append(Link(nets[1], work, REGION, region, "centre", centre, centre_sync))
        for link, codec in zip(links, ("zstd-9", "zstd-3"), strict=False):
            stack.callback(link.stop)
            link.start(codec)
        written = files = file_bytes = behind = kills = 0
        healed: list[float] = []
        failed: list[int] = []
        cut_s: list[float] = []
        sent_before = [net.edge_bytes()[0] for net in nets]
        started = time.monotonic()
        for outage in range(args.outages):
            for _ in range(args.files):
                path = part_file(edge, files % 2, f"{uuid.uuid4()}-0-{files}", written, args.rows)
                file_bytes += path.stat().st_size
                written += args.rows
                files += 1
            time.sleep(rng.uniform(0, 1.0))
            down = rng.uniform(0.3, 3.0)
            killing = args.kill_every > 0 and (outage + 1) % args.kill_every == 0
            # The tiers' links take turns, and so do their receivers' kills.
            link = links[kills % len(links)] if killing else links[outage % len(links)]
            # The outage finds the tiers behind: an upload or commit in flight, or not begun.
            behind += not all(each.consistent() for each in links)
            if killing:  # the receiver dies (kill -9) where it is: in an upload, a commit, or idle
                link.kill_receiver()
            else:
                link.net.cut()
            time.sleep(down)
            if killing:
                kills += 1
                link.start_serve()
            else:
                link.net.restore()
            cut_s.append(down)
            back = time.monotonic()
            while time.monotonic() - back < args.deadline:
                for each in links:
                    each.check_alive()
                if all(each.consistent() for each in links):
                    healed.append(time.monotonic() - back)
                    break
                time.sleep(0.1)
            else:
                failed.append(outage)
            result = "NOT healed" if failed and failed[-1] == outage else f"healed in {healed[-1]:.1f} s"
            what = "receiver killed, restarted after" if killing else "link cut"
            print(
                f"outage {outage + 1}/{args.outages} ({link.sender} → {link.receiver}): {what} {down:.1f} s, "
                f"{result}",
                flush=True,
            )
        sent = [net.edge_bytes()[0] - before for net, before in zip(nets, sent_before, strict=True)]
        elapsed = time.monotonic() - started
    checks = {layout.data_dir.name: lake_check(layout) for layout in (edge, region, centre)[: args.tiers]}
    expected = (written, written, float(sum(range(written))), written)
    exact = all(check == expected for check in checks.values())
    figures = {
        "tiers": args.tiers,
        "outages": args.outages,
        "healed": len(healed),
        "success_ratio": len(healed) / args.outages,
        "receiver_kills": kills,
        "outages_with_a_tier_behind": behind,
        "lake_exact": exact,
        "checks": checks,
        "cut_s_total": round(sum(cut_s), 1),
        "time_to_consistent_s": {
            "p50": round(quantile(healed, 0.5), 2),
            "p99": round(quantile(healed, 0.99), 2),
            "max": round(max(healed, default=float("nan")), 2),
        },
        "file_bytes_written": file_bytes,
        "bytes_on_each_uplink": sent,
        "link_over_file_bytes": [round(b / max(1, file_bytes), 3) for b in sent],
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
