"""What analyst SQL may do: read the lake, nothing else.

Two locks, each enough on its own for the common attacks, together for the
rest:

1. The statement, as DuckDB's own parser reads it (no keyword matching, so no
   comment, quoting or casing trick gets a second meaning past it), must be
   exactly one SELECT (``WITH``, ``FROM``-first, ``DESCRIBE``, ``SHOW`` and
   ``SUMMARIZE`` parse as SELECT too); and every table function it calls,
   however deeply nested, must be on a short list of readers. Table functions
   are the one way a SELECT can act: ``checkpoint()``, DuckLake's maintenance
   functions, or ``query('...')`` running a string this check never saw.
2. The database itself, once the lake's views exist: external access off
   (no file, URL, ATTACH, INSTALL or LOAD outside ``allowed_directories``),
   the lake's directory the only one allowed, extensions never auto-installed
   or auto-loaded, no Python variables as tables, a memory limit, a thread
   count, spill to a bounded directory of its own, and the configuration locked so no later
   statement can undo any of it.

The lock is global to the service's lake database, so the typed routes run
under it too; they only read lake files, which it allows. Anything ``Lake``
does after it is built must therefore need no SET, LOAD or INSTALL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson

from citylake.lake import SERVICE_REFRESH_S, Lake
from citylake.schemas import DataLayout
from citylake.services.lakeaccess import LakeOnDemand
from citylake.services.query.errors import bad_request

# Readers only. Everything outside this list is refused by name, so a table
# function added by a future DuckDB or extension is closed until someone looks.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "glob",
        "json_each",
        "json_tree",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
    }
)
# DuckDB's catalog introspection (duckdb_tables(), duckdb_columns(), ...).
ALLOWED_TABLE_FUNCTION_PREFIX = "duckdb_"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def lake_directories(layout: DataLayout) -> list[str]:
    """The lake root as DuckDB may be handed it: as given and fully resolved."""
    roots = {layout.lake_root.absolute(), layout.lake_root.resolve()}
    return sorted(f"{root}/" for root in roots)


@dataclass(frozen=True)
class Limits:
    """What one locked-down database may use. ``temp_dir`` is its own
    (DuckDB deletes a temp directory's files when it closes); ``temp_max_mb``
    0 turns spilling off."""

    memory_limit_mb: int
    threads: int = 1
    temp_dir: Path | None = None
    temp_max_mb: int = 0


def lock_down(lake: Lake, layout: DataLayout, limits: Limits) -> None:
    """Locks the lake's database to reading ``layout``'s lake; irreversible."""
    directories = ", ".join(_sql_string(d) for d in lake_directories(layout))
    if limits.temp_dir is not None and limits.temp_max_mb > 0:
        limits.temp_dir.mkdir(parents=True, exist_ok=True)
        spill = [
            f"SET GLOBAL temp_directory = {_sql_string(str(limits.temp_dir))}",
            f"SET GLOBAL max_temp_directory_size = '{int(limits.temp_max_mb)}MiB'",
        ]
    else:
        # Otherwise DuckDB spills to <cwd>/.tmp, up to 90 % of that disk.
        spill = ["SET GLOBAL temp_directory = ''"]
    cursor = lake.cursor()
    try:
        for statement in (
            f"SET GLOBAL memory_limit = '{int(limits.memory_limit_mb)}MiB'",
            f"SET GLOBAL threads = {int(limits.threads)}",
            *spill,
            "SET GLOBAL python_enable_replacements = false",
            "SET GLOBAL autoinstall_known_extensions = false",
            "SET GLOBAL autoload_known_extensions = false",
            # Before external access goes off: afterwards the list is frozen.
            f"SET GLOBAL allowed_directories = [{directories}]",
            "SET GLOBAL enable_external_access = false",
            "SET GLOBAL lock_configuration = true",
        ):
            cursor.execute(statement)
    finally:
        cursor.close()


class SandboxedLake(LakeOnDemand):
    """The service's ``Lake``, locked down by ``lock_down`` before it serves,
    opened on first use (see ``LakeOnDemand`` for why)."""

    def __init__(self, layout: DataLayout, limits: Limits) -> None:
        self.limits = limits
        super().__init__(
            layout,
            min_refresh_s=SERVICE_REFRESH_S,
            prepare=lambda lake: lock_down(lake, layout, limits),
        )


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _references(tree: object) -> tuple[list[str], list[list[str]]]:
    """Names of every table function, and every table reference as its
    catalog, schema and table parts, in a serialized statement. Iterative: a
    deeply nested query must not exhaust Python's stack."""
    functions = []
    tables = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "TABLE_FUNCTION":
                function = node.get("function") or {}
                functions.append(str(function.get("function_name", "")).lower())
            elif node.get("type") == "BASE_TABLE":
                parts = [str(node.get(key) or "") for key in ("catalog_name", "schema_name", "table_name")]
                tables.append([part for part in parts if part])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return functions, tables


def _check_tables(cursor: duckdb.DuckDBPyConnection, tables: list[list[str]]) -> None:
    """Refuses any table reference DuckDB could turn into a file read."""
    known: set[str] | None = None
    for parts in tables:
        name = ".".join(parts)
        if not parts or not all(_PLAIN_NAME.fullmatch(part) for part in parts):
            raise bad_request(
                f"{name!r} is not a table name: files are not read by naming them as tables; "
                "query a lake table (readings, devices, ...) or read lake Parquet with read_parquet('...')"
            )
        if len(parts) > 1:
            if known is None:
                rows = cursor.execute("SELECT schema_name, database_name FROM duckdb_schemas()").fetchall()
                known = {str(n).lower() for row in rows for n in row}
            unknown = [part for part in parts[:-1] if part.lower() not in known]
            if unknown:
                raise bad_request(
                    f"{name!r}: there is no schema or database {unknown[0]!r} "
                    "(x.csv-style names are refused: they would read a file)"
                )


def check_statement(cursor: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The one SELECT in ``sql``, or a 400 saying why not."""
    try:
        statements = cursor.extract_statements(sql)
    except duckdb.Error as exc:
        raise bad_request(str(exc)) from None
    if len(statements) != 1:
        raise bad_request(f"expected exactly one SQL statement, got {len(statements)}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:  # pybind11 enums: equal, not identical
        raise bad_request(
            f"only SELECT statements are allowed (the lake is read-only here); got {statement.type.name}"
        )
    try:
        serialized = cursor.execute("SELECT json_serialize_sql($sql)", {"sql": statement.query}).fetchone()
        tree = orjson.loads(serialized[0]) if serialized else {"error": True}
    except (duckdb.Error, orjson.JSONDecodeError) as exc:
        raise bad_request(f"the statement cannot be checked: {exc}") from None
    if tree.get("error"):
        raise bad_request(f"the statement cannot be checked: {tree.get('error_message', 'unknown form')}")
    functions, tables = _references(tree)
    refused = sorted(
        {
            name
            for name in functions
            if name not in ALLOWED_TABLE_FUNCTIONS and not name.startswith(ALLOWED_TABLE_FUNCTION_PREFIX)
        }
    )
    if refused:
        raise bad_request(
            f"table function {', '.join(refused)} is not allowed here; allowed: "
            f"{', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}, duckdb_*()"
        )
    _check_tables(cursor, tables)
    return statement
