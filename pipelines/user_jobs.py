"""Data engineers' own jobs: a SQL file or a Python module outside citylake.

A user job is planned like a built-in one (the runner declares the same
``landing_<input>`` sources and ``lake_<output>`` sinks from the schemas, with
the same checkpoints, savepoints and resume), and its outputs are lake tables
registered in the lake's log (lake/registry.py). What a job's SELECT returns is
held to the columns its outputs declare, by name and type, and put in the
declared order (with the ``date`` partition computed from the time column), so
a job never writes a column into another's place.

Declared in ``city.yaml`` (``pipelines.user_jobs``) or by an installed
package's entry point in the group ``citylake.jobs``: the entry point names a
module with ``JOB`` (the same keys as in city.yaml, without ``module``) and
``transform(t_env, config)``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from citylake.config import UserJobConfig
from citylake.lake.registry import Registration
from citylake.pipelines.flink_types import flink_type
from citylake.schemas import PARTITION_COLUMN, TableSpec, table

if TYPE_CHECKING:
    from pyflink.table import Table, TableEnvironment

    from citylake.config import CityConfig

ENTRY_POINT_GROUP = "citylake.jobs"

# Flink type roots a declared column type accepts from the job's SELECT: the
# same kind of value, or a narrower one that converts without loss.
ACCEPTED_ROOTS: dict[str, frozenset[str]] = {
    "string": frozenset({"VARCHAR", "CHAR"}),
    "double": frozenset({"DOUBLE", "FLOAT", "DECIMAL", "BIGINT", "INTEGER", "SMALLINT", "TINYINT"}),
    "float": frozenset({"FLOAT", "INTEGER", "SMALLINT", "TINYINT"}),
    "bigint": frozenset({"BIGINT", "INTEGER", "SMALLINT", "TINYINT"}),
    "int": frozenset({"INTEGER", "SMALLINT", "TINYINT"}),
    "boolean": frozenset({"BOOLEAN"}),
    # Window bounds are TIMESTAMP(3); in the jobs' UTC session both are instants.
    "timestamp": frozenset({"TIMESTAMP_WITH_LOCAL_TIME_ZONE", "TIMESTAMP_WITHOUT_TIME_ZONE"}),
    "bytes": frozenset({"VARBINARY", "BINARY"}),
}


class OutputMismatch(ValueError):
    """What a job's SELECT returns is not what its output declares."""

    def __init__(self, output: str, column: str | None, reason: str) -> None:
        self.output = output
        self.column = column
        super().__init__(reason)


@dataclass(frozen=True)
class UserJob:
    name: str
    config: UserJobConfig
    # Where it was declared: city.yaml, or the entry point's module file.
    declared_in: str

    @property
    def inputs(self) -> list[TableSpec]:
        return [table(n) for n in self.config.inputs]

    @property
    def registrations(self) -> list[Registration]:
        return [Registration.declared(n, self.name, out) for n, out in self.config.outputs.items()]

    @property
    def outputs(self) -> list[TableSpec]:
        return [r.spec for r in self.registrations]

    @property
    def source_file(self) -> Path | None:
        """The file a problem in the job's code is reported against."""
        if self.config.sql is not None:
            return self.config.sql
        module = sys.modules.get(self.config.module or "")
        origin = getattr(module, "__file__", None)
        return Path(origin) if origin else None

    def sql_text(self) -> str:
        """The SELECT as Flink gets it: the file with a trailing ``;`` dropped,
        every line where it was, so Flink's line numbers are the file's."""
        assert self.config.sql is not None
        return self.config.sql.read_text("utf-8").rstrip().removesuffix(";")

    def module(self) -> ModuleType:
        assert self.config.module is not None
        if self.config.path is not None and str(self.config.path) not in sys.path:
            sys.path.insert(0, str(self.config.path))
        return importlib.import_module(self.config.module)

    def results(self, t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
        """The job's own tables, before they are held to the outputs."""
        if "readings" in self.config.inputs:
            # `readings_deduped`, as the built-in jobs read it (once per plan).
            from citylake.pipelines.readings.job import deduplicated

            deduplicated(t_env)
        if self.config.sql is not None:
            return {next(iter(self.config.outputs)): t_env.sql_query(self.sql_text())}
        made = self.module().transform(t_env, config)
        if not isinstance(made, dict) or set(made) != set(self.config.outputs):
            got = ", ".join(sorted(made)) if isinstance(made, dict) else type(made).__name__
            raise OutputMismatch(
                next(iter(self.config.outputs)),
                None,
                f"transform() returned {got}; it must return a dict of the declared outputs: "
                f"{', '.join(self.config.outputs)}",
            )
        return dict(made)

    def transform(self, t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
        return {
            name: conform(t_env, self.name, name, result, spec)
            for (name, result), spec in zip(
                sorted(self.results(t_env, config).items()),
                sorted(self.outputs, key=lambda s: s.name),
                strict=True,
            )
        }


def result_columns(result: Table) -> list[tuple[str, str]]:
    """(name, Flink type root) of each column, as Flink's planner resolved them."""
    schema = result._j_table.getResolvedSchema()
    names = list(schema.getColumnNames())
    types = list(schema.getColumnDataTypes())
    return [(str(n), str(t.getLogicalType().getTypeRoot().name())) for n, t in zip(names, types, strict=True)]


def check_columns(output: str, declared: dict[str, str], got: list[tuple[str, str]]) -> None:
    """Raise ``OutputMismatch`` naming the first column that differs."""
    by_name = dict(got)
    missing = [c for c in declared if c not in by_name]
    if missing:
        raise OutputMismatch(
            output,
            missing[0],
            f"output {output}: the SELECT has no column {', '.join(missing)} (it returns "
            f"{', '.join(n for n, _ in got)}); name each declared column with AS",
        )
    extra = [n for n, _ in got if n not in declared and n != PARTITION_COLUMN]
    if extra:
        raise OutputMismatch(
            output,
            extra[0],
            f"output {output}: the SELECT returns {', '.join(extra)}, which the output does not declare "
            f"(declared: {', '.join(declared)})",
        )
    for column, declared_type in declared.items():
        root = by_name[column]
        if root not in ACCEPTED_ROOTS[declared_type]:
            raise OutputMismatch(
                output,
                column,
                f"output {output}: column {column} is declared {declared_type} but the SELECT gives "
                f"{root}; CAST it, or declare the column as what it is",
            )


def conform(t_env: TableEnvironment, job_name: str, output: str, result: Table, spec: TableSpec) -> Table:
    """``result`` as the lake sink's columns: declared order and types, plus the
    partition date of the time column."""
    declared = {f.name: t for f, (_, t) in zip(spec.schema, _declared_types(spec), strict=True)}
    check_columns(output, declared, result_columns(result))
    view = f"user_{output}_result"
    t_env.create_temporary_view(view, result)
    columns = [f"CAST(`{f.name}` AS {flink_type(f.type)}) AS `{f.name}`" for f in spec.schema]
    if spec.time_column is not None:
        instant = f"CAST(`{spec.time_column}` AS TIMESTAMP_LTZ(3))"
        columns.append(f"DATE_FORMAT({instant}, 'yyyy-MM-dd') AS `{PARTITION_COLUMN}`")
    return t_env.sql_query(f"SELECT {', '.join(columns)} FROM `{view}`")


def _declared_types(spec: TableSpec) -> list[tuple[str, str]]:
    from citylake.lake.registry import ARROW_TYPES

    names = {dtype: name for name, dtype in ARROW_TYPES.items()}
    return [(f.name, names[f.type]) for f in spec.schema]


def entry_point_jobs() -> list[tuple[str, str, object]]:
    """(job name, module name, its ``JOB`` mapping) of each installed ``citylake.jobs`` entry point."""
    found = []
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = importlib.import_module(point.value.split(":", 1)[0])
        found.append((point.name, module.__name__, getattr(module, "JOB", None)))
    return found
