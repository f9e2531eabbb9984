"""The loop that keeps a streaming alerts job on its rules: when it re-plans,
what it keeps when the source fails, and which state a restart resumes from.
(The loop around a real Flink job: tests/integration/test_alert_rules_live.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from citylake.config import AlertRule, CityConfig
from citylake.pipelines.alerts import follow
from citylake.pipelines.alerts.rulesource import RulesUnavailable
from citylake.pipelines.gateway import ensure_live_gateway

HOT = AlertRule(name="hot", metric="temp", above=90)
COLD = AlertRule(name="cold", metric="temp", below=0)


class Answers:
    """A rule source answering from a script: rules, or an error."""

    def __init__(self, *answers: tuple[AlertRule, ...] | Exception) -> None:
        self.answers = list(answers)

    def describe(self) -> str:
        return "scripted"

    def rules(self) -> tuple[AlertRule, ...]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Running:
    """What _changed_rules asks of a Flink job client: its status."""

    def __init__(self, status: Any) -> None:
        self.status = status

    def get_job_status(self) -> Any:
        status = self.status

        class Done:
            def result(self) -> Any:
                return status

        return Done()


@pytest.fixture(autouse=True)
def live_gateway() -> None:
    """These tests talk to PyFlink's gateway JVM, which pyflink caches per
    process: an earlier test in the same session may have left it dead (a
    killed mini-cluster). Start a fresh one then."""
    ensure_live_gateway()


def test_the_job_is_re_planned_only_when_the_rules_differ(caplog: pytest.LogCaptureFixture) -> None:
    from pyflink.common import JobStatus

    source = Answers((HOT,), RulesUnavailable("service down"), RulesUnavailable("still down"), (HOT, COLD))
    sleeps: list[float] = []
    got = follow._changed_rules(None, Running(JobStatus.RUNNING), source, (HOT,), 0.5, sleeps.append)
    assert got == (HOT, COLD) and sleeps == [0.5] * 4
    # One warning per outage, not one per poll, and the running rules kept meanwhile.
    assert [r.message for r in caplog.records if r.levelname == "WARNING"] == [
        "keeping the 1 running alert rules: service down"
    ]


def test_a_job_that_ended_by_itself_is_not_followed() -> None:
    from pyflink.common import JobStatus

    with pytest.raises(RuntimeError, match="ended by itself"):
        follow._changed_rules(None, Running(JobStatus.CANCELED), Answers(), (HOT,), 0.5, lambda _: None)


def test_the_first_rules_are_waited_for() -> None:
    sleeps: list[float] = []
    source = Answers(RulesUnavailable("not yet"), RulesUnavailable("not yet"), ())
    assert follow.first_rules(source, 1.0, sleeps.append) == ()
    assert sleeps == [1.0, 2.0]


def _state(path: Path, mtime: float) -> Path:
    path.mkdir(parents=True)
    (path / "_metadata").write_bytes(b"x")
    os.utime(path / "_metadata", (mtime, mtime))
    return path


def test_a_restart_resumes_from_the_newest_savepoint_or_checkpoint(tmp_path: Path) -> None:
    config = CityConfig(site="s", data_dir=tmp_path)
    assert follow.newest_state(config) is None
    checkpoint = _state(tmp_path / "checkpoints" / "alerts" / "job1" / "chk-7", 1000)
    savepoint = _state(tmp_path / "savepoints" / "alerts" / "savepoint-1", 2000)
    assert follow.newest_state(config) == savepoint
    os.utime(checkpoint / "_metadata", (3000, 3000))
    assert follow.newest_state(config) == checkpoint


def test_only_the_newest_savepoints_are_kept(tmp_path: Path) -> None:
    for i in range(5):
        _state(tmp_path / f"savepoint-{i}", 1000 + i)
    follow._prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["savepoint-3", "savepoint-4"]
