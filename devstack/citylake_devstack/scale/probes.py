"""Reading a running stack from outside, sample by sample: process trees (by
psutil), Prometheus endpoints, and the landing zone and lake on disk.

Everything here is incremental (only new files are read, only deltas of CPU
time are taken), so sampling every few seconds costs little beside 100k
devices' worth of traffic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citylake.lake.manifest import TableLog
from citylake.schemas import TABLES, DataLayout
from citylake_devstack.metrics_text import Metrics, scrape, total
from citylake_devstack.scalereport.record import ProcessStat

__all__ = ["Metrics", "scrape", "total"]

log = logging.getLogger(__name__)
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    jiffies: int  # user + system CPU time
    rss_bytes: int


_PROC_ATTRS = ["pid", "ppid", "name", "cpu_times", "memory_info"]


def _proc_info(found: Mapping[str, Any]) -> ProcInfo | None:
    times, memory = found["cpu_times"], found["memory_info"]
    if times is None or memory is None:  # gone, or not ours to read
        return None
    jiffies = round((times.user + times.system) * TICKS)
    return ProcInfo(found["pid"], found["ppid"], found["name"], jiffies, memory.rss)


def read_proc(pid: int) -> ProcInfo | None:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return _proc_info(process.as_dict(_PROC_ATTRS))
    except psutil.Error:
        return None


def all_processes() -> dict[int, ProcInfo]:
    found = {}
    for process in psutil.process_iter(_PROC_ATTRS):
        info = _proc_info(process.info)
        if info is not None:
            found[info.pid] = info
    return found


def machine_times() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of all CPUs since boot."""
    t = psutil.cpu_times()
    idle = t.idle + t.iowait
    total = t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal
    return total - idle, total, t.steal


def mem_available_mb() -> float:
    return psutil.virtual_memory().available / 2**20


def mem_total_mb() -> float:
    return psutil.virtual_memory().total / 2**20


def descendants(root: int, table: Mapping[int, ProcInfo]) -> list[int]:
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            out.append(pid)
            stack.extend(children.get(pid, ()))
    return out


@dataclass
class ProcessSampler:
    """CPU and memory of named process trees between two ``sample()`` calls.

    A tree is a root pid and everything below it (a job's JVM under its Python
    driver, a simulator's worker processes); a tree may exclude the roots of
    other trees (the orchestrator's own tree excludes the children it started)."""

    roots: dict[str, int] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict)  # pid -> jiffies at the last sample
    _last_at: float = 0.0
    _machine: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seen: set[int] = field(default_factory=set)  # every pid ever in a tree: checked at the end

    def add(self, name: str, pid: int) -> None:
        self.roots[name] = pid

    def sample(self) -> tuple[dict[str, ProcessStat], float, float]:
        """Per tree stats, machine busy and steal, each in % of one core."""
        now = time.monotonic()
        table = all_processes()
        machine = machine_times()
        dt = now - self._last_at if self._last_at else 0.0
        other_roots = set(self.roots.values())
        stats: dict[str, ProcessStat] = {}
        current: dict[int, int] = {}
        for name, root in self.roots.items():
            pids = descendants(root, table)
            if not pids:
                continue
            cpu_by_comm: dict[str, float] = {}
            cpu = 0
            rss = 0
            counted = 0
            stack_excluded = set()
            for pid in pids:
                if pid != root and pid in other_roots:
                    stack_excluded.update(descendants(pid, table))
            for pid in pids:
                if pid in stack_excluded:
                    continue
                info = table[pid]
                counted += 1
                self.seen.add(pid)
                delta = info.jiffies - self._last.get(pid, info.jiffies if not self._last_at else 0)
                current[pid] = info.jiffies
                cpu += delta
                rss += info.rss_bytes
                cpu_by_comm[info.comm] = cpu_by_comm.get(info.comm, 0) + delta
            top = max(cpu_by_comm, key=lambda c: cpu_by_comm[c]) if cpu_by_comm else ""
            percent = 100.0 * cpu / TICKS / dt if dt > 0 else 0.0
            stats[name] = ProcessStat(round(percent, 1), round(rss / 1e6, 1), counted, top)
        busy = steal = 0.0
        if self._last_at and dt > 0:
            d_busy, d_total, d_steal = (a - b for a, b in zip(machine, self._machine, strict=True))
            cores = os.cpu_count() or 1
            if d_total > 0:
                busy = 100.0 * cores * d_busy / d_total
                steal = 100.0 * cores * d_steal / d_total
        self._last = current
        self._last_at = now
        self._machine = machine
        return stats, round(busy, 1), round(steal, 1)

    def still_running(self) -> list[str]:
        """Pids of the run's trees that are still alive (after everything was stopped)."""
        left = []
        for pid in sorted(self.seen):
            info = read_proc(pid)
            if info is not None and pid != os.getpid():
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        left.append(f"{pid} ({info.comm})")
        return left


def processes_mentioning(text: str, exclude: Iterable[int] = ()) -> list[str]:
    """Live processes whose command line or environment mentions ``text`` (the
    run's work directory): what a leak of the run would look like."""
    found = []
    skip = {os.getpid(), *exclude}
    for process in psutil.process_iter(["pid", "name", "cmdline", "environ"]):
        info = process.info
        if info["pid"] in skip:
            continue
        # None where psutil may not read them (another user's process).
        words = [*(info["cmdline"] or ()), *(f"{k}={v}" for k, v in (info["environ"] or {}).items())]
        if any(text in word for word in words):
            found.append(f"{info['pid']} ({info['name'] or '?'})")
    return found


# -- Prometheus ------------------------------------------------------------------


def by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    out = {}
    for (n, ls), value in metrics.items():
        if n == name:
            found = dict(ls).get(label)
            if found is not None:
                out[found] = value
    return out


# -- the landing zone and the lake -----------------------------------------------------


@dataclass
class LandingWatcher:
    """Reads each new landing file once: which devices reported (readings with
    good quality, by source) and which GB28181 devices are online (their last
    online/offline event). Also the zone's size in bytes."""

    layout: DataLayout
    ignore_devices: frozenset[str] = frozenset()
    reporting: dict[str, set[str]] = field(default_factory=dict)  # source -> device ids
    online: dict[str, set[str]] = field(default_factory=dict)  # source -> device ids (events)
    landing_bytes: int = 0
    files: int = 0
    _seen: set[str] = field(default_factory=set)

    def poll(self) -> None:
        size = 0
        new: list[tuple[str, Path]] = []
        for table in ("readings", "device_events"):
            root = self.layout.landing_root / table
            if not root.exists():
                continue
            for path in root.rglob("*.parquet"):
                if path.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size += path.stat().st_size
                key = str(path)
                if key not in self._seen:
                    new.append((table, path))
        self.landing_bytes = size
        for table, path in sorted(new, key=lambda item: item[1].name):
            try:
                if table == "readings":
                    self._readings(path)
                else:
                    self._events(path)
            except (OSError, ValueError) as exc:  # a file removed or half there: try again next time
                log.debug("landing file %s not read yet: %s", path, exc)
                continue
            self._seen.add(str(path))
            self.files += 1

    def _readings(self, path: Path) -> None:
        data = pq.read_table(path, columns=["source", "device_id", "quality"])
        data = data.filter(pc.equal(data["quality"], 0))
        data = data.set_column(0, "source", pc.cast(data["source"], "string"))
        data = data.set_column(1, "device_id", pc.cast(data["device_id"], "string"))
        for row in data.group_by(["source", "device_id"]).aggregate([]).to_pylist():
            if row["device_id"] not in self.ignore_devices:
                self.reporting.setdefault(str(row["source"]), set()).add(str(row["device_id"]))

    def _events(self, path: Path) -> None:
        data = pq.read_table(path, columns=["source", "device_id", "kind"])
        for source, device, kind in zip(
            data["source"].to_pylist(), data["device_id"].to_pylist(), data["kind"].to_pylist(), strict=True
        ):
            online = self.online.setdefault(str(source), set())
            if kind == "online":
                online.add(str(device))
            elif kind == "offline":
                online.discard(str(device))


@dataclass
class LakeWatcher:
    """Rows of each lake table as its catalog snapshot shows them (the files
    DuckDB's views read), and when each marker reading first became visible."""

    layout: DataLayout
    marker_device: str
    rows: dict[str, int] = field(default_factory=dict)
    markers: dict[int, float] = field(default_factory=dict)  # seq -> first seen (time.time())
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._logs = {name: TableLog(self.layout, spec) for name, spec in TABLES.items()}

    def poll(self) -> None:
        for name, table_log in self._logs.items():
            try:
                snapshot = table_log.snapshot()
            except (OSError, ValueError) as exc:
                log.debug("lake table %s not listed: %s", name, exc)
                continue
            for path in snapshot.paths:
                key = str(path)
                if key in self._seen:
                    continue
                try:
                    rows = pq.ParquetFile(path).metadata.num_rows
                    if name == "readings":
                        self._find_markers(Path(path))
                except (OSError, ValueError) as exc:
                    log.debug("lake file %s not read yet: %s", path, exc)
                    continue
                self._seen.add(key)
                self.rows[name] = self.rows.get(name, 0) + rows

    def _find_markers(self, path: Path) -> None:
        now = time.time()
        data = pq.read_table(path, columns=["device_id", "value"])
        hits = data.filter(pc.equal(pc.cast(data["device_id"], "string"), self.marker_device))
        for value in hits["value"].to_pylist():
            if value is not None:
                self.markers.setdefault(int(value), now)
