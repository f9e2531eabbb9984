"""The jobs citylake knows, by name. A job is a module with INPUTS, OUTPUTS and
``transform(t_env, config) -> {lake table: Table}``: the config is there for
what a job's SQL depends on (the alert rules, the sources' protocols), read
when the job is planned."""

from __future__ import annotations

import importlib
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
