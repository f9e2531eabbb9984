"""Tables beyond the built-in ones: what data engineers' own jobs write.

A user job's output is registered in the lake's log before the job first
writes it: ``lake/_log/<table>/table.json`` holds its columns, types, time
column and the job that writes it. Everything that lists the lake's tables
(the DuckDB views of ``citylake sql`` and the query service, the stock DuckDB
CLI's init file, maintenance) reads ``lake_tables``: the built-in contract plus
what is registered here, so a user table is compacted, retained and queried
like the others. A registered table's columns never change: a job declaring
other columns for it is refused (``SchemaChanged``), so one table never holds
files of two schemas.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from citylake.config import OutputTableConfig
from citylake.lake.manifest import LOG_DIR
from citylake.schemas import TABLES, DataLayout, TableSpec

REGISTRATION_NAME = "table.json"

# The declared column types (config's ColumnType) as Arrow types: the one
# mapping from what city.yaml says to what Flink (flink_types) and DuckDB
# (catalog.duckdb_type) see.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "double": pa.float64(),
    "float": pa.float32(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
    "bytes": pa.binary(),
}


class SchemaChanged(ValueError):
    """A job declares other columns for a table the lake already holds."""


@dataclass(frozen=True)
class Registration:
    """A user table as its job declares it; ``columns`` in order."""

    table: str
    job: str
    columns: tuple[tuple[str, str], ...]
    required: tuple[str, ...]
    time_column: str | None
    description: str

    @classmethod
    def declared(cls, table: str, job: str, output: OutputTableConfig) -> Registration:
        return cls(
            table,
            job,
            tuple(output.columns.items()),
            tuple(sorted(output.required)),
            output.time_column,
            output.description,
        )

    @property
    def spec(self) -> TableSpec:
        required = set(self.required)
        fields = [pa.field(n, ARROW_TYPES[t], nullable=n not in required) for n, t in self.columns]
        description = self.description or f"written by the user job {self.job}"
        return TableSpec(self.table, pa.schema(fields), self.required, self.time_column, description)

    def layout_of(self) -> tuple[object, ...]:
        """What must stay the same between a table's registration and a job's
        declaration (the job's name and description may change)."""
        return (self.columns, self.required, self.time_column)

    def to_json(self) -> str:
        return json.dumps(
            {
                "table": self.table,
                "job": self.job,
                "columns": [{"name": n, "type": t} for n, t in self.columns],
                "required": list(self.required),
                "time_column": self.time_column,
                "description": self.description,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Registration:
        data = json.loads(text)
        return cls(
            data["table"],
            data["job"],
            tuple((c["name"], c["type"]) for c in data["columns"]),
            tuple(data["required"]),
            data["time_column"],
            data.get("description", ""),
        )


def _describe(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{n} {t}" for n, t in columns)


def registration_path(layout: DataLayout, table: str) -> Path:
    return layout.lake_root / LOG_DIR / table / REGISTRATION_NAME


def registered(layout: DataLayout, table: str) -> Registration | None:
    try:
        return Registration.from_json(registration_path(layout, table).read_text("utf-8"))
    except FileNotFoundError:
        return None


def check_registration(layout: DataLayout, declared: Registration) -> None:
    """Raise ``SchemaChanged`` if the lake holds ``declared.table`` with other columns."""
    if declared.table in TABLES:
        raise SchemaChanged(f"{declared.table!r} is a built-in citylake table; a user job writes its own")
    existing = registered(layout, declared.table)
    if existing is None or existing.layout_of() == declared.layout_of():
        return
    changes = []
    if existing.columns != declared.columns:
        changes.append(f"columns ({_describe(existing.columns)}) -> ({_describe(declared.columns)})")
    if existing.required != declared.required:
        changes.append(f"required {list(existing.required)} -> {list(declared.required)}")
    if existing.time_column != declared.time_column:
        changes.append(f"time_column {existing.time_column} -> {declared.time_column}")
    raise SchemaChanged(
        f"the lake table {declared.table!r} (written by job {existing.job}) has another schema than job "
        f"{declared.job} declares now: {'; '.join(changes)}. A table holds files of one schema only: "
        f"write the new schema to a new table (e.g. {declared.table}_v2 in the job's outputs), or, if "
        f"the old rows may go, delete {registration_path(layout, declared.table).parent} and "
        f"{layout.lake_root / declared.table} first"
    )


def register(layout: DataLayout, declared: Registration) -> None:
    """Record ``declared`` in the lake's log (once; the same again is a no-op)."""
    check_registration(layout, declared)
    path = registration_path(layout, declared.table)
    if path.exists():
        existing = registered(layout, declared.table)
        if existing == declared:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{uuid.uuid4().hex}.tmp")
    temporary.write_text(declared.to_json(), "utf-8")
    os.replace(temporary, path)


def registered_tables(layout: DataLayout) -> dict[str, TableSpec]:
    """Every user table the lake's log holds, by name."""
    root = layout.lake_root / LOG_DIR
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name not in TABLES)
    except FileNotFoundError:
        return {}
    found: dict[str, TableSpec] = {}
    for name in names:
        entry = registered(layout, name)
        if entry is not None:
            found[name] = entry.spec
    return found


def lake_tables(layout: DataLayout) -> Mapping[str, TableSpec]:
    """The built-in tables, then the user tables registered in this lake."""
    return {**TABLES, **registered_tables(layout)}
