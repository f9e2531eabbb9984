"""The serving store: the lake's recent days in a DuckDB file the query service keeps.

Lake ranges pay, per query, a view over every file of the snapshot
(``union_by_name`` reads each footer's schema at planning) and row-group
pruning file by file; one device's hour measured 175 ms p99 on 144M readings,
where a native DuckDB table in the lake's order answered in 2.7 ms. So the
service keeps one: ``<data_dir>/cache/query/store.duckdb`` holds the newest
``serving_days`` of ``readings`` (inserted in (device_id, metric, ts) order, so
a row group's zone maps cover few devices) and ``readings_1h`` (in (metric,
window_start, device_id) order, so a city-wide hour of one metric is a few
contiguous row groups), and the newest ``serving_1m_days`` of ``readings_1m``
(in (device_id, metric, window_start) order, for one device's minutes: the
streaming rollups job commits a small file per checkpoint, and a lake query
over them cost 65 ms p50 and 1.1 s p99 in the edge box, issue 12).

The store mirrors the lake's log, file by file: each stored row carries the
id of the lake file it came from (``_file``), and ``_files`` names the files
loaded. A refresh compares the table's snapshot (lake/manifest.py) with
``_files``: rows of files the snapshot no longer has (compacted away, retired)
are deleted and files it gained are inserted, in one transaction. So the
store is always some snapshot's exact rows: a compaction output replacing its
inputs never doubles a row, a refresh repeated changes nothing, and a restart
goes on from what the file holds. A store that cannot be opened (damaged,
another schema version) is deleted and built again.

A route answers from the store only while its files are the lake's current
snapshot within the horizon (``serves``), and only for ranges starting inside
the horizon; anything else, and any store error, is the lake's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from citylake.lake.catalog import duckdb_type, fold_sql
from citylake.lake.manifest import TableSnapshot, partition_date
from citylake.schemas import DataLayout, table

log = logging.getLogger(__name__)

# Bumped when the stored tables change shape: an older file is rebuilt.
# 2: readings kept as every copy (_raw_readings) behind the lake's conflict rule.
# 3: readings_1h too (_raw_readings_1h, with its site), behind the rollups' rule.
# 4: readings_1m too, behind the same rule.
STORE_VERSION = 4
# The order rows are inserted in: what the routes reading each table filter on first.
ORDER = {
    "readings": ("device_id", "metric", "ts"),
    "readings_1h": ("metric", "window_start", "device_id"),
    "readings_1m": ("device_id", "metric", "window_start"),
}
TABLES = tuple(ORDER)
# Rows per INSERT while catching up (nothing is served then): bounds the sort's memory.
CATCH_UP_BATCH_ROWS = 8_000_000

SnapshotSource = Callable[[str], TableSnapshot]


def store_path(layout: DataLayout) -> Path:
    return layout.data_dir / "cache" / "query" / "store.duckdb"


@dataclass(frozen=True)
class StoreBounds:
    days: int = 8
    minute_days: int = 2  # readings_1m: a day of it is as many rows as a day of readings at 1/min
    max_rows: int = 400_000_000
    memory_limit_mb: int = 512
    threads: int = 1


@dataclass
class _TableState:
    """What one stored table mirrors: the snapshot's files and the horizon."""

    source: tuple[str, ...] | None = None  # the snapshot's files the store was refreshed from
    horizon: datetime | None = None  # ranges starting at or after this are stored whole
    rows: int = 0
    loaded: dict[str, int] = field(default_factory=dict)  # lake file -> id


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class ServingStore:
    def __init__(self, layout: DataLayout, snapshots: SnapshotSource, bounds: StoreBounds) -> None:
        self.layout = layout
        self.path = store_path(layout)
        self.bounds = bounds
        self._snapshots = snapshots
        self._write = threading.Lock()  # one refresh at a time
        self._states: dict[str, _TableState] = {}
        self._footers: dict[str, int] = {}  # lake file -> rows (files never change once written)
        self._next_id = 1
        self.ready = False  # True once a refresh has caught up with the lake
        self.error: str | None = None
        self.refreshes = 0
        self.conn = self._open()

    # -- the file -------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn: duckdb.DuckDBPyConnection | None = None
        existed = self.path.exists()
        try:
            conn = self._connect()
            found = conn.execute("SELECT max(version) FROM _store").fetchone()
            if found is None or found[0] != STORE_VERSION:
                raise ValueError(f"store version {found[0] if found else None}, not {STORE_VERSION}")
        except (duckdb.Error, ValueError, OSError) as exc:
            if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
                raise  # another process's store: never delete it
            if conn is not None:
                conn.close()
            if existed:
                log.warning("serving store %s cannot be used (%s: %s): building it again", self.path,
                            type(exc).__name__, exc)  # fmt: skip
            for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
                leftover.unlink(missing_ok=True)
            conn = self._connect()
            self._create(conn)
        self._load_state(conn)
        return conn

    def _connect(self) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(str(self.path))
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"SET threads = {self.bounds.threads}")
        conn.execute(f"SET memory_limit = '{self.bounds.memory_limit_mb}MiB'")
        spill = self.layout.data_dir / "tmp" / "query-store"
        spill.mkdir(parents=True, exist_ok=True)
        conn.execute(f"SET temp_directory = {_quote(str(spill))}")
        return conn

    def _create(self, conn: duckdb.DuckDBPyConnection) -> None:
        statements = []
        for name in TABLES:
            columns = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in table(name).schema)
            statements.append(f"CREATE TABLE {_stored(name)} ({columns}, _file INTEGER NOT NULL)")
            fold = fold_sql(table(name))
            if fold is not None:
                # Every copy is stored, as the lake's files hold them; the routes
                # read the lake's own view SQL over them, so the store answers
                # with the conflict rule of every tier (lake/README.md).
                time_column = _ident(table(name).time_column or "ts")
                dated = f'(SELECT *, CAST({time_column} AS DATE) AS "date" FROM {_stored(name)})'
                statements.append(f'CREATE VIEW "{name}" AS {fold.replace("{raw}", dated)}')
        statements += [
            "CREATE TABLE _files (id INTEGER PRIMARY KEY, tbl VARCHAR NOT NULL, path VARCHAR NOT NULL, "
            "rows BIGINT NOT NULL)",
            "CREATE TABLE _store (version INTEGER NOT NULL)",
            f"INSERT INTO _store VALUES ({STORE_VERSION})",
        ]
        conn.execute("BEGIN")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")

    def _load_state(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._states = {name: _TableState() for name in TABLES}
        for file_id, tbl, path, rows in conn.execute("SELECT id, tbl, path, rows FROM _files").fetchall():
            state = self._states[tbl]
            state.loaded[path] = file_id
            state.rows += rows
            self._next_id = max(self._next_id, file_id + 1)

    def close(self) -> None:
        with self._write:
            self.conn.close()

    # -- reading ----------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.conn.cursor()

    def serves(self, name: str, start: datetime) -> bool:
        """Whether ranges of ``name`` from ``start`` are the lake's answer here:
        the store has caught up, holds the lake's current snapshot, and
        ``start`` is inside its horizon."""
        if not self.ready:
            return False
        state = self._states[name]
        if state.horizon is None or start < state.horizon:
            return False
        try:
            current = self._snapshots(name).files
        except Exception:  # the lake cannot say what is current: the lake's route says why
            return False
        return current is state.source or current == state.source

    def horizon(self, name: str) -> datetime | None:
        return self._states[name].horizon

    def counts(self) -> dict[str, int]:
        return {name: state.rows for name, state in self._states.items()}

    # -- refreshing -------------------------------------------------------

    def refresh(self) -> bool:
        """Brings every table to the lake's current snapshot; True if anything changed."""
        with self._write:
            changed = False
            for name in TABLES:
                changed |= self._refresh_table(name, self._snapshots(name))
            self.ready = True
            self.error = None
            self.refreshes += 1
            return changed

    def _rows(self, snap: TableSnapshot, relative: str) -> int:
        rows = self._footers.get(relative)
        if rows is None:
            rows = pq.ParquetFile(snap.root / relative).metadata.num_rows
            self._footers[relative] = rows
        return rows

    def days(self, name: str) -> int:
        return self.bounds.minute_days if name == "readings_1m" else self.bounds.days

    def _wanted(self, snap: TableSnapshot) -> tuple[dict[str, int], datetime | None]:
        """The snapshot's files of the newest days that fit the bounds, and
        where that horizon starts (None: not even the newest day fits)."""
        by_day: dict[date, list[str]] = {}
        for relative in snap.files:
            day = partition_date(relative)
            if day is not None:
                by_day.setdefault(day, []).append(relative)
        wanted: dict[str, int] = {}
        horizon: date | None = None
        total = 0
        days = self.days(snap.spec.name)
        if days == 0:
            return {}, None  # kept out of the store: the lake answers every range
        for day in sorted(by_day, reverse=True)[:days]:
            rows = {f: self._rows(snap, f) for f in by_day[day]}
            if total + sum(rows.values()) > self.bounds.max_rows:
                break
            total += sum(rows.values())
            wanted |= rows
            horizon = day
        if horizon is None:
            # An empty table is whole at any start; one too big for the bounds at none.
            return {}, (datetime.min.replace(tzinfo=UTC) if not by_day else None)
        return wanted, datetime(horizon.year, horizon.month, horizon.day, tzinfo=UTC)

    def _refresh_table(self, name: str, snap: TableSnapshot) -> bool:
        state = self._states[name]
        if state.source is not None and (snap.files is state.source or snap.files == state.source):
            return False
        wanted, horizon = self._wanted(snap)
        gone = [file_id for path, file_id in state.loaded.items() if path not in wanted]
        new = [path for path in sorted(wanted) if path not in state.loaded]
        cursor = self.conn.cursor()
        try:
            if self.ready:
                # Serving: the whole change is one transaction, so a reader
                # sees the previous snapshot or this one, never a mix.
                cursor.execute("BEGIN")
                self._delete(cursor, name, gone)
                ids = self._insert(cursor, name, snap, new, wanted)
                cursor.execute("COMMIT")
            else:
                # Catching up (nothing served from the store yet): batches
                # commit one by one, so a restart keeps what was loaded.
                cursor.execute("BEGIN")
                self._delete(cursor, name, gone)
                cursor.execute("COMMIT")
                ids = {}
                for batch in _batches(new, wanted, CATCH_UP_BATCH_ROWS):
                    cursor.execute("BEGIN")
                    ids |= self._insert(cursor, name, snap, batch, wanted)
                    cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            self._load_state(self.conn)  # what the file really holds now
            raise
        finally:
            cursor.close()
        state.loaded = {p: i for p, i in state.loaded.items() if p in wanted} | ids
        state.rows = sum(wanted[p] for p in state.loaded)
        state.source = snap.files
        state.horizon = horizon
        if gone or new:
            log.info("serving store %s: %d files in, %d out, %d rows", name, len(new), len(gone), state.rows)
        return bool(gone or new)

    def _delete(self, cursor: duckdb.DuckDBPyConnection, name: str, ids: list[int]) -> None:
        if not ids:
            return
        listed = ", ".join(str(i) for i in ids)
        cursor.execute(f"DELETE FROM {_stored(name)} WHERE _file IN ({listed})")
        cursor.execute(f"DELETE FROM _files WHERE id IN ({listed})")

    def _insert(
        self,
        cursor: duckdb.DuckDBPyConnection,
        name: str,
        snap: TableSnapshot,
        paths: list[str],
        rows: dict[str, int],
    ) -> dict[str, int]:
        if not paths:
            return {}
        ids = {}
        for path in paths:
            ids[path] = self._next_id
            self._next_id += 1
        spec = table(name)
        present: set[str] = set()
        for path in paths:
            present.update(pq.read_schema(snap.root / path).names)
        # A file older than a column has NULL there, as the lake's views give.
        columns = ", ".join(
            f"CAST({f'r.{_ident(f.name)}' if f.name in present else 'NULL'} AS {duckdb_type(f.type)})"
            for f in spec.schema
        )
        files = ", ".join(_quote(str(snap.root / p)) for p in paths)
        mapping = ", ".join(f"({_quote(str(snap.root / p))}, {ids[p]})" for p in paths)
        order = ", ".join(_ident(c) for c in ORDER[name])
        cursor.execute(
            f"INSERT INTO {_stored(name)} SELECT {columns}, m.id "
            f"FROM read_parquet([{files}], filename = true, union_by_name = true, "
            "hive_partitioning = false) r "
            f"JOIN (VALUES {mapping}) m(path, id) ON r.filename = m.path ORDER BY {order}"
        )
        cursor.executemany(
            "INSERT INTO _files VALUES (?, ?, ?, ?)", [[ids[p], name, p, rows[p]] for p in paths]
        )
        return ids


def _stored(name: str) -> str:
    """The physical table of a lake table: under the lake's own raw name where a
    fold view (lake/views/) gives the table its public rows."""
    return _ident(f"_raw_{name}" if fold_sql(table(name)) is not None else name)


def _ident(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _batches(paths: list[str], rows: dict[str, int], limit: int) -> list[list[str]]:
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path in paths:
        if current and size + rows[path] > limit:
            batches.append(current)
            current, size = [], 0
        current.append(path)
        size += rows[path]
    if current:
        batches.append(current)
    return batches


class StoreKeeper:
    """Refreshes the store from the lake every ``interval_s`` in a thread of its own."""

    def __init__(self, store: ServingStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-store", daemon=True)

    def start(self) -> StoreKeeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.store.refresh()
            except Exception as exc:  # a damaged lake file, a full disk: the lake answers meanwhile
                self.store.error = f"{type(exc).__name__}: {exc}"
                log.warning("serving store refresh failed: %s", self.store.error)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def close(self) -> None:
        """Stops refreshing (a refresh under way finishes first), then closes the store."""
        self._stop.set()
        self._thread.join(timeout=600)
        self.store.close()


def open_store(layout: DataLayout, snapshots: SnapshotSource, bounds: StoreBounds) -> ServingStore | None:
    """The service's store, or None when another process holds its file
    (a second replica on one data directory: it answers from the lake)."""
    try:
        return ServingStore(layout, snapshots, bounds)
    except (duckdb.Error, OSError) as exc:
        log.warning("serving store at %s not used (%s: %s): the lake answers", store_path(layout),
                    type(exc).__name__, exc)  # fmt: skip
        return None
