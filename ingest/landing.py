"""Durable landing: Arrow batches to Parquet files that survive a crash, with
each flush committed as a whole and the inputs it holds remembered.

A flush (several tables, several date partitions) commits in three steps:

1. every file is written under a hidden temporary name and fsynced;
2. a commit record (``landing/_commits/<seq>.json``: the files and the ids of
   the inputs they hold) is written, fsynced and renamed into place — this is
   the commit point;
3. the temporary files are renamed to their final names, directories fsynced.

``recover()`` at start rolls a committed flush forward (finishes its renames)
and an uncommitted one back (deletes its temporaries), so readers (Flink's
file source, DuckDB; both skip dot-files) never see half a flush. The input
ids of recent commits let a source drop a redelivered input that was landed
but whose acknowledgement was lost in a crash: exactly once in the landing
zone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

log = logging.getLogger(__name__)

# Acknowledgements of a flush are sent before the next flush starts, so only
# the last few commits can hold inputs whose acknowledgement a crash lost.
RECENT_COMMITS_KEPT = 32


@dataclass(frozen=True)
class LandedFile:
    path: Path
    rows: int
    bytes: int


@dataclass
class RecoveryReport:
    rolled_forward: int = 0
    rolled_back: int = 0
    recent_inputs: dict[str, set[str]] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, path)
    _fsync_dir(path.parent)


class LandingWriter:
    """Commits flushes into ``landing/<table>/date=.../`` under one data_dir."""

    def __init__(self, layout: DataLayout, compression: str = "zstd") -> None:
        self.layout = layout
        self.compression = compression
        self.commits_dir = layout.landing_root / "_commits"
        self.landing_bytes = 0

    def commit(
        self,
        batches: Sequence[tuple[TableSpec, pa.RecordBatch]],
        inputs: Mapping[str, Sequence[str]] | None = None,
    ) -> list[LandedFile]:
        """Make ``batches`` durable and visible as one unit; returns the files."""
        staged: list[tuple[Path, Path, int]] = []
        try:
            for spec, batch in batches:
                staged.extend(self._stage(spec, batch))
        except BaseException:
            for temporary, _, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        if not staged and not inputs:
            return []
        self.commits_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "files": [
                [str(t.relative_to(self.layout.landing_root)), str(f.relative_to(self.layout.landing_root))]
                for t, f, _ in staged
            ],
            "inputs": {source: list(ids) for source, ids in (inputs or {}).items() if ids},
        }
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        _write_durably(self.commits_dir / name, json.dumps(record).encode())
        landed = []
        for temporary, final, rows in staged:
            os.rename(temporary, final)
            landed.append(LandedFile(final, rows, final.stat().st_size))
        self.landing_bytes += sum(f.bytes for f in landed)
        for directory in {final.parent for _, final, _ in staged}:
            _fsync_dir(directory)
        self._prune_commits()
        return landed

    def write(self, spec: TableSpec, batch: pa.RecordBatch) -> list[LandedFile]:
        """One table's batch as its own commit."""
        return self.commit([(spec, batch)])

    def _stage(self, spec: TableSpec, batch: pa.RecordBatch) -> list[tuple[Path, Path, int]]:
        if batch.num_rows == 0:
            return []
        table = pa.Table.from_batches([batch]).replace_schema_metadata(spec.with_metadata().metadata)
        if spec.time_column is None:
            return [self._stage_file(self.layout.landing(spec), table)]
        dates = pc.strftime(table[spec.time_column], format="%Y-%m-%d")
        staged = []
        for date in pc.unique(dates).to_pylist():
            part = table.filter(pc.equal(dates, date))
            staged.append(self._stage_file(self.layout.landing(spec) / f"{PARTITION_COLUMN}={date}", part))
        return staged

    def _stage_file(self, directory: Path, table: pa.Table) -> tuple[Path, Path, int]:
        directory.mkdir(parents=True, exist_ok=True)
        # Time first so a listing is in arrival order; the uuid keeps concurrent
        # ingest processes from ever choosing the same name.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = directory / f".{name}.tmp"
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression=self.compression)
            handle.flush()
            os.fsync(handle.fileno())
        return temporary, directory / name, table.num_rows

    def measure_usage(self) -> int:
        """Bytes of landed Parquet files right now (others may have removed some)."""
        root = self.layout.landing_root
        total = 0
        if root.exists():
            for path in root.rglob("*.parquet"):
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        self.landing_bytes = total
        return total

    def _records(self) -> list[Path]:
        if not self.commits_dir.exists():
            return []
        return sorted(p for p in self.commits_dir.glob("*.json"))

    def _prune_commits(self) -> None:
        records = self._records()
        for old in records[:-RECENT_COMMITS_KEPT]:
            old.unlink(missing_ok=True)

    def recover(self) -> RecoveryReport:
        """Finish committed flushes, discard uncommitted ones, and return the
        input ids of recent commits by source."""
        report = RecoveryReport()
        referenced: set[Path] = set()
        for record_path in self._records():
            record = json.loads(record_path.read_text())
            for temporary_rel, final_rel in record["files"]:
                temporary = self.layout.landing_root / temporary_rel
                final = self.layout.landing_root / final_rel
                referenced.add(temporary)
                if temporary.exists() and not final.exists():
                    os.rename(temporary, final)
                    _fsync_dir(final.parent)
                    report.rolled_forward += 1
            for source, ids in record.get("inputs", {}).items():
                report.recent_inputs.setdefault(source, set()).update(ids)
        if self.layout.landing_root.exists():
            for leftover in self.layout.landing_root.rglob(".*.tmp"):
                if leftover not in referenced:
                    leftover.unlink(missing_ok=True)
                    report.rolled_back += 1
        self.measure_usage()
        if report.rolled_forward or report.rolled_back:
            log.info(
                "landing recovery: %d files of committed flushes finished, %d uncommitted files removed",
                report.rolled_forward,
                report.rolled_back,
            )
        return report
