"""Compaction: many small files of a partition become one sorted file.

Flink's file sink rolls a file per writer at every checkpoint, so a streaming
job leaves hundreds of small files a day in each partition. Compaction merges
them with DuckDB (sorted by device and time, the common filters, zstd), checks
the row count, and commits one log version that adds the new file and
removes the old ones: a reader sees either all old files or the new one.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from citylake.lake.catalog import with_added_columns
from citylake.lake.manifest import COMPACTED_PREFIX, SYNCED_PREFIX, Removed, TableLog
from citylake.schemas import DataLayout, TableSpec
from citylake.schemas.tables import SCHEMA_VERSION, SCHEMA_VERSION_KEY, TABLE_NAME_KEY

log = logging.getLogger(__name__)

DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
DEFAULT_MIN_FILES = 4
# Row groups of ~30k rows hold a few hundred devices each: a one-device query
# reads one of them (measured 3 ms vs 18 ms with DuckDB's default 122,880).
ROW_GROUP_ROWS = 30_720
# The DuckDB CLI's live views (catalog.live_views_sql) list a table's directory
# when a query is planned and read the log when it runs. A merged file is on
# disk this long before the commit that makes it live, so a query planned
# before it appeared cannot run against a log that already replaced its inputs.
READER_SETTLE_S = 0.5


@dataclass(frozen=True)
class CompactionResult:
    table: str
    partitions: int
    files_in: int
    files_out: int
    rows: int
    bytes_in: int
    bytes_out: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sort_keys(spec: TableSpec) -> list[str]:
    """Device first, then metric, then time: what analysts and services filter on."""
    names = spec.schema.names
    keys = [k for k in ("device_id", "metric") if k in names]
    if spec.time_column is not None:
        keys.append(spec.time_column)
    return keys


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def write_sorted(spec: TableSpec, sources: list[str], target: str, memory_mb: int | None = None) -> None:
    """``sources`` as one lake file at ``target``: sorted by ``sort_keys``, zstd,
    UTC instants, the schema-version metadata. What compaction commits; the
    benches write their lakes with it too."""
    order = ", ".join(f'"{k}"' for k in sort_keys(spec))
    files = ", ".join(_quote(s) for s in sources)
    metadata = (
        f"{{'{SCHEMA_VERSION_KEY.decode()}': '{SCHEMA_VERSION}', '{TABLE_NAME_KEY.decode()}': '{spec.name}'}}"
    )
    # Instants as TIMESTAMPTZ (INT64, adjusted to UTC): the contract's type,
    # so the views' cast is a no-op for these files and time filters reach
    # their row-group statistics (Flink's own files lack the UTC flag).
    columns = ", ".join(
        f'CAST("{f.name}" AS TIMESTAMPTZ) AS "{f.name}"' if pa.types.is_timestamp(f.type) else f'"{f.name}"'
        for f in spec.schema
    )
    # Files older than a column (spec.added) gain it as NULL: the output is
    # of the current contract, as its metadata says.
    source = with_added_columns(
        spec, f"read_parquet([{files}], union_by_name = true, hive_partitioning = false)"
    )
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        # One thread: compaction runs beside ingest and Flink on a 2-core edge node.
        conn.execute("SET threads = 1")
        if memory_mb is not None:
            # Below the pod's limit at the edge: DuckDB spills the sort instead.
            conn.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
        conn.execute(
            f"COPY (SELECT {columns} FROM {source} ORDER BY {order}) "
            f"TO {_quote(target)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
            f"KV_METADATA {metadata})"
        )


def _plan(sizes: dict[str, int], target_bytes: int, min_files: int) -> list[list[str]]:
    """Groups of small files of one partition, each up to ``target_bytes``."""
    small = sorted((f for f, s in sizes.items() if s < target_bytes), key=lambda f: sizes[f])
    if len(small) < min_files:
        return []
    groups: list[list[str]] = [[]]
    total = 0
    for name in small:
        if groups[-1] and total + sizes[name] > target_bytes:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += sizes[name]
    return [g for g in groups if len(g) >= 2]


def compact_table(
    layout: DataLayout,
    spec: TableSpec,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    min_files: int = DEFAULT_MIN_FILES,
    on_group: Callable[[str, int], None] | None = None,
    max_groups: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_mb: int | None = None,
) -> CompactionResult:
    """Compact every partition of ``spec`` holding at least ``min_files`` small
    files. Safe beside running jobs and readers; one writer at a time.
    ``max_groups`` bounds one call's work; ``should_stop`` is asked between
    groups (each group is one commit, so stopping there leaves the log whole)."""
    table_log = TableLog(layout, spec)
    files_in = files_out = rows = bytes_in = bytes_out = 0
    partitions: set[str] = set()
    with table_log.writer():
        snap = table_log.snapshot()
        by_partition: dict[str, dict[str, int]] = defaultdict(dict)
        for relative in snap.files:
            partition = relative.rsplit("/", 1)[0] if "/" in relative else ""
            # A synced file mirrors a file of another site's lake, which that
            # site compacts itself and whose sync then replaces it here. Merged
            # here, its rows would outlive that replacement: counted twice.
            if relative.rsplit("/", 1)[-1].startswith(SYNCED_PREFIX):
                continue
            by_partition[partition][relative] = (snap.root / relative).stat().st_size
        manifest = snap.manifest
        for partition, sizes in sorted(by_partition.items()):
            for group in _plan(sizes, target_bytes, min_files):
                if (max_groups is not None and files_out >= max_groups) or (
                    should_stop is not None and should_stop()
                ):
                    break
                name = f"{COMPACTED_PREFIX}{uuid.uuid4().hex}.parquet"
                relative = f"{partition}/{name}" if partition else name
                final = snap.root / relative
                temporary = final.with_name(f".{name}.tmp")
                expected = sum(pq.ParquetFile(snap.root / f).metadata.num_rows for f in group)
                write_sorted(spec, [str(snap.root / f) for f in group], str(temporary), memory_mb)
                written = pq.ParquetFile(temporary).metadata.num_rows
                if written != expected:
                    temporary.unlink()
                    raise RuntimeError(
                        f"compaction of {spec.name}/{partition} wrote {written} rows, expected {expected}; "
                        "nothing was committed"
                    )
                with open(temporary, "rb") as f:
                    os.fsync(f.fileno())
                os.rename(temporary, final)
                # The rename is durable before the log names the file: else a
                # power cut after the commit leaves a log naming a file that
                # never reached the disk, and the inputs already removed.
                _fsync_dir(final.parent)
                time.sleep(READER_SETTLE_S)
                now = datetime.now(UTC)
                merged = set(group)
                manifest = table_log.commit(
                    manifest,
                    "compact",
                    added=(manifest.added - merged) | {relative},
                    removed=manifest.removed + tuple(Removed(f, now) for f in sorted(merged)),
                )
                partitions.add(partition)
                files_in += len(group)
                files_out += 1
                rows += written
                bytes_in += sum(sizes[f] for f in group)
                bytes_out += final.stat().st_size
                log.info("compacted %d files of %s/%s into %s", len(group), spec.name, partition, name)
                if on_group is not None:
                    on_group(partition, len(group))
    return CompactionResult(spec.name, len(partitions), files_in, files_out, rows, bytes_in, bytes_out)
