"""Small lake tables written the way the readings job writes them (Hive date
partitions, part-* files, plain string columns, INT64 ms timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def write_lake_readings(data_dir: Path, rows: list[dict[str, object]], name: str = "part-0") -> Path:
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("device_id", pa.string()),
                ("ts", pa.timestamp("ms", tz="UTC")),
                ("metric", pa.string()),
                ("value", pa.float64()),
                ("text", pa.string()),
                ("unit", pa.string()),
                ("quality", pa.int32()),
                ("source", pa.string()),
                ("site", pa.string()),
                ("ingest_ts", pa.timestamp("ms", tz="UTC")),
            ]
        ),
    )
    date = rows[0]["ts"].date().isoformat()  # type: ignore[attr-defined]
    directory = data_dir / "lake" / "readings" / f"date={date}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    pq.write_table(table, path, compression="zstd")
    return path


def reading(
    device: str, metric: str, ts: datetime, value: float | None, text: str | None = None
) -> dict[str, object]:
    return {
        "device_id": device,
        "ts": ts,
        "metric": metric,
        "value": value,
        "text": text,
        "unit": "C",
        "quality": 0,
        "source": "mqtt",
        "site": "s1",
        "ingest_ts": ts,
    }
