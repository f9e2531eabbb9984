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

The landing collector (lake/landing_gc.py) removes files the lake has
consumed and then ``forget_collected()`` drops them from the commit records,
so recovery can tell a collected file from a lost one.

A committed record whose files are gone (neither temporary nor final: a
disk that lost them, a hand that deleted them) is repaired loudly: logged
as an error, moved to ``_commits/broken/`` for the operator, reported in
``RecoveryReport.missing`` (the runner's health says so), and its input ids
are *not* remembered as landed, so a peer that redelivers them is taken
again rather than dropped as a duplicate of rows that no longer exist.
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
    # Files named by committed records but found nowhere on disk.
    missing: list[str] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
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
                self._stage(spec, batch, staged)
            if not staged and not inputs:
                return []
            self._make_dir(self.commits_dir)
            root = self.layout.landing_root
            record = {
                "files": [[str(t.relative_to(root)), str(f.relative_to(root))] for t, f, _ in staged],
                "inputs": {source: list(ids) for source, ids in (inputs or {}).items() if ids},
            }
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
            _write_durably(self.commits_dir / name, json.dumps(record).encode())
        except BaseException:
            # Before the commit point (disk full, I/O error): nothing of the
            # flush stays, so the caller can retry it whole.
            for temporary, _, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        # Past the commit point the flush is landed: a failure here must not
        # make the caller write it again. What is left undone, recover() at
        # the next start finishes from the record.
        landed = []
        try:
            for temporary, final, rows in staged:
                os.rename(temporary, final)
                landed.append(LandedFile(final, rows, final.stat().st_size))
            for directory in {final.parent for _, final, _ in staged}:
                _fsync_dir(directory)
        except OSError:
            log.exception(
                "landing: commit %s is durable but its renames failed; the next start finishes them", name
            )
        self.landing_bytes += sum(f.bytes for f in landed)
        self._prune_commits()
        return landed

    def write(self, spec: TableSpec, batch: pa.RecordBatch) -> list[LandedFile]:
        """One table's batch as its own commit."""
        return self.commit([(spec, batch)])

    def _stage(self, spec: TableSpec, batch: pa.RecordBatch, staged: list[tuple[Path, Path, int]]) -> None:
        """Write ``batch``'s files under temporary names, appending each to ``staged``."""
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]).replace_schema_metadata(spec.with_metadata().metadata)
        if spec.time_column is None:
            staged.append(self._stage_file(self.layout.landing(spec), table))
            return
        # A cast to date32 is the UTC day (the column's zone) at ~1/30 of the
        # cost of strftime; a flush is nearly always one day, written unfiltered.
        days = pc.cast(table[spec.time_column], pa.date32())
        bounds = pc.min_max(days)
        first, last = bounds["min"].as_py(), bounds["max"].as_py()
        for day in [first] if first == last else pc.unique(days).to_pylist():
            part = table if first == last else table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            directory = self.layout.landing(spec) / f"{PARTITION_COLUMN}={day.isoformat()}"
            staged.append(self._stage_file(directory, part))

    def _make_dir(self, directory: Path) -> None:
        """``mkdir -p`` whose new entries survive a power cut: each directory
        created is fsynced in its parent before a commit record names it."""
        created = []
        probe = directory
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        if not created:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for new in reversed(created):
            _fsync_dir(new.parent)

    def _stage_file(self, directory: Path, table: pa.Table) -> tuple[Path, Path, int]:
        self._make_dir(directory)
        # Time first so a listing is in arrival order; the uuid keeps concurrent
        # ingest processes from ever choosing the same name.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = directory / f".{name}.tmp"
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, compression=self.compression)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
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

    def _set_aside(self, record_path: Path, missing: list[str]) -> None:
        broken = self.commits_dir / "broken"
        broken.mkdir(exist_ok=True)
        os.rename(record_path, broken / record_path.name)
        _fsync_dir(broken)
        _fsync_dir(self.commits_dir)
        log.error(
            "landing recovery: commit %s names %d file(s) that are on disk neither as temporary nor as "
            "final (%s%s): its rows are lost. The record is moved to %s; its inputs are not treated as "
            "landed, so a peer that redelivers them is taken again. Check the disk (dmesg, fsck).",
            record_path.name,
            len(missing),
            ", ".join(missing[:3]),
            ", ..." if len(missing) > 3 else "",
            broken,
        )

    def recover(self) -> RecoveryReport:
        """Finish committed flushes, discard uncommitted ones, and return the
        input ids of recent commits by source."""
        report = RecoveryReport()
        referenced: set[Path] = set()
        for record_path in self._records():
            record = json.loads(record_path.read_text())
            missing = []
            for temporary_rel, final_rel in record["files"]:
                temporary = self.layout.landing_root / temporary_rel
                final = self.layout.landing_root / final_rel
                referenced.add(temporary)
                if temporary.exists() and not final.exists():
                    os.rename(temporary, final)
                    _fsync_dir(final.parent)
                    report.rolled_forward += 1
                elif not temporary.exists() and not final.exists():
                    missing.append(final_rel)
            if missing:
                self._set_aside(record_path, missing)
                report.missing.extend(missing)
                continue
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


def forget_collected(layout: DataLayout, removed: set[Path]) -> int:
    """Drop ``removed`` (landing files the collector deleted) from the commit
    records that name them; returns how many records were rewritten. The
    records keep their input ids (the duplicate memory). Run by another
    process than ingest: a record ingest pruned meanwhile is left alone."""
    commits = layout.landing_root / "_commits"
    if not removed or not commits.exists():
        return 0
    root = layout.landing_root
    rewritten = 0
    for record_path in sorted(commits.glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except FileNotFoundError:
            continue
        kept = [pair for pair in record["files"] if root / pair[1] not in removed]
        if len(kept) == len(record["files"]):
            continue
        record["files"] = kept
        temporary = record_path.with_name(f".{record_path.name}.tmp")
        temporary.write_bytes(json.dumps(record).encode())
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        if not record_path.exists():  # pruned by ingest meanwhile
            temporary.unlink(missing_ok=True)
            continue
        os.replace(temporary, record_path)
        rewritten += 1
    if rewritten:
        _fsync_dir(commits)
    return rewritten
