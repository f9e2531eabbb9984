"""The jobs citylake knows, by name. A job is a module with INPUTS, OUTPUTS and
``transform(t_env, config) -> {lake table: Table}``: the config is there for
what a job's SQL depends on (the alert rules, the sources' protocols), read
when the job is planned.

``JOB_NAMES`` are the built-in jobs; with the data engineers' own jobs of a
config (pipelines/user_jobs.py) they make the one list of jobs
(pipelines/catalog.py) the CLI, the site and the scale run read."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from citylake.schemas import TableSpec, table

if TYPE_CHECKING:
    from pyflink.table import Table, TableEnvironment

    from citylake.config import CityConfig

JOB_NAMES = ("readings", "rollups", "alerts", "devices", "events")


class PlannedJob(Protocol):
    """What the runner plans: a built-in ``Job`` or a user job."""

    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> list[TableSpec]: ...

    @property
    def outputs(self) -> list[TableSpec]: ...

    def transform(self, t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]: ...


@dataclass(frozen=True)
class Job:
    name: str
    module: ModuleType

    @property
    def inputs(self) -> list[TableSpec]:
        return [table(n) for n in self.module.INPUTS]

    @property
    def outputs(self) -> list[TableSpec]:
        return [table(n) for n in self.module.OUTPUTS]

    def transform(self, t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
        result: dict[str, Table] = self.module.transform(t_env, config)
        return result


def job(name: str) -> Job:
    if name not in JOB_NAMES:
        raise KeyError(f"unknown job {name!r}; known jobs: {', '.join(JOB_NAMES)}")
    return Job(name, importlib.import_module(f"citylake.pipelines.{name}.job"))


# The state directory (checkpoints/<key>/, savepoints/<key>/) of a combined run.
COMBINED_KEY = "combined"


@dataclass(frozen=True)
class JobSet:
    """Jobs planned into ONE Flink job (one StatementSet, one mini-cluster):
    landing tables read by several jobs are scanned once and the shared
    ``readings_deduped`` view is deduplicated once (Flink reuses equal
    sub-plans), so rollups and alerts no longer re-read and re-dedupe landing
    readings beside the readings job. A set of one is the job itself, with
    the job's own state directory."""

    names: tuple[str, ...]
    # The user jobs a name may also be (pipelines/catalog.py); built-in only without.
    user: Mapping[str, PlannedJob] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a job set needs at least one job")
        for name in self.names:
            if name not in self.user and name not in JOB_NAMES:
                known = ", ".join([*JOB_NAMES, *sorted(self.user)])
                raise KeyError(f"unknown job {name!r}; known jobs: {known}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"a job appears twice in {', '.join(self.names)}")

    @classmethod
    def of(cls, names: Sequence[str] | str, user: Mapping[str, PlannedJob] | None = None) -> JobSet:
        """In the one order of JOB_NAMES (user jobs after, by name), so a set
        names the same plan however it is listed."""
        wanted = (names,) if isinstance(names, str) else tuple(names)
        order = {n: i for i, n in enumerate(JOB_NAMES)}
        return cls(tuple(sorted(wanted, key=lambda n: (order.get(n, len(order)), n))), dict(user or {}))

    @property
    def key(self) -> str:
        return self.names[0] if len(self.names) == 1 else COMBINED_KEY

    @property
    def jobs(self) -> list[PlannedJob]:
        return [self.user[n] if n in self.user else job(n) for n in self.names]

    @property
    def inputs(self) -> list[TableSpec]:
        seen: dict[str, TableSpec] = {}
        for j in self.jobs:
            for spec in j.inputs:
                seen.setdefault(spec.name, spec)
        return list(seen.values())

    @property
    def outputs(self) -> list[TableSpec]:
        return [spec for j in self.jobs for spec in j.outputs]
