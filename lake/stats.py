"""Files, rows, bytes and time range of each lake table's current snapshot,
from Parquet footers (no data pages are read)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.parquet as pq

from citylake.lake.manifest import TableLog
from citylake.lake.registry import lake_tables
from citylake.schemas import DataLayout


@dataclass(frozen=True)
class TableStats:
    table: str
    version: int
    files: int
    rows: int
    bytes: int
    first: datetime | None
    last: datetime | None


def _as_utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # Flink writes UTC instants without the "adjusted to UTC" flag.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_stats(layout: DataLayout) -> list[TableStats]:
    stats = []
    for spec in lake_tables(layout).values():
        snap = TableLog(layout, spec).snapshot()
        rows = size = 0
        first: datetime | None = None
        last: datetime | None = None
        for path in snap.paths:
            meta = pq.ParquetFile(path).metadata
            rows += meta.num_rows
            size += path.stat().st_size
            if spec.time_column is None:
                continue
            index = meta.schema.names.index(spec.time_column) if spec.time_column in meta.schema.names else -1
            for g in range(meta.num_row_groups if index >= 0 else 0):
                column = meta.row_group(g).column(index)
                if column.statistics is None or not column.statistics.has_min_max:
                    continue
                low, high = _as_utc(column.statistics.min), _as_utc(column.statistics.max)
                if low is not None and (first is None or low < first):
                    first = low
                if high is not None and (last is None or high > last):
                    last = high
        stats.append(TableStats(spec.name, snap.manifest.version, len(snap.files), rows, size, first, last))
    return stats
