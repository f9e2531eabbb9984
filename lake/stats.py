"""Files, rows, bytes and time range of each lake table, from Parquet footers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow.parquet as pq

from citylake.schemas import PARTITION_COLUMN, TABLES, DataLayout


@dataclass(frozen=True)
class TableStats:
    table: str
    files: int
    rows: int
    bytes: int
    first_date: date | None
    last_date: date | None


def table_stats(layout: DataLayout) -> list[TableStats]:
    stats = []
    for spec in TABLES.values():
        root = layout.lake(spec)
        pattern = "part-*" if spec.time_column is None else f"{PARTITION_COLUMN}=*/part-*"
        files = sorted(root.glob(pattern)) if root.exists() else []
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        dates = sorted(
            date.fromisoformat(f.parent.name.split("=", 1)[1]) for f in files if "=" in f.parent.name
        )
        stats.append(
            TableStats(
                spec.name, len(files), rows, size, dates[0] if dates else None, dates[-1] if dates else None
            )
        )
    return stats
