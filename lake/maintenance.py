"""Lake maintenance on a schedule: what ``citylake lake maintain`` runs.

Each job is a small task object (``MaintenanceTask``: a name, an interval, a
``run``); ``MaintenanceScheduler`` runs whichever is due, one at a time, so
two tasks of one site never contend for a table's writer lock or the node's
cores. A task reports one ``Action`` per table it touched; the scheduler
hands each to ``on_action`` (the CLI prints them as JSON lines) and keeps the
counts ``/healthz`` and ``/metrics`` show.

Stopping is safe at any moment: every change a task makes is one log commit
(lake/manifest.py), and a task asks ``should_stop`` between commits, so a
SIGTERM mid-cycle ends the process after the commit under way, never between
a file and the commit that names it. A kill -9 leaves at worst an uncommitted
file, which vacuum deletes.

Landing collection (``lake/landing_gc.py``, being written) is a task like
these: wrap ``collect_landing`` in a class with ``name``, ``every_s`` and
``run`` and pass it to ``build_tasks(..., extra=[...])``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from citylake.config import LakeConfig
from citylake.lake.compaction import compact_table
from citylake.lake.registry import lake_tables
from citylake.lake.retention import retain_table, vacuum_table
from citylake.schemas import DataLayout, TableSpec

log = logging.getLogger(__name__)

ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Action:
    """One thing a task did to one table (or tried to: ``error`` set)."""

    task: str
    table: str
    counts: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "task": self.task,
            "table": self.table,
            "duration_s": round(self.duration_s, 3),
            **self.counts,
        }
        if self.error is not None:
            record["error"] = self.error
        return record


class MaintenanceTask(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def every_s(self) -> float:
        """Seconds from the end of one round to the start of the next."""
        ...

    def run(self, should_stop: ShouldStop) -> Iterable[Action]:
        """Do one round; yield an ``Action`` per table as each finishes."""
        ...


def _timed(task: str, spec: TableSpec, work: Callable[[], dict[str, int]]) -> Action:
    started = time.monotonic()
    try:
        counts = work()
    except Exception as exc:  # one table's failure must not stop the others
        log.exception("%s of %s failed", task, spec.name)
        return Action(
            task, spec.name, duration_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"
        )
    return Action(task, spec.name, counts, time.monotonic() - started)


@dataclass(frozen=True)
class CompactTask:
    layout: DataLayout
    specs: Sequence[TableSpec]
    every_s: float
    target_bytes: int
    min_files: int
    max_groups: int
    memory_mb: int | None = None
    name: str = "compact"

    def run(self, should_stop: ShouldStop) -> Iterable[Action]:
        for spec in self.specs:
            if should_stop():
                return

            def work(spec: TableSpec = spec) -> dict[str, int]:
                r = compact_table(
                    self.layout,
                    spec,
                    target_bytes=self.target_bytes,
                    min_files=self.min_files,
                    max_groups=self.max_groups,
                    should_stop=should_stop,
                    memory_mb=self.memory_mb,
                )
                return {
                    "files_in": r.files_in,
                    "files_out": r.files_out,
                    "rows": r.rows,
                    "bytes_in": r.bytes_in,
                }

            yield _timed(self.name, spec, work)


@dataclass(frozen=True)
class RetainTask:
    layout: DataLayout
    keep_days: dict[str, int]
    every_s: float
    name: str = "retain"

    def run(self, should_stop: ShouldStop) -> Iterable[Action]:
        for table, days in sorted(self.keep_days.items()):
            if should_stop():
                return
            spec = lake_tables(self.layout)[table]

            def work(spec: TableSpec = spec, days: int = days) -> dict[str, int]:
                r = retain_table(self.layout, spec, days)
                return {"files_retired": r.files_removed}

            yield _timed(self.name, spec, work)


@dataclass(frozen=True)
class VacuumTask:
    layout: DataLayout
    specs: Sequence[TableSpec]
    every_s: float
    grace: timedelta
    name: str = "vacuum"

    def run(self, should_stop: ShouldStop) -> Iterable[Action]:
        for spec in self.specs:
            if should_stop():
                return

            def work(spec: TableSpec = spec) -> dict[str, int]:
                r = vacuum_table(self.layout, spec, self.grace)
                return {"files_deleted": r.files_deleted, "bytes_deleted": r.bytes_deleted}

            yield _timed(self.name, spec, work)


class ConfigProblem(ValueError):
    """The lake's maintenance config names something that does not exist."""


def build_tasks(
    layout: DataLayout, lake: LakeConfig, extra: Sequence[MaintenanceTask] = ()
) -> list[MaintenanceTask]:
    """The tasks ``lake.maintenance`` asks for, plus ``extra`` (landing
    collection goes here). Raises ``ConfigProblem`` naming unknown tables."""
    schedule = lake.maintenance
    tables = lake_tables(layout)
    unknown = sorted((set(schedule.tables) | set(lake.retention_days)) - set(tables))
    if unknown:
        raise ConfigProblem(
            f"lake.maintenance.tables or lake.retention_days name unknown tables {', '.join(unknown)}; "
            f"tables: {', '.join(tables)} (a user job's table is known once the job has run)"
        )
    specs = [tables[n] for n in schedule.tables] if schedule.tables else list(tables.values())
    tasks: list[MaintenanceTask] = [
        CompactTask(
            layout,
            specs,
            schedule.compact_every_s,
            target_bytes=lake.compact_target_mb * 1024 * 1024,
            min_files=lake.compact_min_files,
            max_groups=schedule.compact_max_groups,
            memory_mb=lake.compact_memory_mb,
        ),
        VacuumTask(layout, specs, schedule.vacuum_every_s, timedelta(seconds=lake.vacuum_grace_s)),
    ]
    if lake.retention_days:
        tasks.append(RetainTask(layout, dict(lake.retention_days), schedule.retain_every_s))
    tasks.extend(extra)
    return tasks


@dataclass
class TaskStatus:
    every_s: float
    rounds: int = 0
    failures: int = 0
    last_started: float | None = None  # monotonic
    last_ok: float | None = None  # monotonic, a round with no failed action
    last_error: str | None = None
    totals: dict[str, int] = field(default_factory=dict)


class MaintenanceScheduler:
    """Runs each task every ``every_s`` (all once at start), one at a time,
    until ``stop`` is set."""

    def __init__(
        self,
        tasks: Sequence[MaintenanceTask],
        on_action: Callable[[Action], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"maintenance task names must be unique: {names}")
        self.tasks = list(tasks)
        self.on_action = on_action
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self.status = {t.name: TaskStatus(t.every_s) for t in tasks}

    def run(self, stop: threading.Event) -> None:
        due = {t.name: self.clock() for t in self.tasks}
        while not stop.is_set():
            task = min(self.tasks, key=lambda t: due[t.name])
            wait = due[task.name] - self.clock()
            if wait > 0:
                stop.wait(wait)
                continue
            self.run_once(task, stop.is_set)
            # From the end of a round: a round longer than its interval is not
            # followed by another at once, starving the other tasks.
            due[task.name] = self.clock() + task.every_s

    def run_once(self, task: MaintenanceTask, should_stop: ShouldStop) -> None:
        status = self.status[task.name]
        with self._lock:
            status.last_started = self.clock()
        failed = None
        try:
            for action in task.run(should_stop):
                if action.error is not None:
                    failed = f"{action.table}: {action.error}"
                with self._lock:
                    for key, value in action.counts.items():
                        status.totals[key] = status.totals.get(key, 0) + value
                self.on_action(action)
        except Exception as exc:  # a task's own bug: reported, retried next round
            log.exception("maintenance task %s failed", task.name)
            failed = f"{type(exc).__name__}: {exc}"
            self.on_action(Action(task.name, "*", error=failed))
        with self._lock:
            status.rounds += 1
            if failed is None:
                status.last_ok = self.clock()
                status.last_error = None
            else:
                status.failures += 1
                status.last_error = failed

    def health(self) -> dict[str, object]:
        """``ok`` while every task's last round succeeded and none is overdue
        (no success for three intervals, counted from start)."""
        now = self.clock()
        tasks: dict[str, object] = {}
        ok = True
        with self._lock:
            for name, s in self.status.items():
                since = s.last_ok if s.last_ok is not None else self.started
                overdue = now - since > 3 * s.every_s + 60
                healthy = s.last_error is None and not overdue
                ok = ok and healthy
                tasks[name] = {
                    "status": "ok" if healthy else ("overdue" if overdue else "failing"),
                    "every_s": s.every_s,
                    "rounds": s.rounds,
                    "failures": s.failures,
                    "seconds_since_ok": None if s.last_ok is None else round(now - s.last_ok, 1),
                    "last_error": s.last_error,
                    "totals": dict(s.totals),
                }
        return {"status": "ok" if ok else "degraded", "tasks": tasks}
