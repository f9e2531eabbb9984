"""The jobs citylake knows, by name. A job is a module with INPUTS, OUTPUTS and
``transform(t_env, config) -> {lake table: Table}``: the config is there for
what a job's SQL depends on (the alert rules, the sources' protocols), read
when the job is planned."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from citylake.schemas import TableSpec, table

JOB_NAMES = ("readings", "rollups", "alerts", "devices", "events")


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

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a job set needs at least one job")
        for name in self.names:
            job(name)  # a wrong name fails here, with the known ones
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"a job appears twice in {', '.join(self.names)}")

    @classmethod
    def of(cls, names: Sequence[str] | str) -> JobSet:
        """In the one order of JOB_NAMES, so a set names the same plan however it is listed."""
        wanted = (names,) if isinstance(names, str) else tuple(names)
        return cls(tuple(sorted(wanted, key=lambda n: JOB_NAMES.index(n) if n in JOB_NAMES else -1)))

    @property
    def key(self) -> str:
        return self.names[0] if len(self.names) == 1 else COMBINED_KEY

    @property
    def jobs(self) -> list[Job]:
        return [job(n) for n in self.names]

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
