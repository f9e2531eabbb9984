"""Outages heal by themselves: outages between an edge and its region (and
the region and the centre) in network namespaces, and how often, how fast and
at what cost in bytes the sync heals.

An edge namespace runs `citylake sync push --follow`, a region namespace
`citylake sync serve` (real processes, joined by a veth pair with a 2 Mbit/s
tbf on the edge's uplink and random loss both ways, `devstack/netns.py`). The
edge's lake gains part files as Flink's sink commits them
(`citylake_devstack.synclake`). Three scenarios:

``--scenario short`` (the default): many short outages. Before each the edge
commits a few part files; after a random 0..1 s (so the outage lands in an
upload, a commit or between rounds) the link goes down for a random 0.3..3 s
and comes back, or, every ``--kill-every``-th outage, the receiver is killed
(SIGKILL, wherever it is) and a new one started after that long. The outage
heals when the region's tree for the edge equals the edge's (one Merkle root)
within ``--deadline`` seconds of the link's return (the new receiver
listening); its time to consistent is from the return to that moment. With
``--tiers 3`` a second pair of namespaces joins the region's `sync push` to a
centre's `sync serve` (the region's lake is on the shared file system); the
links take turns, and an outage heals when both receivers hold their
sender's snapshot.

``--scenario backlog``: the edge's link is cut while its lake gains a day of
part files (``--devices`` times ``--metrics`` readings every ``--every-s``, in
``--files-per-day`` files; written as fast as they can be: the sync does not
care about wall time); the sender keeps trying through the outage; then the
link comes back. Measured: time from the return to consistent, the missing
files' bytes, the minimum (the same files chunked and compressed as the
sender does at the link's ``wire_codec``, `wire_bytes`) and its time at the
tbf's rate, the seconds beyond that minimum, and the link's bytes against it.

``--scenario region-down`` (three tiers): the region's receiver and its push
are killed (SIGKILL) and stay down ``--down-s`` seconds while the edge keeps
committing a part file every ``--write-every-s``; then both start again.
Measured: time from the region's return until the region holds the edge's
snapshot and the centre the region's.

At the end each tier's lake must hold every reading once (count, distinct
keys, sum). Needs root; not part of make test (`make bench-sync`).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py [--outages 100 --tiers 3 --loss 0.02]
    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py --scenario backlog --repeat 3
    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py --scenario region-down --down-s 300
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake.sync import wire
from citylake.sync.edge import HashCache, edge_lake
from citylake.sync.region import Limits, RegionStore
from citylake.sync.sender import Counters, status_path
from citylake_devstack.netns import NetnsPair
from citylake_devstack.process import ManagedProcess
from citylake_devstack.scalereport.summary import quantile
from citylake_devstack.synclake import CHECK_SQL, READINGS, expected_check, part_file

SITE, REGION, PORT = "edge-north", "region-south", 8090
KEYS = {SITE: "edge-north-key-0123456789", REGION: "region-south-key-0123456789"}
CITYLAKE = [sys.executable, "-m", "citylake"]
CHUNK = 64 * 1024  # sync.chunk_bytes of the senders here: a cut costs at most this again
CODECS = ("zstd-9", "zstd-3")  # the edge's uplink, the region's WAN (README, Compression)
TC_RATE = re.compile(r"^(\d+)(kbit|mbit)$")


def tc_rate_bytes_per_s(rate: str) -> int:
    """A tbf rate as tc writes it (``2mbit``) in bytes per second."""
    match = TC_RATE.match(rate)
    if match is None:
        raise ValueError(f"--rate {rate!r}: expected <n>kbit or <n>mbit, as tc writes it")
    return int(match.group(1)) * {"kbit": 1000, "mbit": 1_000_000}[match.group(2)] // 8


def edge_root(layout: DataLayout) -> str:
    return edge_lake(layout, [READINGS], HashCache(layout.data_dir / "bench-hashes.json")).tree.root


def lake_check(layout: DataLayout) -> tuple[object, ...]:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        return tuple(row or ())
    finally:
        lake.close()


def wire_bytes(paths: Sequence[Path], chunk_bytes: int, codec: str) -> int:
    """The upload bodies of these files as the sender makes them: each file in
    ``chunk_bytes`` chunks, zstd at the codec's level while that pays
    (`wire.ChunkEncoder`, as `RegionClient.upload`): the least the link can carry."""
    level = wire.codec_level(codec)
    total = 0
    for path in paths:
        data = path.read_bytes()
        encoder = wire.ChunkEncoder(level)
        for start in range(0, len(data), chunk_bytes):
            total += len(encoder.encode(data[start : start + chunk_bytes])[0])
    return total


@dataclass
class EdgeWriter:
    """The edge's Flink-like commits, numbered so the checks see loss or repeats."""

    layout: DataLayout
    site: str = SITE
    written: int = 0
    files: int = 0
    file_bytes: int = 0

    def commit(self, day: int, rows: int, devices: int = 50) -> Path:
        path = part_file(
            self.layout, day, f"{uuid.uuid4()}-0-{self.files}", self.written, rows, self.site, devices
        )
        self.written += rows
        self.files += 1
        self.file_bytes += path.stat().st_size
        return path


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
    pushes: int = 0
    serve_argv: list[str] = field(default_factory=list)
    push_argv: list[str] = field(default_factory=list)

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
                     "tables": ["readings"], "chunk_bytes": CHUNK, "interval_s": 0.5, "timeout_s": 3,
                     "retry_max_s": 1, "retry_window_s": 10, "wire_codec": codec},
        }))  # fmt: skip
        self.push_argv = self.net.exec_argv(
            self.net.edge, [*CITYLAKE, "sync", "push", "--follow", "--config", str(push_cfg)]
        )
        self.start_push()

    def start_serve(self) -> None:
        log = self.work / f"serve-{self.receiver}-{self.serves}.log"
        self.serve = ManagedProcess(f"serve-{self.receiver}", self.serve_argv, log).start()
        self.serve.wait_until(lambda: self.net.listening(self.net.region, PORT), 60, "sync receiver")
        self.serves += 1

    def start_push(self) -> None:
        log = self.work / f"push-{self.sender}-{self.pushes}.log"
        self.push = ManagedProcess(f"push-{self.sender}", self.push_argv, log).start()
        self.pushes += 1

    def kill_receiver(self) -> None:
        assert self.serve is not None
        self.serve.signal(signal.SIGKILL)
        self.serve.stop()

    def kill_sender(self) -> None:
        assert self.push is not None
        self.push.signal(signal.SIGKILL)
        self.push.stop()

    def consistent(self) -> bool:
        """The receiver holds the sender's snapshot (the receiver's tree for
        the sender, its claim, against the sender's own)."""
        tree, _ = RegionStore(self.receiver_layout, Limits(1, 1, 1)).tree(self.sender)
        return tree.root == edge_root(self.sender_layout)

    def push_totals(self) -> Counters:
        """The sender's counters since its start (push-status.json)."""
        path = status_path(self.sender_layout)
        if not path.exists():
            return Counters()
        return Counters(**json.loads(path.read_text())["totals"])

    def check_alive(self) -> None:
        for process in (self.push, self.serve):
            if process is not None and not process.alive():
                raise RuntimeError(f"{process.name} died: {process.log_tail()}")

    def stop(self) -> None:
        for process in (self.push, self.serve):
            if process is not None:
                process.stop()


def wait_consistent(links: Sequence[Link], deadline_s: float) -> list[float] | None:
    """Seconds until each link's receiver held its sender's snapshot (all of
    them at once at the end), or None past the deadline."""
    started = time.monotonic()
    reached: dict[int, float] = {}
    while time.monotonic() - started < deadline_s:
        for link in links:
            link.check_alive()
        states = [link.consistent() for link in links]
        now = time.monotonic() - started
        for i, state in enumerate(states):
            if state:
                reached.setdefault(i, now)
            else:
                reached.pop(i, None)  # an upper tier may fall behind again as the lower one commits
        if all(states):
            return [reached[i] for i in range(len(links))]
        time.sleep(0.1)
    return None


def counters_since(before: Counters, after: Counters) -> dict[str, float]:
    now, then = asdict(after), asdict(before)
    return {k: round(now[k] - then[k], 3) for k in now}


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(quantile(values, 0.5), 2),
        "p99": round(quantile(values, 0.99), 2),
        "max": round(max(values, default=float("nan")), 2),
        "min": round(min(values, default=float("nan")), 2),
    }


def short_outages(
    args: argparse.Namespace, links: Sequence[Link], writer: EdgeWriter, rng: random.Random
) -> dict[str, Any]:
    behind = kills = 0
    healed: list[float] = []
    failed: list[int] = []
    cut_s: list[float] = []
    for outage in range(args.outages):
        for _ in range(args.files):
            writer.commit(writer.files % 2, args.rows)
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
        reached = wait_consistent(links, args.deadline)
        if reached is None:
            failed.append(outage)
        else:
            healed.append(max(reached))
        result = "NOT healed" if reached is None else f"healed in {max(reached):.1f} s"
        what = "receiver killed, restarted after" if killing else "link cut"
        print(
            f"outage {outage + 1}/{args.outages} ({link.sender} → {link.receiver}): {what} {down:.1f} s, "
            f"{result}",
            flush=True,
        )
    return {
        "outages": args.outages,
        "healed": len(healed),
        "failed": failed,
        "success_ratio": len(healed) / args.outages,
        "receiver_kills": kills,
        "outages_with_a_tier_behind": behind,
        "cut_s_total": round(sum(cut_s), 1),
        "time_to_consistent_s": spread(healed),
    }


def day_of_files(args: argparse.Namespace) -> tuple[int, list[int]]:
    """A day's readings at the site's rate, and the rows of each of its part files."""
    readings = args.devices * args.metrics * 86_400 // args.every_s
    files = min(args.files_per_day, readings)
    rows = [readings // files + (1 if i < readings % files else 0) for i in range(files)]
    return readings, rows


def wait_status(link: Link, commits: int, timeout_s: float = 30.0) -> Counters:
    """The sender's totals once its round's status counts ``commits`` commits
    (it writes push-status.json just after the round's check of the tree)."""
    started = time.monotonic()
    totals = link.push_totals()
    while totals.commits < commits and time.monotonic() - started < timeout_s:
        time.sleep(0.05)
        totals = link.push_totals()
    return totals


def backlog(args: argparse.Namespace, links: Sequence[Link], writer: EdgeWriter) -> dict[str, Any]:
    (link,) = links
    rate = tc_rate_bytes_per_s(args.rate)
    readings, rows = day_of_files(args)
    writer.commit(0, args.rows)  # the region knows the edge before the outage
    if wait_consistent(links, args.deadline) is None:
        raise RuntimeError("the first sync did not finish")
    runs: list[dict[str, Any]] = []
    failed: list[int] = []
    for repeat in range(args.repeat):
        link.net.cut()
        cut_at = time.monotonic()
        paths = [writer.commit(1 + repeat, n, args.devices) for n in rows]
        write_s = time.monotonic() - cut_at
        # The sender keeps trying: its rounds snapshot and hash the day, then
        # fail on the link; an outage of hours is many such rounds, no more.
        time.sleep(args.offline_s)
        edge_root(link.sender_layout)  # the bench's own hashes now, not in the time measured
        missing = sum(p.stat().st_size for p in paths)
        minimum = wire_bytes(paths, CHUNK, CODECS[0])
        before, sent0 = link.push_totals(), link.net.edge_bytes()[0]
        offline_s = time.monotonic() - cut_at
        link.net.restore()
        # However big the day: the deadline runs beyond twice the link's minimum.
        deadline_s = args.deadline + 2 * minimum / rate
        reached = wait_consistent(links, deadline_s)
        sent_at_consistent = link.net.edge_bytes()[0] - sent0
        if reached is None:
            failed.append(repeat)
            print(f"backlog {repeat + 1}/{args.repeat}: NOT healed in {deadline_s:.0f} s", flush=True)
            continue
        after = wait_status(link, before.commits + 1)
        healed_s, minimum_s = reached[0], minimum / rate
        used = counters_since(before, after)
        run = {
            "readings": sum(rows),
            "files": len(rows),
            "write_s": round(write_s, 1),
            "offline_s": round(offline_s, 1),
            "missing_file_bytes": missing,
            "minimum_bytes": minimum,
            "minimum_s": round(minimum_s, 2),
            "time_to_consistent_s": round(healed_s, 2),
            "overhead_s": round(healed_s - minimum_s, 2),
            "link_bytes": sent_at_consistent,
            "link_over_minimum": round(sent_at_consistent / minimum, 3),
            "link_Bps_while_healing": round(sent_at_consistent / healed_s),
            # Where the time goes: sending file bytes (upload_s) and the rest
            # (waiting out the backoff, tree exchange, commits, per-file requests).
            "sender": used,
            "not_uploading_s": round(healed_s - used["upload_s"], 2),
        }
        runs.append(run)
        print(f"backlog {repeat + 1}/{args.repeat}: {json.dumps(run)}", flush=True)
    return {
        "day": {
            "devices": args.devices,
            "metrics": args.metrics,
            "every_s": args.every_s,
            "readings": readings,
            "files": len(rows),
        },
        "repeats": args.repeat,
        "healed": len(runs),
        "failed": failed,
        "time_to_consistent_s": spread([r["time_to_consistent_s"] for r in runs]),
        "minimum_s": spread([r["minimum_s"] for r in runs]),
        "overhead_s": spread([r["overhead_s"] for r in runs]),
        "link_over_minimum": spread([r["link_over_minimum"] for r in runs]),
        "runs": runs,
    }


def keep_writing(writer: EdgeWriter, rows: int, every_s: float, stop: threading.Event) -> Callable[[], None]:
    """Start committing a part file every ``every_s``; returns a join."""
    problems: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.wait(every_s):
                writer.commit(writer.files % 2, rows)
        except BaseException as exc:  # reported by join, in the bench's thread
            problems.append(exc)

    thread = threading.Thread(target=run, name="edge-writer")
    thread.start()

    def join() -> None:
        thread.join(60)
        if problems:
            raise RuntimeError(f"the edge's writer failed: {problems[0]!r}")

    return join


def region_down(
    args: argparse.Namespace, links: Sequence[Link], writer: EdgeWriter, rng: random.Random
) -> dict[str, Any]:
    to_region, to_centre = links
    for _ in range(args.files):
        writer.commit(writer.files % 2, args.rows)
    if wait_consistent(links, args.deadline) is None:
        raise RuntimeError("the first sync did not finish")
    runs: list[dict[str, Any]] = []
    failed: list[int] = []
    for repeat in range(args.repeat):
        stop = threading.Event()
        files0, bytes0, written0 = writer.files, writer.file_bytes, writer.written
        join = keep_writing(writer, args.rows, args.write_every_s, stop)
        time.sleep(rng.uniform(2.0, 5.0))  # the region is mid-upload, mid-commit or between rounds
        # The region dies: its receiver and its own push, where they are.
        to_region.kill_receiver()
        to_centre.kill_sender()
        down_at = time.monotonic()
        time.sleep(args.down_s)
        stop.set()
        join()
        down_s = time.monotonic() - down_at
        restart_at = time.monotonic()
        to_region.start_serve()
        to_centre.start_push()
        listening_s = time.monotonic() - restart_at
        reached = wait_consistent(links, args.deadline)
        checks = [
            lake_check(layout)
            for layout in (writer.layout, to_region.receiver_layout, to_centre.receiver_layout)
        ]
        exact = all(check == expected_check(writer.written) for check in checks)
        run: dict[str, Any] = {
            "down_s": round(down_s, 1),
            "edge_files_while_down": writer.files - files0,
            "edge_file_bytes_while_down": writer.file_bytes - bytes0,
            "edge_readings_while_down": writer.written - written0,
            "region_start_to_listening_s": round(listening_s, 2),
            "lakes_exact": exact,
        }
        if reached is None or not exact:
            failed.append(repeat)
            run["healed"] = False
        else:
            run |= {"region_consistent_s": round(reached[0], 2), "centre_consistent_s": round(reached[1], 2)}
        runs.append(run)
        print(f"region down {repeat + 1}/{args.repeat}: {json.dumps(run)}", flush=True)
    healed = [r for r in runs if "centre_consistent_s" in r]
    return {
        "repeats": args.repeat,
        "healed": len(healed),
        "failed": failed,
        "region_consistent_s": spread([r["region_consistent_s"] for r in healed]),
        "centre_consistent_s": spread([r["centre_consistent_s"] for r in healed]),
        "runs": runs,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=("short", "backlog", "region-down"), default="short")
    parser.add_argument("--outages", type=int, default=100, help="short: outages injected")
    parser.add_argument(
        "--tiers", type=int, choices=(2, 3), default=2, help="short: edge, region (and centre)"
    )
    parser.add_argument("--files", type=int, default=3, help="short: part files written before each outage")
    parser.add_argument("--rows", type=int, default=3500, help="readings per part file (short, region-down)")
    parser.add_argument("--loss", type=float, default=0.02, help="random loss each way")
    parser.add_argument("--rate", default="2mbit", help="tbf on the edge's uplink")
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="s after the link's return (backlog: + 2x its minimum)"
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--kill-every",
        type=int,
        default=10,
        help="short: every Nth outage kills the receiver instead (0: never)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="backlog, region-down: outages in turn")
    parser.add_argument("--devices", type=int, default=10_000, help="backlog: the site's devices")
    parser.add_argument("--metrics", type=int, default=2, help="backlog: readings per device each period")
    parser.add_argument("--every-s", type=int, default=900, help="backlog: a device's period")
    parser.add_argument("--files-per-day", type=int, default=1440, help="backlog: part files the day is in")
    parser.add_argument(
        "--offline-s", type=float, default=15.0, help="backlog: offline after the day is written"
    )
    parser.add_argument(
        "--down-s", type=float, default=300.0, help="region-down: how long the region is down"
    )
    parser.add_argument("--write-every-s", type=float, default=1.0, help="region-down: the edge's commits")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    if args.scenario == "backlog" and args.tiers != 2:
        parser.error("--scenario backlog runs on the edge's link alone (two tiers)")
    if args.scenario == "region-down":
        args.tiers = 3
    for name in ("outages", "repeat", "devices", "metrics", "every_s", "files_per_day", "rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        tc_rate_bytes_per_s(args.rate)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="citylake-outages-"))
    edge, region, centre = (DataLayout(work / t) for t in ("edge", "region", "centre"))
    writer = EdgeWriter(edge)
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
        for link, codec in zip(links, CODECS, strict=False):
            stack.callback(link.stop)
            link.start(codec)
        sent_before = [net.edge_bytes()[0] for net in nets]
        started = time.monotonic()
        if args.scenario == "short":
            figures = short_outages(args, links, writer, rng)
        elif args.scenario == "backlog":
            figures = backlog(args, links, writer)
        else:
            figures = region_down(args, links, writer, rng)
        sent = [net.edge_bytes()[0] - before for net, before in zip(nets, sent_before, strict=True)]
        elapsed = time.monotonic() - started
    checks = {layout.data_dir.name: lake_check(layout) for layout in (edge, region, centre)[: args.tiers]}
    exact = all(check == expected_check(writer.written) for check in checks.values())
    figures = {
        "scenario": args.scenario,
        "tiers": args.tiers,
        **figures,
        "lake_exact": exact,
        "checks": checks,
        "file_bytes_written": writer.file_bytes,
        "files_written": writer.files,
        "bytes_on_each_uplink": sent,
        "link_over_file_bytes": [round(b / max(1, writer.file_bytes), 3) for b in sent],
        "readings": writer.written,
        "elapsed_s": round(elapsed, 1),
        "loss": args.loss,
        "rate": args.rate,
        "work": str(work),
    }
    print(json.dumps(figures, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=1))
    if figures["failed"] or not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
