"""Reading a running stack from outside, sample by sample: process trees from
/proc, Prometheus endpoints, and the landing zone and lake on disk.

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

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from citylake.lake.manifest import TableLog
from citylake.schemas import TABLES, DataLayout
from citylake_devstack.scalereport.record import ProcessStat

log = logging.getLogger(__name__)
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    jiffies: int  # user + system CPU time
    rss_bytes: int


def read_proc(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is state (field 3 of proc(5)); ppid is 4, utime 14, stime 15.
    return ProcInfo(
        pid, int(fields[1]), comm, int(fields[11]) + int(fields[12]), int(statm.split()[1]) * PAGE
    )


def all_processes() -> dict[int, ProcInfo]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = read_proc(int(entry.name))
            if info is not None:
                found[info.pid] = info
    return found


def machine_times() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])
    return total - idle, total, steal


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def mem_total_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
    _machine: tuple[int, int, int] = (0, 0, 0)
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
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        left.append(f"{pid} ({info.comm})")
        return left


def processes_mentioning(text: str, exclude: Iterable[int] = ()) -> list[str]:
    """Live processes whose command line or environment mentions ``text`` (the
    run's work directory): what a leak of the run would look like."""
    found = []
    skip = {os.getpid(), *exclude}
    needle = text.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry.name}/{part}").read_bytes()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if needle in data:
                info = read_proc(int(entry.name))
                found.append(f"{entry.name} ({info.comm if info else '?'})")
                break
    return found


# -- Prometheus ------------------------------------------------------------------


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, client: httpx.Client) -> Metrics:
    """Every sample of a Prometheus endpoint, keyed by (name, sorted labels); {} if unreachable."""
    try:
        text = client.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (n, ls), value in metrics.items()
        if n == name and all((k, v) in ls for k, v in labels.items())
    )


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
