"""Durable landing: Arrow batches to Parquet files that survive a crash.

Each file is written under a hidden temporary name, fsynced, renamed into
place and its directory fsynced. Readers (Flink's file source, DuckDB) skip
names that start with a dot, so they see a file whole or not at all, and a
source is acknowledged only after ``write()`` returns.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec


@dataclass(frozen=True)
class LandedFile:
    path: Path
    rows: int
    bytes: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LandingWriter:
    """Writes batches of one data_dir's tables into ``landing/<table>/date=.../``."""

    def __init__(self, layout: DataLayout, compression: str = "zstd") -> None:
        self.layout = layout
        self.compression = compression

    def write(self, spec: TableSpec, batch: pa.RecordBatch) -> list[LandedFile]:
        """Write ``batch`` durably, one file per date partition it touches."""
        if batch.num_rows == 0:
            return []
        table = pa.Table.from_batches([batch]).replace_schema_metadata(spec.with_metadata().metadata)
        if spec.time_column is None:
            return [self._write_file(self.layout.landing(spec), table)]
        dates = pc.strftime(table[spec.time_column], format="%Y-%m-%d")
        landed = []
        for date in pc.unique(dates).to_pylist():
            part = table.filter(pc.equal(dates, date))
            directory = self.layout.landing(spec) / f"{PARTITION_COLUMN}={date}"
            landed.append(self._write_file(directory, part))
        return landed

    def _write_file(self, directory: Path, table: pa.Table) -> LandedFile:
        directory.mkdir(parents=True, exist_ok=True)
        # Time first so a directory listing is in arrival order; the uuid keeps
        # concurrent ingest processes from ever choosing the same name.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        final = directory / name
        temporary = directory / f".{name}.tmp"
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression=self.compression)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
        _fsync_dir(directory)
        return LandedFile(final, table.num_rows, final.stat().st_size)

    def clean_temporaries(self) -> int:
        """Remove temporary files a crash left behind; returns how many."""
        removed = 0
        if self.layout.landing_root.exists():
            for leftover in self.layout.landing_root.rglob(".*.parquet.tmp"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed
