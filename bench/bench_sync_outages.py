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
snapshot and the centre the region's. With ``--edges N`` the region has N
edges, each its own namespace, link (tbf, loss) and `sync push`, into the
region's one namespace and receiver; their readings are numbered apart
(`ReadingNumbers`), so the region's and the centre's lakes must hold the
union of the edges' exactly. Also measured: each link's bytes against its
minimum (the repeat's new files as its sender sends them), the backlog's
growth per hour, and the CPU of each role while down and while healing.

At the end each tier's lake must hold every reading once (count, distinct
keys, sum). Needs root; not part of make test (`make bench-sync`).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py [--outages 100 --tiers 3 --loss 0.02]
    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py --scenario backlog --repeat 3
    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py --scenario region-down --down-s 300
    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_outages.py --scenario region-down --edges 3 \\
        --down-s 1380
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
from citylake_devstack.synclake import (
    CHECK_SQL,
    READINGS,
    SITE_COUNTS_SQL,
    ReadingNumbers,
    edge_sites,
    expected_check,
    part_file,
    range_check,
)

SITE, REGION, PORT = "edge-north", "region-south", 8090
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


def key_of(site: str) -> str:
    """The bench's sync key of a site (each sender its own)."""
    return f"{site}-key-0123456789"


def edge_root(layout: DataLayout) -> str:
    return edge_lake(layout, [READINGS], HashCache(layout.data_dir / "bench-hashes.json")).tree.root


def lake_check(layout: DataLayout) -> tuple[object, ...]:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        return tuple(row or ())
    finally:
        lake.close()


def site_counts(layout: DataLayout) -> dict[str, int]:
    """Readings per origin site in a lake's view."""
    lake = Lake(layout)
    try:
        return {str(site): int(n) for site, n in lake.cursor().execute(SITE_COUNTS_SQL).fetchall()}
    finally:
        lake.close()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """The edge's Flink-like commits, numbered so the checks see loss or
    repeats; edges of one region share ``numbers`` so no two readings have
    one key."""

    layout: DataLayout
    site: str = SITE
    numbers: ReadingNumbers = field(default_factory=ReadingNumbers)
    written: int = 0
    files: int = 0
    file_bytes: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def commit(self, day: int, rows: int, devices: int = 50) -> Path:
        first = self.numbers.take(rows)
        path = part_file(self.layout, day, f"{uuid.uuid4()}-0-{self.files}", first, rows, self.site, devices)
        self.written += rows
        self.files += 1
        self.file_bytes += path.stat().st_size
        self.ranges.append((first, rows))
        self.paths.append(path)
        return path

    def expected(self) -> tuple[int, int, float, int]:
        """``CHECK_SQL`` over this edge's own lake when it holds each of its readings once."""
        return range_check(self.ranges)


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

    def start(self, codec: str, serve: bool = True) -> None:
        """Start the receiver (unless another edge's link of the same region
        namespace runs it: ``serve=False``) and the sender's push."""
        if serve:
            serve_cfg = self.work / f"{self.receiver}.yaml"
            # All addresses of the region's namespace: each of its edges has its own link there.
            sync = {"host": "0.0.0.0", "port": PORT, "request_timeout_s": 20} | self.receiver_sync
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
            "sync": {"region_url": f"http://{self.net.region_ip}:{PORT}", "api_key": key_of(self.sender),
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


def wait_consistent(links: Sequence[Link], deadline_s: float, poll_s: float = 0.1) -> list[float] | None:
    """Seconds until each link's receiver held its sender's snapshot (all of
    them at once at the end), or None past the deadline. Each poll hashes
    every lake's tree: ``poll_s`` keeps that modest on large lakes."""
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
        time.sleep(poll_s)
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


def keep_writing(
    writers: Sequence[EdgeWriter], rows: int, every_s: float, stop: threading.Event
) -> Callable[[], None]:
    """Start committing a part file at each edge every ``every_s``; returns a join."""
    problems: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.wait(every_s):
                for writer in writers:
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


@dataclass
class CpuMeter:
    """CPU seconds of the sync's processes and of this bench (the edges'
    writer and the consistency polls), per phase."""

    links: Sequence[Link]
    marks: dict[str, float] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        pushes = sum(process_cpu_s(link.push.pid) for link in self.links[:-1] if link.push is not None)
        return {
            "edge_pushes": pushes,
            "region_serve": process_cpu_s(self.links[0].serve.pid) if self.links[0].serve else 0.0,
            "region_push": process_cpu_s(self.links[-1].push.pid) if self.links[-1].push else 0.0,
            "centre_serve": process_cpu_s(self.links[-1].serve.pid) if self.links[-1].serve else 0.0,
            "bench": time.process_time(),
        }

    def between(self, before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, Any]:
        """Each role's share of one core over ``wall_s`` (a process restarted
        in between counts from its start), and the machine's load then."""
        used = {k: max(0.0, after[k] - (before[k] if after[k] >= before[k] else 0.0)) for k in after}
        share = {k: round(v / wall_s, 3) for k, v in used.items()}
        return {
            "cpu_s": {k: round(v, 1) for k, v in used.items()},
            "cores": share,
            "cores_total": round(sum(share.values()), 3),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        }


def stay_down(down_s: float, writers: Sequence[EdgeWriter], files0: int, bytes0: int) -> None:
    """Wait ``down_s``, saying each minute what the edges wrote meanwhile."""
    down_at = time.monotonic()
    while (left := down_s - (time.monotonic() - down_at)) > 0:
        time.sleep(min(left, 60.0))
        print(
            f"region down {time.monotonic() - down_at:.0f} s: edges wrote "
            f"{sum(w.files for w in writers) - files0} files, "
            f"{(sum(w.file_bytes for w in writers) - bytes0) / 1e6:.1f} MB",
            flush=True,
        )


def region_down(
    args: argparse.Namespace, links: Sequence[Link], writers: Sequence[EdgeWriter], rng: random.Random
) -> dict[str, Any]:
    """The region's receiver and push die while ``len(writers)`` edges keep
    writing; links are each edge's to the region, then the region's to the centre."""
    edge_links, to_region, to_centre = links[:-1], links[0], links[-1]
    rate = tc_rate_bytes_per_s(args.rate)
    for writer in writers:
        for _ in range(args.files):
            writer.commit(writer.files % 2, args.rows)
    if wait_consistent(links, args.deadline) is None:
        raise RuntimeError("the first sync did not finish")
    meter = CpuMeter(links)
    runs: list[dict[str, Any]] = []
    failed: list[int] = []
    for repeat in range(args.repeat):
        stop = threading.Event()
        since = [len(w.paths) for w in writers]
        files0 = sum(w.files for w in writers)
        bytes0, written0 = sum(w.file_bytes for w in writers), sum(w.written for w in writers)
        sent0 = [link.net.edge_bytes()[0] for link in links]
        join = keep_writing(writers, args.rows, args.write_every_s, stop)
        time.sleep(rng.uniform(2.0, 5.0))  # the region is mid-upload, mid-commit or between rounds
        # The region dies: its receiver and its own push, where they are.
        to_region.kill_receiver()
        to_centre.kill_sender()
        down_at, cpu_down0 = time.monotonic(), meter.sample()
        stay_down(args.down_s, writers, files0, bytes0)
        stop.set()
        join()
        down_s = time.monotonic() - down_at
        cpu_down = meter.between(cpu_down0, meter.sample(), down_s)
        restart_at = time.monotonic()
        to_region.start_serve()
        to_centre.start_push()
        listening_s = time.monotonic() - restart_at
        cpu_up0, up_at = meter.sample(), time.monotonic()
        reached = wait_consistent(links, args.deadline + args.down_s, args.poll_s)
        up_s = time.monotonic() - up_at
        cpu_up = meter.between(cpu_up0, meter.sample(), up_s)
        sent = [link.net.edge_bytes()[0] - s0 for link, s0 in zip(links, sent0, strict=True)]
        # The minimum: this repeat's new files, as each sender chunks and compresses them.
        new = [w.paths[n:] for w, n in zip(writers, since, strict=True)]
        edge_minimum = [wire_bytes(paths, CHUNK, CODECS[0]) for paths in new]
        region_minimum = wire_bytes([p for paths in new for p in paths], CHUNK, CODECS[1])
        exact, checks = lakes_exact(writers, to_region.receiver_layout, to_centre.receiver_layout)
        new_bytes = sum(w.file_bytes for w in writers) - bytes0
        run: dict[str, Any] = {
            "edges": len(writers),
            "down_s": round(down_s, 1),
            "edge_files_while_down": sum(w.files for w in writers) - files0,
            "edge_file_bytes_while_down": new_bytes,
            "edge_readings_while_down": sum(w.written for w in writers) - written0,
            # How fast the backlog grows, for outages longer than this run.
            "backlog_file_bytes_per_hour": round(new_bytes / down_s * 3600),
            "backlog_readings_per_hour": round((sum(w.written for w in writers) - written0) / down_s * 3600),
            "region_start_to_listening_s": round(listening_s, 2),
            "edge_link_bytes": sent[:-1],
            "edge_minimum_bytes": edge_minimum,
            "edge_link_over_minimum": [
                round(b / max(1, m), 3) for b, m in zip(sent, edge_minimum, strict=False)
            ],
            "edge_minimum_s": round(max(edge_minimum) / rate, 1),
            "region_link_bytes": sent[-1],
            "region_minimum_bytes": region_minimum,
            "region_link_over_minimum": round(sent[-1] / max(1, region_minimum), 3),
            "cpu_while_down": cpu_down,
            "cpu_while_healing": cpu_up,
            "lakes_exact": exact,
            "checks": checks,
        }
        if reached is None or not exact:
            failed.append(repeat)
            run["healed"] = False
        else:
            run |= {
                "each_edge_at_region_s": [round(r, 2) for r in reached[: len(edge_links)]],
                "region_consistent_s": round(max(reached[: len(edge_links)]), 2),
                "centre_consistent_s": round(reached[-1], 2),
                "region_overhead_s": round(max(reached[: len(edge_links)]) - max(edge_minimum) / rate, 1),
            }
        runs.append(run)
        print(f"region down {repeat + 1}/{args.repeat}: {json.dumps(run)}", flush=True)
    healed = [r for r in runs if "centre_consistent_s" in r]
    return {
        "edges": len(writers),
        "repeats": args.repeat,
        "healed": len(healed),
        "failed": failed,
        "region_consistent_s": spread([r["region_consistent_s"] for r in healed]),
        "centre_consistent_s": spread([r["centre_consistent_s"] for r in healed]),
        "runs": runs,
    }


def lakes_exact(writers: Sequence[EdgeWriter], *receivers: DataLayout) -> tuple[bool, dict[str, Any]]:
    """Whether each edge's lake holds its readings once, and each receiver's
    the union of them once (count, distinct keys, sum; readings per site)."""
    total = sum(w.written for w in writers)
    per_site = {w.site: w.written for w in writers}
    checks: dict[str, Any] = {w.site: lake_check(w.layout) for w in writers}
    exact = all(checks[w.site] == w.expected() for w in writers)
    numbered = {w.numbers.taken for w in writers}
    exact &= numbered == {total}  # nothing numbered was left unwritten
    for layout in receivers:
        name = layout.data_dir.name
        checks[name] = lake_check(layout)
        checks[f"{name}_per_site"] = site_counts(layout)
        exact &= checks[name] == expected_check(total) and checks[f"{name}_per_site"] == per_site
    return exact, checks


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
    parser.add_argument("--edges", type=int, default=1, help="region-down: edges behind the one region")
    parser.add_argument(
        "--poll-s", type=float, default=1.0, help="region-down: between consistency checks while healing"
    )
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    if args.scenario == "backlog" and args.tiers != 2:
        parser.error("--scenario backlog runs on the edge's link alone (two tiers)")
    if args.scenario == "region-down":
        args.tiers = 3
    elif args.edges != 1:
        parser.error("--edges is for --scenario region-down (short and backlog run one edge)")
    for name in ("outages", "repeat", "devices", "metrics", "every_s", "files_per_day", "rows", "edges"):
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
    numbers = ReadingNumbers()
    sites = edge_sites(args.edges, SITE)
    writers = [EdgeWriter(DataLayout(work / site), site, numbers) for site in sites]
    region, centre = DataLayout(work / "region"), DataLayout(work / "centre")
    with contextlib.ExitStack() as stack:
        # The edges' links, all into the region's one namespace; then the region's to the centre.
        first = stack.enter_context(NetnsPair())
        edge_nets = [first, *(stack.enter_context(NetnsPair(region_of=first)) for _ in sites[1:])]
        nets = edge_nets + [stack.enter_context(NetnsPair()) for _ in range(args.tiers - 2)]
        for net in nets:
            if args.loss > 0:
                net.loss(args.loss)
        for net in edge_nets:  # each edge's uplink; region → centre is a WAN without a tbf
            net.limit(args.rate)
        region_sync = {"site_keys": {site: [key_of(site)] for site in sites}}
        links = [
            Link(net, work, w.site, w.layout, REGION, region, region_sync)
            for net, w in zip(edge_nets, writers, strict=True)
        ]
        if args.tiers == 3:
            centre_sync = {"site_keys": {REGION: [key_of(REGION)]}, "regions": {REGION: sites}}
            links.append(Link(nets[-1], work, REGION, region, "centre", centre, centre_sync))
        for i, link in enumerate(links):
            stack.callback(link.stop)
            is_edge = i < len(edge_nets)
            # One receiver in the region's namespace serves all its edges (the first link's).
            link.start(CODECS[0] if is_edge else CODECS[1], serve=i == 0 or not is_edge)
        sent_before = [net.edge_bytes()[0] for net in nets]
        started = time.monotonic()
        if args.scenario == "short":
            figures = short_outages(args, links, writers[0], rng)
        elif args.scenario == "backlog":
            figures = backlog(args, links, writers[0])
        else:
            figures = region_down(args, links, writers, rng)
        sent = [net.edge_bytes()[0] - before for net, before in zip(nets, sent_before, strict=True)]
        elapsed = time.monotonic() - started
    exact, checks = lakes_exact(writers, *(region, centre)[: args.tiers - 1])
    file_bytes = sum(w.file_bytes for w in writers)
    figures = {
        "scenario": args.scenario,
        "tiers": args.tiers,
        **figures,
        "lake_exact": exact,
        "checks": checks,
        "file_bytes_written": file_bytes,
        "files_written": sum(w.files for w in writers),
        "bytes_on_each_uplink": sent,
        "link_over_file_bytes": [round(b / max(1, file_bytes), 3) for b in sent],
        "readings": sum(w.written for w in writers),
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
