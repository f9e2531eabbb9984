"""The landing collector: removes a landing file once every configured job that
reads its table has consumed it, as the lake's committed files prove, and once
it is older than the replay window (``landing.replay_window_h``).

"Consumed" is read from the lake, never from a clock: Flink commits a job's
lake files at a completed checkpoint, so what the lake holds is what no
restore will take back. Two kinds of proof, by what a job writes:

- ``KeyWitness`` (row-for-row jobs: ``readings``, ``events``): every key of the
  landing file is in the job's lake table (a DuckDB anti-join of the file
  against the lake files of its dates written after it landed). Dedupe keeps
  one copy of a key, which is still the key.
- ``WatermarkWitness`` (event-time jobs: ``rollups``, ``devices``, ``alerts``):
  their rows depend on other files too, so no key says "this file is in". They
  emit a row only once their watermark has passed its time (a window's end),
  and a landing row behind the watermark is late: read now or never, it
  changes nothing. A committed row at ``t`` proves the watermark reached
  ``floor(t, window) + window``; a file all of whose windows end by then is
  consumed. Footers of the newest lake files say it; no data page is read.

A job that is down or behind writes nothing newer, so its inputs stay; a
landing table no configured job reads, or that a job without a witness reads,
is never collected. The collector only unlinks files it has proven consumed,
one by one: killed at any moment it has removed a subset of those, and the
next run carries on (no state of its own).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from citylake.config import CityConfig
from citylake.ingest.landing import forget_collected
from citylake.lake.maintenance import Action
from citylake.lake.manifest import TableLog, partition_date
from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec, table

log = logging.getLogger(__name__)

# Footers read per lake table to find a job's watermark: the newest files by
# mtime hold the newest rows (compaction outputs are newer but hold older
# rows, so a few more than one). Fewer files can only under-estimate it.
WATERMARK_FILES = 16
# Landing names start with time.time_ns() taken before the file was written;
# lake files holding its rows are written after it. Slack for coarse mtimes.
MTIME_SLACK_NS = 2_000_000_000


@dataclass(frozen=True)
class KeyWitness:
    """The job writes each landing row to ``table`` under the same key:
    ``keys`` in landing, ``lake_keys`` (default the same names) in the lake.
    Columns in ``instants`` (default the lake table's time column) are
    compared as epoch milliseconds: Flink writes naive instants, ingest UTC."""

    table: str
    keys: tuple[str, ...]
    lake_keys: tuple[str, ...] | None = None
    instants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class WatermarkWitness:
    """The job emits a row of ``table`` only once its watermark passed the
    row's ``columns`` (rounded down to ``window``, plus ``window``)."""

    table: str
    columns: tuple[str, ...]
    window: timedelta


Witness = KeyWitness | WatermarkWitness

# What each job reads from landing and how the lake shows it consumed a file.
# tests/unit/test_landing_gc.py holds this to every job's INPUTS: a job whose
# inputs change fails there until its witness is written down here.
JOB_READS: dict[str, dict[str, tuple[Witness, ...]]] = {
    "readings": {"readings": (KeyWitness("readings", ("device_id", "metric", "ts")),)},
    "rollups": {
        "readings": (
            WatermarkWitness("readings_1m", ("window_start",), timedelta(minutes=1)),
            WatermarkWitness("readings_1h", ("window_start",), timedelta(hours=1)),
        )
    },
    # Row for row: each event becomes a devices row at its time, each landing
    # devices row one at its last_seen (pipelines/devices/).
    "devices": {
        "device_events": (
            KeyWitness("devices", ("device_id", "ts"), ("device_id", "last_seen"), ("ts", "last_seen")),
        ),
        "devices": (KeyWitness("devices", ("device_id", "last_seen"), instants=("last_seen",)),),
    },
    # MATCH_RECOGNIZE in event time handles a reading once the watermark is past it.
    "alerts": {"readings": (WatermarkWitness("alerts", ("started_at", "ended_at"), timedelta(0)),)},
    "events": {
        "device_events": (KeyWitness("device_events", ("device_id", "ts", "kind")),),
        "rejected": (KeyWitness("rejected", ("source", "received_at", "reason")),),
    },
}


@dataclass(frozen=True)
class LandingFile:
    path: Path
    landed_ns: int
    bytes: int
    date: str | None


@dataclass
class TableCollection:
    """One landing table in one run."""

    table: str
    readers: tuple[str, ...]
    files: int = 0
    bytes: int = 0
    in_replay_window: int = 0
    examined: int = 0
    removed: int = 0
    bytes_removed: int = 0
    # Of the examined files, how many each job has not consumed yet.
    waiting: dict[str, int] = field(default_factory=dict)
    note: str | None = None


@dataclass
class LandingCollection:
    tables: list[TableCollection]
    elapsed_s: float = 0.0

    @property
    def removed(self) -> int:
        return sum(t.removed for t in self.tables)

    @property
    def bytes_removed(self) -> int:
        return sum(t.bytes_removed for t in self.tables)

    @property
    def landing_bytes(self) -> int:
        """Bytes left in landing after the run."""
        return sum(t.bytes - t.bytes_removed for t in self.tables)


def _landed_ns(entry: os.DirEntry[str]) -> int:
    prefix = entry.name.split("-", 1)[0]
    return int(prefix) if prefix.isdigit() else entry.stat().st_mtime_ns


def landing_files(layout: DataLayout, spec: TableSpec) -> list[LandingFile]:
    """The table's landed files, oldest first (dot-files are in flight)."""
    root = layout.landing(spec)
    directories: list[tuple[Path, str | None]] = [(root, None)]
    if root.exists():
        directories.extend(
            (Path(e.path), e.name.removeprefix(f"{PARTITION_COLUMN}="))
            for e in os.scandir(root)
            if e.is_dir() and e.name.startswith(f"{PARTITION_COLUMN}=")
        )
    found = []
    for directory, date in directories:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.name.endswith(".parquet"):
                continue
            try:
                found.append(LandingFile(Path(e.path), _landed_ns(e), e.stat().st_size, date))
            except FileNotFoundError:
                continue
    found.sort(key=lambda f: (f.landed_ns, f.path.name))
    return found


def _as_utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # Flink writes UTC instants without the "adjusted to UTC" flag.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _column_max(path: Path, columns: Iterable[str]) -> datetime | None:
    """The largest value of ``columns`` in ``path``, from its footer."""
    meta = pq.ParquetFile(path).metadata
    names = meta.schema.names
    best: datetime | None = None
    for column in columns:
        if column not in names:
            continue
        index = names.index(column)
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max:
                if meta.row_group(g).column(index).num_values:
                    # No statistics: read the column rather than guess.
                    values = pq.read_table(path, columns=[column]).column(column)
                    top = _as_utc(max((v for v in values.to_pylist() if v is not None), default=None))
                    best = top if best is None or (top is not None and top > best) else best
                break
            top = _as_utc(stats.max)
            if top is not None and (best is None or top > best):
                best = top
    return best


def _floor(t: datetime, window: timedelta) -> datetime:
    if not window:
        return t
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // window) * window


def proven_watermark(layout: DataLayout, witness: WatermarkWitness) -> datetime | None:
    """How far the job's watermark has provably got, from its committed rows."""
    snap = TableLog(layout, table(witness.table)).snapshot()
    dated = [(p, p.stat().st_mtime_ns) for p in snap.paths if p.exists()]
    newest = sorted(dated, key=lambda item: item[1], reverse=True)[:WATERMARK_FILES]
    best: datetime | None = None
    for path, _ in newest:
        try:
            top = _column_max(path, witness.columns)
        except FileNotFoundError:  # vacuumed since the snapshot
            continue
        if top is not None and (best is None or top > best):
            best = top
    if best is None:
        return None
    return _floor(best, witness.window) + witness.window


def _file_max(path: Path, column: str) -> datetime | None:
    return _column_max(path, (column,))


def _watermark_consumed(
    layout: DataLayout, spec: TableSpec, witness: WatermarkWitness, candidates: list[LandingFile]
) -> set[Path]:
    watermark = proven_watermark(layout, witness)
    if watermark is None or spec.time_column is None:
        return set()
    consumed = set()
    for f in candidates:
        last = _file_max(f.path, spec.time_column)
        if last is None:
            continue
        # Every window of the file ends by floor(last) + window; a zero window
        # (row-at-a-time in event time) needs the watermark past the row.
        needed = _floor(last, witness.window) + witness.window
        if watermark > needed or (witness.window and watermark >= needed):
            consumed.add(f.path)
    return consumed


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _key_consumed(
    layout: DataLayout, spec: TableSpec, witness: KeyWitness, candidates: list[LandingFile]
) -> set[Path]:
    """Files all of whose keys the lake table holds: one anti-join for the
    batch, over only the lake files that can hold them (their dates, written
    after the oldest candidate landed), with the candidates' time range
    pushed into the lake scan so row-group statistics prune it."""
    lake_spec = table(witness.table)
    snap = TableLog(layout, lake_spec).snapshot()
    dates = {f.date for f in candidates}
    oldest = min(f.landed_ns for f in candidates) - MTIME_SLACK_NS
    lake_files = []
    for path, relative in zip(snap.paths, snap.files, strict=True):
        day = partition_date(relative)
        if day is not None and None not in dates and day.isoformat() not in dates:
            continue
        try:
            if path.stat().st_mtime_ns >= oldest:
                lake_files.append(path)
        except FileNotFoundError:
            continue
    if not lake_files:
        return set()
    time_column = lake_spec.time_column
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET threads = 1")  # beside ingest and Flink on a 2-core edge node

        instants = set(witness.instants) if witness.instants is not None else {time_column}

        def key_select(column: str, name: str) -> str:
            if column in instants:
                return f'epoch_ms("{column}") AS "{name}"'
            return f'CAST("{column}" AS VARCHAR) AS "{name}"'

        keys = ", ".join(key_select(c, c) for c in witness.keys)
        lake_keys = ", ".join(
            key_select(lake, c)
            for lake, c in zip(witness.lake_keys or witness.keys, witness.keys, strict=True)
        )
        landing_list = ", ".join(_quote(f.path) for f in candidates)
        lake_list = ", ".join(_quote(p) for p in lake_files)
        where = ""
        if time_column is not None and time_column in witness.keys:
            low, high = connection.execute(
                f'SELECT min("{time_column}"), max("{time_column}") '
                f"FROM read_parquet([{landing_list}], hive_partitioning = false)"
            ).fetchone()  # type: ignore[misc]
            if low is None:
                return {f.path for f in candidates}  # no rows: nothing to hold
            # Lake files may carry naive (Flink) or UTC-adjusted (DuckDB) instants.
            where = f"""WHERE "{time_column}" BETWEEN '{low:%Y-%m-%d %H:%M:%S.%f}'::TIMESTAMPTZ
                AND '{high:%Y-%m-%d %H:%M:%S.%f}'::TIMESTAMPTZ"""
        on = " AND ".join(f'l."{c}" = k."{c}"' for c in witness.keys)
        sql = f"""
            WITH l AS (SELECT filename, {keys}
                       FROM read_parquet([{landing_list}], filename = true, hive_partitioning = false)),
                 k AS (SELECT {lake_keys}
                       FROM read_parquet([{lake_list}], hive_partitioning = false, union_by_name = true)
                       {where})
            SELECT DISTINCT l.filename FROM l ANTI JOIN k ON {on}"""
        unconsumed = {Path(row[0]) for row in connection.execute(sql).fetchall()}
    finally:
        connection.close()
    return {f.path for f in candidates} - unconsumed


def _consumed(
    layout: DataLayout, spec: TableSpec, witness: Witness, candidates: list[LandingFile]
) -> set[Path]:
    if not candidates:
        return set()
    try:
        if isinstance(witness, KeyWitness):
            return _key_consumed(layout, spec, witness, candidates)
        return _watermark_consumed(layout, spec, witness, candidates)
    except (duckdb.IOException, FileNotFoundError, OSError) as exc:
        # A lake file vacuumed mid-read, a landing file unreadable: prove
        # nothing this run, remove nothing; the next run looks again.
        log.warning("landing gc: %s via %s proved nothing this run: %s", spec.name, witness.table, exc)
        return set()


def readers_of(config: CityConfig) -> tuple[dict[str, dict[str, tuple[Witness, ...]]], list[str]]:
    """Per landing table, each configured job reading it and its witnesses;
    and the configured jobs the collector knows no witness for."""
    readers: dict[str, dict[str, tuple[Witness, ...]]] = {}
    unknown = []
    for job in config.pipelines.jobs:
        reads = JOB_READS.get(job)
        if reads is None:
            unknown.append(job)
            continue
        for landing_table, witnesses in reads.items():
            readers.setdefault(landing_table, {})[job] = witnesses
    return readers, unknown


def collect_landing(
    config: CityConfig,
    layout: DataLayout | None = None,
    *,
    now_ns: int | None = None,
    on_table: Callable[[TableCollection], None] | None = None,
) -> LandingCollection:
    """One collector run over every landing table; see the module docstring."""
    started = time.monotonic()
    layout = layout or DataLayout(config.data_dir)
    settings = config.landing
    cutoff = (now_ns if now_ns is not None else time.time_ns()) - int(settings.replay_window_h * 3600e9)
    readers, unknown = readers_of(config)
    result = LandingCollection([])
    landing_root = layout.landing_root
    names = sorted(
        e.name for e in os.scandir(landing_root) if e.is_dir() and not e.name.startswith("_")
    ) if landing_root.exists() else []  # fmt: skip
    collected: set[Path] = set()
    for name in names:
        try:
            spec = table(name)
        except KeyError:
            continue
        files = landing_files(layout, spec)
        jobs = readers.get(name, {})
        entry = TableCollection(
            name, tuple(sorted(jobs)), files=len(files), bytes=sum(f.bytes for f in files)
        )
        result.tables.append(entry)
        if unknown:
            entry.note = f"kept: no witness for configured job(s) {', '.join(unknown)} (lake/landing_gc.py)"
        elif not jobs:
            entry.note = "kept: no configured job reads it"
        if entry.note is not None:
            if on_table is not None:
                on_table(entry)
            continue
        old = [f for f in files if f.landed_ns <= cutoff]
        entry.in_replay_window = len(files) - len(old)
        candidates = old[: settings.collect_max_files]
        entry.examined = len(candidates)
        removable = {f.path for f in candidates}
        for job, witnesses in sorted(jobs.items()):
            by_job = {f.path for f in candidates}
            for witness in witnesses:
                by_job &= _consumed(layout, spec, witness, [f for f in candidates if f.path in by_job])
            entry.waiting[job] = len(candidates) - len(by_job)
            removable &= by_job
        for f in candidates:
            if f.path not in removable:
                continue
            try:
                f.path.unlink()
            except FileNotFoundError:  # another collector got there first
                continue
            entry.removed += 1
            entry.bytes_removed += f.bytes
            collected.add(f.path)
        if on_table is not None:
            on_table(entry)
    # Recovery treats a file a commit record names but the disk lacks as lost;
    # these were consumed, so the records stop naming them.
    forget_collected(layout, collected)
    result.elapsed_s = time.monotonic() - started
    return result


@dataclass(frozen=True)
class LandingTask:
    """The collector as one of ``citylake lake maintain``'s tasks
    (lake/maintenance.py): one action per landing table and run."""

    config: CityConfig
    every_s: float
    name: str = "collect-landing"

    def run(self, should_stop: Callable[[], bool]) -> Iterator[Action]:
        if should_stop():
            return
        started = time.monotonic()
        try:
            result = collect_landing(self.config)
        except Exception as exc:  # the next round tries again; compaction goes on meanwhile
            log.exception("landing collection failed")
            yield Action(self.name, "landing", duration_s=time.monotonic() - started, error=str(exc))
            return
        for t in result.tables:
            counts = {"files": t.files, "examined": t.examined, "removed": t.removed, "bytes": t.bytes}
            counts |= {f"waiting_{job}": n for job, n in t.waiting.items()}
            yield Action(self.name, t.table, counts, result.elapsed_s)
