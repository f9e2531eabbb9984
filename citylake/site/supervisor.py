"""Start the units, restart what dies, report one health, stop them all."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import psutil

from citylake.config import SiteRunConfig
from citylake.site.logs import BoundedLog
from citylake.site.units import SitePlan, Unit

log = logging.getLogger("citylake.site")

LOG_MAX_BYTES = 32 * 1024 * 1024


class UnitState(StrEnum):
    STARTING = "starting"  # running, not yet healthy
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # running, its health check fails
    BACKOFF = "backoff"  # exited; restarts at next_start
    STOPPED = "stopped"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a unit and its children (Flink's JVM runs under the
    Python driver), in MiB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return round(total / 2**20, 1)


_RUNNING = (UnitState.STARTING, UnitState.HEALTHY, UnitState.UNHEALTHY)


@dataclass
class UnitStatus:
    unit: Unit
    log: BoundedLog
    state: UnitState = UnitState.STOPPED
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        running = self.proc is not None and self.proc.poll() is None
        return {
            "kind": self.unit.kind.value,
            "state": self.state.value,
            "pid": self.proc.pid if running and self.proc else None,
            "restarts": self.restarts,
            "uptime_s": round(now - self.started_at, 1) if running else 0,
            "last_exit": self.last_exit,
            "rss_mb": tree_rss_mb(self.proc.pid) if running and self.proc else 0.0,
            "restart_in_s": round(max(0.0, self.next_start - now), 1)
            if self.state is UnitState.BACKOFF
            else None,
            "log": str(self.log.path),
        }


class Supervisor:
    """Owns the site's children. ``start()`` then ``tick()`` in a loop (or
    ``run(stop)``), ``stop()`` at the end; ``health()`` is safe from any thread."""

    def __init__(
        self,
        plan: SitePlan,
        logs_dir: Path,
        settings: SiteRunConfig,
        on_change: Callable[[str, UnitState, UnitState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self.units = {
            u.name: UnitStatus(u, BoundedLog(logs_dir / f"{u.name}.log", LOG_MAX_BYTES)) for u in plan.units
        }
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._health_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        for status in self.units.values():
            self._spawn(status)
        self._health_thread = threading.Thread(target=self._probe_loop, name="site-health", daemon=True)
        self._health_thread.start()

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        while not stop.wait(interval_s):
            self.tick()

    def tick(self) -> None:
        """Notice exits and restart units whose backoff ran out."""
        now = self.clock()
        for status in self.units.values():
            if status.state is UnitState.BACKOFF:
                if now >= status.next_start:
                    status.restarts += 1
                    self._spawn(status)
                continue
            if status.proc is not None and status.proc.poll() is not None and not self._stopping.is_set():
                self._exited(status, now)

    def stop(self) -> None:
        """SIGTERM in reverse start order, then SIGKILL what outlives the timeout."""
        self._stopping.set()
        procs = [s for s in reversed(self.units.values()) if s.proc is not None and s.proc.poll() is None]
        for status in procs:
            self._signal(status, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for status in procs:
            assert status.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                status.proc.wait(max(0.1, deadline - time.monotonic()))
        for status in procs:
            # The group may hold children (Flink's JVM) that outlived the leader.
            self._signal(status, signal.SIGKILL)
            assert status.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                status.proc.wait(10)
            self._set(status, UnitState.STOPPED)
        for status in self.units.values():
            status.log.close()

    # -- one unit ----------------------------------------------------------

    def _spawn(self, status: UnitStatus) -> None:
        unit = status.unit
        status.log.write(f"--- citylake run: starting {unit.name}: {' '.join(unit.argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                unit.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **unit.env},
                start_new_session=True,
            )
        except OSError as exc:
            status.log.write(f"--- cannot start: {exc}\n".encode())
            self._exited(status, self.clock(), code=None)
            return
        assert proc.stdout is not None
        status.log.pump(proc.stdout)
        status.proc = proc
        status.started_at = self.clock()
        self._set(status, UnitState.STARTING if unit.health_url else UnitState.HEALTHY)

    def _exited(self, status: UnitStatus, now: float, code: int | None = -1) -> None:
        if status.proc is not None:
            code = status.proc.returncode
            self._signal(status, signal.SIGKILL)  # what it left behind in its group
        status.last_exit = code
        stable = status.started_at and now - status.started_at >= self.settings.stable_after_s
        if stable or not status.backoff_s:
            status.backoff_s = self.settings.restart_initial_s
        else:
            status.backoff_s = min(status.backoff_s * 2, self.settings.restart_max_s)
        status.next_start = now + status.backoff_s
        log.warning(
            "%s exited with %s; restarting in %.0f s (log %s)",
            status.unit.name,
            code,
            status.backoff_s,
            status.log.path,
        )
        self._set(status, UnitState.BACKOFF)

    def _signal(self, status: UnitStatus, sig: int) -> None:
        if status.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(status.proc.pid, sig)

    def _set(
        self, status: UnitStatus, state: UnitState, only_from: tuple[UnitState, ...] | None = None
    ) -> None:
        with self._lock:
            old = status.state
            if only_from is not None and old not in only_from:
                return
            status.state = state
        if old is not state and self.on_change is not None:
            self.on_change(status.unit.name, old, state)

    # -- health ------------------------------------------------------------

    def _probe_loop(self, interval_s: float = 2.0) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._stopping.wait(interval_s):
                for status in list(self.units.values()):
                    url = status.unit.health_url
                    if url is None or status.state not in _RUNNING:
                        continue
                    try:
                        ok = client.get(url).status_code in (200, 204)
                    except httpx.HTTPError:
                        ok = False
                    if self._stopping.is_set():
                        return
                    # Only a running unit's health moves: an exit noticed
                    # meanwhile (backoff) wins over this probe's answer.
                    if ok:
                        self._set(status, UnitState.HEALTHY, only_from=_RUNNING)
                    else:
                        self._set(status, UnitState.UNHEALTHY, only_from=(UnitState.HEALTHY,))

    def healthy(self) -> bool:
        return all(s.state is UnitState.HEALTHY for s in self.units.values())

    def health(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            units = {name: s.as_dict(now) for name, s in self.units.items()}
        return {
            "site": self.plan.site,
            "healthy": all(u["state"] == UnitState.HEALTHY for u in units.values()),
            "units": units,
            "endpoints": dict(self.plan.endpoints),
        }
