"""The maintenance scheduler: tasks run on their intervals, one at a time, a
failure is reported and retried without stopping the others, and a stop
request is honoured between commits. (The real tasks against a real Flink
lake: tests/integration/test_lake_consistency.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from citylake.config import LakeConfig
from citylake.lake.maintenance import Action, ConfigProblem, MaintenanceScheduler, ShouldStop, build_tasks
from citylake.schemas import DataLayout


@dataclass
class CountingTask:
    name: str
    every_s: float
    tables: int = 1
    fail: bool = False
    rounds: int = 0
    running: list[str] = field(default_factory=list)

    def run(self, should_stop: ShouldStop) -> Iterable[Action]:
        self.rounds += 1
        for n in range(self.tables):
            if should_stop():
                return
            self.running.append(self.name)
            time.sleep(0.02)
            self.running.remove(self.name)
            if self.fail:
                yield Action(self.name, f"t{n}", error="RuntimeError: disk on fire")
            else:
                yield Action(self.name, f"t{n}", {"files": 1})


def run_for(scheduler: MaintenanceScheduler, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_tasks_run_at_start_and_then_on_their_intervals() -> None:
    fast, slow = CountingTask("fast", 0.1), CountingTask("slow", 10)
    actions: list[Action] = []
    scheduler = MaintenanceScheduler([fast, slow], on_action=actions.append)
    run_for(scheduler, 1.0)
    assert slow.rounds == 1 and 5 <= fast.rounds <= 11, (fast.rounds, slow.rounds)
    assert scheduler.status["fast"].totals == {"files": fast.rounds}
    assert {a.task for a in actions} == {"fast", "slow"}
    assert scheduler.health()["status"] == "ok"


def test_a_failing_task_is_reported_and_the_others_keep_running() -> None:
    broken, fine = CountingTask("broken", 0.1, fail=True), CountingTask("fine", 0.1)
    records: list[dict[str, object]] = []
    scheduler = MaintenanceScheduler([broken, fine], on_action=lambda a: records.append(a.as_record()))
    run_for(scheduler, 0.6)
    assert broken.rounds >= 2 and fine.rounds >= 2
    health = scheduler.health()
    assert health["status"] == "degraded"
    tasks = health["tasks"]
    assert isinstance(tasks, dict)
    assert tasks["broken"]["status"] == "failing" and "disk on fire" in tasks["broken"]["last_error"]
    assert tasks["fine"]["status"] == "ok"
    assert any(r.get("error") == "RuntimeError: disk on fire" for r in records)


def test_stop_is_honoured_between_tables_and_tasks_never_overlap() -> None:
    many = CountingTask("many", 100, tables=1000)
    other = CountingTask("other", 100)
    scheduler = MaintenanceScheduler([many, other])
    started = time.monotonic()
    run_for(scheduler, 0.3)
    # 1000 tables of 20 ms would take 20 s; the stop came after 0.3 s.
    assert time.monotonic() - started < 3
    assert not many.running and not other.running


def test_unknown_tables_in_the_config_are_named(tmp_path: Path) -> None:
    lake = LakeConfig.model_validate({"maintenance": {"tables": ["readings", "nope"]}})
    with pytest.raises(ConfigProblem, match="unknown tables nope"):
        build_tasks(DataLayout(tmp_path), lake)
    lake = LakeConfig.model_validate({"retention_days": {"readings": 7}})
    assert [t.name for t in build_tasks(DataLayout(tmp_path), lake)] == ["compact", "vacuum", "retain"]


def test_schedule_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="compact_every_s"):
        LakeConfig.model_validate({"maintenance": {"compact_every_s": 0}})
    with pytest.raises(ValueError, match="extra"):
        LakeConfig.model_validate({"maintenance": {"compact_evry_s": 5}})
