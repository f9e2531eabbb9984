"""Small lake tables written the way the jobs write them (Hive date partitions,
part-* files, plain string columns, INT64 ms timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec, table

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


def _as_written(spec: TableSpec) -> pa.Schema:
    """The contract's schema as the jobs write it: dictionary columns as plain strings."""
    fields = [
        pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type, f.nullable)
        for f in spec.schema
    ]
    return pa.schema(fields)


def write_lake_table(
    data_dir: Path, table_name: str, rows: list[dict[str, object]], name: str = "part-0"
) -> list[Path]:
    """``rows`` as committed files of ``table_name`` where the layout puts them:
    one file per date partition of the table's time column (the table's root if
    it has none), written hidden and then renamed, as Flink commits."""
    spec = table(table_name)
    root = DataLayout(data_dir).lake(spec)
    by_directory: dict[Path, list[dict[str, object]]] = {}
    for row in rows:
        directory = root
        if spec.time_column is not None:
            instant = row[spec.time_column]
            assert isinstance(instant, datetime), f"{spec.time_column} must be a datetime"
            directory = root / f"{PARTITION_COLUMN}={instant.astimezone(UTC).date().isoformat()}"
        by_directory.setdefault(directory, []).append(row)
    paths = []
    for directory, part in by_directory.items():
        directory.mkdir(parents=True, exist_ok=True)
        hidden, path = directory / f".{name}.inprogress", directory / name
        pq.write_table(pa.Table.from_pylist(part, schema=_as_written(spec)), hidden, compression="zstd")
        hidden.rename(path)
        paths.append(path)
    return paths


def device(device_id: str, **columns: object) -> dict[str, object]:
    """A `devices` row: every column null but those given."""
    return {f.name: None for f in table("devices").schema} | {"device_id": device_id, **columns}


def device_event(
    device_id: str, ts: datetime, kind: str, source: str = "cams", **columns: object
) -> dict[str, object]:
    return {
        "device_id": device_id,
        "ts": ts,
        "kind": kind,
        "attributes": None,
        "source": source,
        "site": "s1",
        "ingest_ts": ts,
        **columns,
    }


def alert(
    alert_id: str,
    device_id: str,
    started_at: datetime,
    ended_at: datetime | None = None,
    rule: str = "hot",
    **columns: object,
) -> dict[str, object]:
    return {
        "alert_id": alert_id,
        "device_id": device_id,
        "metric": "temp",
        "rule": rule,
        "severity": "warning",
        "started_at": started_at,
        "ended_at": ended_at,
        "value": 42.0,
        "message": None,
        **columns,
    }
