"""The one list of jobs: the built-in ones and a config's own.

``citylake pipeline run|submit|jobs``, the site's units and the scale run all
take their job names from here, so a job is spelled once. What can be told
without Flink is told here (a name shadowing a built-in job or table, an input
that is not a landing table, a SQL file that is not there), each problem with
the file and line it comes from; pipelines/check.py plans the job in Flink.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from citylake.config import CityConfig, ConfigDocument, UserJobConfig
from citylake.pipelines.jobs import JOB_NAMES, JobSet, PlannedJob, job
from citylake.pipelines.user_jobs import UserJob, entry_point_jobs
from citylake.schemas import TABLES

# The tables ingest lands, which jobs read as ``landing_<table>``: the inputs
# of the built-in jobs (a unit test holds the two lists together).
LANDING_TABLES = ("readings", "device_events", "devices", "rejected")


@dataclass(frozen=True)
class JobProblem:
    """One reason a job is refused, where it comes from."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class JobRefused(ValueError):
    """A job that is not run or submitted; ``str()`` lists every problem."""

    def __init__(self, job_name: str, problems: list[JobProblem]) -> None:
        self.job_name = job_name
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"job {job_name} refused:\n{lines}")


@dataclass(frozen=True)
class JobCatalog:
    """Every job a config can run, by name: built-in first, then user jobs."""

    user: dict[str, UserJob]

    @property
    def names(self) -> tuple[str, ...]:
        return (*JOB_NAMES, *sorted(self.user))

    def get(self, name: str) -> PlannedJob:
        if name in self.user:
            return self.user[name]
        return job(name)  # KeyError naming the built-in jobs otherwise

    def job_set(self, names: list[str] | tuple[str, ...] | str) -> JobSet:
        """Raises KeyError (unknown name, listing the known) or ValueError."""
        return JobSet.of(names, dict(self.user))

    def describe(self, name: str) -> str:
        if name in self.user:
            entry = self.user[name]
            what = f"sql {entry.config.sql}" if entry.config.sql else f"module {entry.config.module}"
            return f"user job ({what}) -> {', '.join(entry.config.outputs)}"
        module = job(name).module
        return f"built-in -> {', '.join(module.OUTPUTS)}"


def _line(document: ConfigDocument | None, *loc: str | int) -> int | None:
    return document.line_of(("pipelines", "user_jobs", *loc)) if document is not None else None


def static_problems(
    name: str, config: UserJobConfig, declared_in: str, document: ConfigDocument | None
) -> list[JobProblem]:
    """What is wrong with a user job before Flink sees it."""
    problems = []
    if name in JOB_NAMES:
        problems.append(
            JobProblem(
                declared_in,
                _line(document, name),
                f"job name {name!r} is a built-in job's; a user job needs a name of its own "
                f"(built-in: {', '.join(JOB_NAMES)})",
            )
        )
    for output in config.outputs:
        if output in TABLES:
            problems.append(
                JobProblem(
                    declared_in,
                    _line(document, name, "outputs", output),
                    f"output {output!r} is a built-in table; a user job writes a table of its own "
                    f"(built-in: {', '.join(TABLES)})",
                )
            )
    for index, source in enumerate(config.inputs):
        if source not in LANDING_TABLES:
            problems.append(
                JobProblem(
                    declared_in,
                    _line(document, name, "inputs", index),
                    f"input {source!r} is not a landing table; inputs: {', '.join(LANDING_TABLES)} "
                    "(read as landing_<input>; readings also as readings_deduped); a lake table is "
                    "read through `lake_inputs`, in batch mode",
                )
            )
    if config.sql is not None and not config.sql.is_file():
        line = _line(document, name, "sql")
        problems.append(JobProblem(declared_in, line, f"sql file {config.sql} not found"))
    if config.path is not None and not config.path.is_dir():
        problems.append(
            JobProblem(declared_in, _line(document, name, "path"), f"path {config.path} is not a directory")
        )
    return problems


def job_catalog(
    config: CityConfig,
    config_path: Path | str = "city.yaml",
    document: ConfigDocument | None = None,
    entry_points: bool = True,
) -> JobCatalog:
    """The jobs of ``config``; raises ``JobRefused`` for a user job that cannot be."""
    user: dict[str, UserJob] = {}
    refused: list[JobProblem] = []
    refused_names: list[str] = []
    declared = [(n, c, str(config_path)) for n, c in config.pipelines.user_jobs.items()]
    if entry_points:
        for name, module_name, spec in entry_point_jobs():
            where = f"entry point {name} ({module_name})"
            if name in config.pipelines.user_jobs:
                refused.append(JobProblem(where, None, f"job {name!r} is also declared in {config_path}"))
                refused_names.append(name)
                continue
            try:
                job_config = UserJobConfig.model_validate({**dict(spec or {}), "module": module_name})  # type: ignore[call-overload]
            except (ValidationError, TypeError) as exc:
                refused.append(JobProblem(where, None, f"its JOB is not a job declaration: {exc}"))
                refused_names.append(name)
                continue
            declared.append((name, job_config, where))
    for name, job_config, where in declared:
        problems = static_problems(name, job_config, where, document if where == str(config_path) else None)
        if problems:
            refused.extend(problems)
            refused_names.append(name)
        else:
            user[name] = UserJob(name, job_config, where)
    if refused:
        raise JobRefused(", ".join(refused_names), refused)
    return JobCatalog(user)


def builtin_catalog() -> JobCatalog:
    return JobCatalog({})
