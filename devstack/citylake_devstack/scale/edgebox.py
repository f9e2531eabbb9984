"""The edge in a box: a cgroup v1 of the edge node's size (2 CPUs, 4 GiB by
default) that the edge's own processes of a scale run start inside.

A process is put in the box by a ``/bin/sh`` prefix that writes its own pid
to each controller's ``cgroup.procs`` and then ``exec``s the real command: the
pid is in the box before the command's first instruction, so everything it
starts later (a job's JVM under its Python driver) inherits the box, and the
pid ``ManagedProcess`` knows stays the command's own. (``preexec_fn`` would do
the same but is unsafe in a process with threads, as the orchestrator is.)

Each controller's box is made *under the cgroup this process is already in*,
not at the hierarchy's root: the box then stays inside whatever limits the
machine (a container, a CI runner's own memory cgroup) already put on us, and
its usage keeps being charged there.

The parsing of ``/proc/mounts``, ``/proc/self/cgroup`` and the controllers'
key-value files is pure and unit-tested; ``EdgeBox`` does the I/O.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable

CFS_PERIOD_US = 100_000
# The controllers the box needs and the files it reads from each.
MEMORY, CPU, CPUACCT = "memory", "cpu", "cpuacct"
CONTROLLERS = (MEMORY, CPU, CPUACCT)
MAX_CPUS = 256.0
MIN_MEMORY_MB = 256


class EdgeBoxUnavailable(ComponentUnavailable):
    """The box cannot be made here: no cgroup v1 controllers, or not root."""


@dataclass(frozen=True)
class BoxLimits:
    cpus: float = 2.0
    memory_mb: int = 4096

    def __post_init__(self) -> None:
        if not 0.01 <= self.cpus <= MAX_CPUS:
            raise ValueError(f"edge box CPUs must be between 0.01 and {MAX_CPUS:g}, got {self.cpus}")
        if self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"edge box memory must be at least {MIN_MEMORY_MB} MiB, got {self.memory_mb}")

    @property
    def quota_us(self) -> int:
        """CFS quota per ``CFS_PERIOD_US``: 2 CPUs = 200 ms of CPU time per 100 ms."""
        return round(self.cpus * CFS_PERIOD_US)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 2**20


# -- pure parts ------------------------------------------------------------------------


def v1_mounts(mounts_text: str) -> dict[str, Path]:
    """Controller -> mount point of each cgroup v1 hierarchy in ``/proc/mounts``
    text. A co-mounted hierarchy (``cpu,cpuacct``) serves each of its controllers."""
    found: dict[str, Path] = {}
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "cgroup":
            continue
        options = set(fields[3].split(","))
        for controller in CONTROLLERS:
            if controller in options:
                found.setdefault(controller, Path(fields[1]))
    return found


def own_cgroups(proc_cgroup_text: str) -> dict[str, str]:
    """Controller -> this process's cgroup path, from ``/proc/self/cgroup``
    (``4:memory:/a/b``; ``2:cpu,cpuacct:/`` names two controllers)."""
    found: dict[str, str] = {}
    for line in proc_cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[1]:
            continue  # the v2 line (0::/) has no controllers
        for controller in parts[1].split(","):
            found[controller] = parts[2]
    return found


def key_values(text: str) -> dict[str, int]:
    """``name value`` lines (cpu.stat, memory.oom_control, memory.stat) as ints;
    lines that are not a name and an integer are left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def enter_prefix(procs_files: Sequence[Path]) -> list[str]:
    """argv to put before a command so it runs in the box: the shell writes its
    own pid into each ``cgroup.procs`` (failing loudly if it cannot), then
    becomes the command (``exec`` keeps the pid)."""
    if not procs_files:
        raise ValueError("no cgroup.procs files to enter")
    writes = " && ".join(f"echo $$ > {shlex.quote(str(path))}" for path in procs_files)
    return ["/bin/sh", "-c", f'{writes} && exec "$@"', "edge-box"]


@dataclass(frozen=True)
class BoxReading:
    """One read of the box's counters (cumulative ones as the kernel keeps them)."""

    memory_bytes: int
    memory_peak_bytes: int
    rss_bytes: int  # anonymous memory of the box's processes (memory.stat total_rss)
    cache_bytes: int  # page cache charged to the box: the files its processes wrote and read
    failcnt: int
    oom_kills: int
    cpu_ns: int  # cpuacct.usage: CPU time of the box's processes
    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    pids: frozenset[int]

    def figures(self, previous: BoxReading | None, dt_s: float) -> dict[str, float]:
        """What a sample keeps: memory in MiB, CPU as % of one core over the
        interval since ``previous`` (0 for the first), throttling counters."""
        cpu = 0.0
        throttled_share = 0.0
        if previous is not None and dt_s > 0:
            cpu = 100.0 * (self.cpu_ns - previous.cpu_ns) / 1e9 / dt_s
            periods = self.nr_periods - previous.nr_periods
            if periods > 0:
                throttled_share = 100.0 * (self.nr_throttled - previous.nr_throttled) / periods
        return {
            "memory_mb": round(self.memory_bytes / 2**20, 1),
            "memory_peak_mb": round(self.memory_peak_bytes / 2**20, 1),
            "rss_mb": round(self.rss_bytes / 2**20, 1),
            "cache_mb": round(self.cache_bytes / 2**20, 1),
            "failcnt": float(self.failcnt),
            "oom_kills": float(self.oom_kills),
            "cpu_percent": round(max(0.0, cpu), 1),
            "nr_throttled": float(self.nr_throttled),
            "throttled_s": round(self.throttled_ns / 1e9, 3),
            "throttled_periods_percent": round(throttled_share, 1),
            "processes": float(len(self.pids)),
        }


def members(pids: frozenset[int], roots: Mapping[str, int]) -> list[str]:
    """The names of the process roots that are in the box."""
    return sorted(name for name, pid in roots.items() if pid in pids)


# -- the box ---------------------------------------------------------------------------


def preflight(mounts: Path = Path("/proc/mounts")) -> dict[str, Path]:
    """The controllers' mount points, or why the box cannot be made here."""
    if os.geteuid() != 0:
        raise EdgeBoxUnavailable("--edge-box needs root: cgroups are made and limited in /sys/fs/cgroup")
    mounted = v1_mounts(mounts.read_text())
    missing = [c for c in CONTROLLERS if c not in mounted]
    if missing:
        raise EdgeBoxUnavailable(
            f"--edge-box needs the cgroup v1 {', '.join(missing)} controller(s) mounted "
            f"(found: {', '.join(sorted(mounted)) or 'none'}; see `mount | grep cgroup`)"
        )
    return mounted


@dataclass
class EdgeBox:
    """A cgroup per controller, named ``citylake-edge-<pid>``; ``create()``
    makes and limits it, ``prefix`` puts commands in it, ``read()`` samples it,
    ``remove()`` kills what is left in it and removes it."""

    name: str
    limits: BoxLimits
    dirs: dict[str, Path]
    memsw: bool

    @classmethod
    def create(
        cls,
        limits: BoxLimits,
        owner_pid: int | None = None,
        mounts: Path = Path("/proc/mounts"),
        own: Path = Path("/proc/self/cgroup"),
    ) -> EdgeBox:
        """Make and limit the box, or say why it cannot be made here."""
        mounted = preflight(mounts)
        current = own_cgroups(own.read_text())
        name = f"citylake-edge-{owner_pid or os.getpid()}"
        dirs: dict[str, Path] = {}
        for controller in CONTROLLERS:
            # Co-mounted controllers share one directory: made once.
            parent = mounted[controller] / current.get(controller, "/").lstrip("/")
            dirs[controller] = parent / name
        box = cls(name, limits, dirs, memsw=False)
        try:
            for path in set(dirs.values()):
                path.mkdir(exist_ok=True)
                if (path / "cgroup.procs").read_text().split():
                    raise EdgeBoxUnavailable(
                        f"{path} already has processes in it (a run of the same pid still going?)"
                    )
            memory = dirs[MEMORY]
            # memsw (memory + swap) may not be below the memory limit: memory first.
            _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
                box.memsw = True
            _write(dirs[CPU] / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(dirs[CPU] / "cpu.cfs_quota_us", limits.quota_us)
        except OSError as exc:
            box.remove()
            raise EdgeBoxUnavailable(f"--edge-box: cannot make the cgroup {name}: {exc}") from exc
        return box

    @property
    def prefix(self) -> list[str]:
        return enter_prefix(sorted({d / "cgroup.procs" for d in self.dirs.values()}))

    def describe(self) -> dict[str, object]:
        """The box as the report states it."""
        return {
            "cgroup": self.name,
            "cpus": self.limits.cpus,
            "cfs_quota_us": self.limits.quota_us,
            "cfs_period_us": CFS_PERIOD_US,
            "memory_mb": self.limits.memory_mb,
            "memsw_limited": self.memsw,
            "dirs": {c: str(p) for c, p in self.dirs.items()},
        }

    def pids(self) -> frozenset[int]:
        try:
            text = (self.dirs[MEMORY] / "cgroup.procs").read_text()
        except OSError:
            return frozenset()
        return frozenset(int(p) for p in text.split() if p.isdigit())

    def read(self) -> BoxReading:
        memory, cpu, cpuacct = self.dirs[MEMORY], self.dirs[CPU], self.dirs[CPUACCT]
        stat = key_values(_read(memory / "memory.stat"))
        oom = key_values(_read(memory / "memory.oom_control"))
        throttling = key_values(_read(cpu / "cpu.stat"))
        return BoxReading(
            memory_bytes=_read_int(memory / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
            rss_bytes=stat.get("total_rss", stat.get("rss", 0)),
            cache_bytes=stat.get("total_cache", stat.get("cache", 0)),
            failcnt=_read_int(memory / "memory.failcnt"),
            oom_kills=oom.get("oom_kill", 0),
            cpu_ns=_read_int(cpuacct / "cpuacct.usage"),
            nr_periods=throttling.get("nr_periods", 0),
            nr_throttled=throttling.get("nr_throttled", 0),
            throttled_ns=throttling.get("throttled_time", 0),
            pids=self.pids(),
        )

    def remove(self, timeout_s: float = 10.0) -> list[int]:
        """After the run's own stop: SIGKILL whatever is still in the box (only
        the run's processes can be there), wait for it to empty, remove the
        directories. Returns the pids that had to be killed."""
        killed = sorted(self.pids())
        for pid in killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        for path in set(self.dirs.values()):
            while path.exists():
                try:
                    path.rmdir()
                except OSError:  # EBUSY until the killed processes have exited
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        return killed


def _write(path: Path, value: int) -> None:
    path.write_text(f"{value}\n")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # a controller file this kernel does not have: read as absent
        return ""


def _read_int(path: Path) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else 0
