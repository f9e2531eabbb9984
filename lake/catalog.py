"""The lake as DuckDB sees it: one view per table, named as analysts know them.

Each view reads one snapshot of its table (lake/manifest.py): an explicit list
of complete files, so a query never meets Flink's in-progress files, a file
compaction has replaced, or a partition retention has retired. Views are
rebuilt only when a table changes (a new Flink commit renames a file into a
partition directory, so the directories' modification times tell).

Tables whose lake rows are partial (an alert's opening and closing rows, what
each source said of a device) finish at read time: ``lake/views/<table>.sql``
is a SELECT over ``{raw}``, the table's files cast to the contract's columns.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from citylake.lake.manifest import FLINK_PART_PREFIX, TableLog, TableSnapshot
from citylake.lake.registry import lake_tables, registered_tables
from citylake.lake.sites import load_site_regions, sites_mtime, sites_view_sql
from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

VIEWS_DIR = Path(__file__).parent / "views"
# Directory times are as fine as the kernel's clock tick: a change within the
# last moments may share a time with one that follows, so such a table is
# listed again rather than trusted.
_SETTLE_NS = 200_000_000
# How stale a service's views may be: far below the lake's own freshness
# (Flink commits every checkpoint, seconds).
SERVICE_REFRESH_S = 0.25


def duckdb_type(dtype: pa.DataType) -> str:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    mapping = {
        pa.string(): "VARCHAR",
        pa.float64(): "DOUBLE",
        pa.float32(): "FLOAT",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.uint8(): "UTINYINT",
        pa.bool_(): "BOOLEAN",
        pa.binary(): "BLOB",
    }
    try:
        return mapping[dtype]
    except KeyError:
        raise TypeError(f"no DuckDB type for Arrow {dtype}") from None


def _select_list(spec: TableSpec, from_files: bool) -> str:
    columns = []
    for field in spec.schema:
        value = f'"{field.name}"' if from_files else "NULL"
        columns.append(f'CAST({value} AS {duckdb_type(field.type)}) AS "{field.name}"')
    if spec.time_column is not None:
        value = f'"{PARTITION_COLUMN}"' if from_files else "NULL"
        columns.append(f'CAST({value} AS DATE) AS "{PARTITION_COLUMN}"')
    return ", ".join(columns)


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def with_added_columns(spec: TableSpec, source: str) -> str:
    """``source`` with the columns a later schema version added (``spec.added``)
    present even when none of its files has them (all written before): NULL
    there. ``union_by_name`` fills a column only some files lack; this covers
    the rest. Filters and partition pruning still reach the scan."""
    if not spec.added:
        return source
    types = {f.name: duckdb_type(f.type) for f in spec.schema}
    nulls = ", ".join(f'CAST(NULL AS {types[name]}) AS "{name}"' for name in spec.added)
    return f"(SELECT * FROM {source} UNION ALL BY NAME SELECT {nulls} WHERE false)"


def raw_select(snap: TableSnapshot) -> str:
    """The snapshot's rows with the contract's column names and types."""
    spec = snap.spec
    if not snap.files:
        return f"SELECT {_select_list(spec, False)} WHERE false"
    files = ", ".join(_quote(str(p)) for p in snap.paths)
    hive = "true" if spec.time_column is not None else "false"
    source = with_added_columns(
        spec, f"read_parquet([{files}], hive_partitioning = {hive}, union_by_name = true)"
    )
    return f"SELECT {_select_list(spec, True)} FROM {source}"


# Tables whose rows fold by one shared rule, in one file.
_SHARED_FOLDS = {"readings_1m": "rollups", "readings_1h": "rollups"}


def fold_sql(spec: TableSpec) -> str | None:
    path = VIEWS_DIR / f"{_SHARED_FOLDS.get(spec.name, spec.name)}.sql"
    return path.read_text("utf-8") if path.exists() else None


def views_sql(snap: TableSnapshot) -> list[str]:
    """CREATE VIEW statements for one table's snapshot (raw, then public)."""
    fold = fold_sql(snap.spec)
    if fold is None:
        return [f'CREATE OR REPLACE VIEW "{snap.spec.name}" AS {raw_select(snap)}']
    raw = f'"_raw_{snap.spec.name}"'
    public = fold.replace("{raw}", raw)
    return [
        f"CREATE OR REPLACE VIEW {raw} AS {raw_select(snap)}",
        f'CREATE OR REPLACE VIEW "{snap.spec.name}" AS {public}',
    ]


def _signature(table_log: TableLog) -> tuple[tuple[str, int], ...] | None:
    """Modification times of everything a table's snapshot is listed from, or
    None when one changed too recently to be trusted."""
    entries = []
    now = time.time_ns()
    for directory in (table_log.dir, table_log.root):
        try:
            entries.append((str(directory), os.stat(directory).st_mtime_ns))
        except FileNotFoundError:
            entries.append((str(directory), 0))
    if table_log.spec.time_column is not None and table_log.root.exists():
        for entry in os.scandir(table_log.root):
            if entry.is_dir():
                entries.append((entry.name, entry.stat().st_mtime_ns))
    if any(now - mtime < _SETTLE_NS for _, mtime in entries):
        return None
    return tuple(sorted(entries))


class Lake:
    """One DuckDB database with a view per table. ``cursor()`` gives a
    connection for one thread (DuckDB cursors share the database and views)
    whose views show each table's newest snapshot."""

    def __init__(self, layout: DataLayout, database: str = ":memory:", min_refresh_s: float = 0.0) -> None:
        self.layout = layout
        # A service answering hundreds of queries a second looks at the lake's
        # directories at most this often, not once per query: under constant
        # Flink commits every look finds a change, and every query would
        # queue behind the one rebuilding the views.
        self.min_refresh_s = min_refresh_s
        self._refreshed_at = float("-inf")
        self.conn = duckdb.connect(database)
        self.conn.execute("SET TimeZone = 'UTC'")
        # Footers of files a query has read are kept, keyed by path and mtime:
        # lake files never change once written, so repeat queries skip them.
        self.conn.execute("SET parquet_metadata_cache = true")
        self._lock = threading.Lock()
        self._logs = {name: TableLog(layout, spec) for name, spec in lake_tables(layout).items()}
        self._signatures: dict[str, tuple[tuple[str, int], ...] | None] = {}
        self._snapshots: dict[str, TableSnapshot] = {}
        self._sites_mtime: int | None = None
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Point each changed table's view at its newest snapshot."""
        if not force and time.monotonic() - self._refreshed_at < self.min_refresh_s:
            return
        with self._lock:
            started = time.monotonic()
            # The sites' regions change only when a receiver restarts with new config.
            mtime = sites_mtime(self.layout)
            if force or mtime != self._sites_mtime:
                self.conn.execute(sites_view_sql(load_site_regions(self.layout)))
                self._sites_mtime = mtime
            # A user job registers its table when it starts (lake/registry.py):
            # a long-running service sees it from then on.
            for name, spec in registered_tables(self.layout).items():
                self._logs.setdefault(name, TableLog(self.layout, spec))
            for name, table_log in self._logs.items():
                signature = _signature(table_log)
                if not force and signature is not None and self._signatures.get(name) == signature:
                    continue
                snap = table_log.snapshot()
                previous = self._snapshots.get(name)
                if force or previous is None or previous.files != snap.files:
                    for statement in views_sql(snap):
                        self.conn.execute(statement)
                    self._snapshots[name] = snap
                self._signatures[name] = signature
            # Only a refresh that worked counts: after a failure (a damaged
            # file) the next reader tries again and meets the error itself.
            self._refreshed_at = started

    def snapshot(self, table: str) -> TableSnapshot:
        """The snapshot the views show now, for readers other than DuckDB."""
        self.refresh()
        return self._snapshots[table]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        self.refresh()
        return self.conn.cursor()

    def close(self) -> None:
        self.conn.close()


def _live_files_sql(table_log: TableLog) -> str:
    """The table's live files, computed from ``current.json`` and the directory
    each time a query runs: the snapshot rule of ``TableLog.snapshot`` in SQL."""
    spec, root = table_log.spec, str(table_log.root)
    part_glob = (
        f"{root}/*/{FLINK_PART_PREFIX}*" if spec.time_column is not None else f"{root}/{FLINK_PART_PREFIX}*"
    )
    current = _quote(str(table_log.current_path))
    log = (
        f"SELECT coalesce(added, []) AS added, coalesce(removed, []) AS removed, retained_from "
        f"FROM read_json({current}, format = 'auto', columns = {{added: 'VARCHAR[]', "
        f"removed: 'STRUCT(path VARCHAR, \"at\" VARCHAR)[]', retained_from: 'DATE'}})"
    )
    candidates = (
        f"SELECT substr(file, {len(root) + 2}) AS rel FROM glob({_quote(part_glob)}) "
        "WHERE substr(file, " + str(len(root) + 2) + ") NOT IN (SELECT unnest(removed).path FROM log) "
        "UNION ALL SELECT unnest(added) AS rel FROM log"
    )
    keep = "true"
    if spec.time_column is not None:
        day = f"TRY_CAST(regexp_extract(rel, '^{PARTITION_COLUMN}=([0-9-]+)/', 1) AS DATE)"
        cutoff = "(SELECT retained_from FROM log)"
        keep = f"{cutoff} IS NULL OR {day} IS NULL OR {day} >= {cutoff}"
    return (
        f"WITH log AS ({log}), candidates AS ({candidates}) "
        f"SELECT {_quote(root + '/')} || rel AS file FROM candidates WHERE {keep}"
    )


def live_views_sql(table_log: TableLog) -> list[str]:
    """CREATE VIEW statements whose file list comes from the table's log when
    each query runs, for DuckDB clients citylake does not refresh (the stock
    DuckDB CLI): new Flink commits show at the next query, and a file
    compaction or retention took out is pruned by name before its rows are
    read (``filename IN``, a dynamic filter on the scan). ``union_by_name``
    still reads the footer of every file on disk when the query is planned."""
    spec, name = table_log.spec, table_log.spec.name
    files_view = f'"_files_{name}"'
    source = with_added_columns(
        spec,
        f"read_parquet({_quote(str(table_log.root) + '/**/[!.]*')}, filename = true, "
        "hive_partitioning = false, union_by_name = true)",
    )
    columns = [f'CAST("{f.name}" AS {duckdb_type(f.type)}) AS "{f.name}"' for f in spec.schema]
    if spec.time_column is not None:
        columns.append(
            f"TRY_CAST(regexp_extract(filename, '/{PARTITION_COLUMN}=([0-9-]+)/[^/]*$', 1) AS DATE) "
            f'AS "{PARTITION_COLUMN}"'
        )
    raw_sql = f"SELECT {', '.join(columns)} FROM {source} WHERE filename IN (SELECT file FROM {files_view})"
    statements = [f"CREATE OR REPLACE VIEW {files_view} AS {_live_files_sql(table_log)}"]
    fold = fold_sql(spec)
    if fold is None:
        statements.append(f'CREATE OR REPLACE VIEW "{name}" AS {raw_sql}')
    else:
        raw = f'"_raw_{name}"'
        statements.append(f"CREATE OR REPLACE VIEW {raw} AS {raw_sql}")
        statements.append(f'CREATE OR REPLACE VIEW "{name}" AS {fold.replace("{raw}", raw)}')
    return statements


def all_views_sql(layout: DataLayout) -> str:
    """Every table's live views for the DuckDB CLI or any DuckDB client:
    ``duckdb -init views.sql``. They follow the lake's log at query time, so a
    session opened once sees new commits, compactions and vacuums. Publishes
    each table's ``current.json`` and schema file first (a lake no commit has
    touched yet has neither)."""
    lines = ["SET TimeZone = 'UTC';", "SET parquet_metadata_cache = true;"]
    for spec in lake_tables(layout).values():
        table_log = TableLog(layout, spec)
        table_log.publish_for_readers()
        lines.extend(f"{s};" for s in live_views_sql(table_log))
    lines.append(f"{sites_view_sql(load_site_regions(layout))};")
    return "\n".join(lines) + "\n"
