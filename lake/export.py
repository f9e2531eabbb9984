"""Query results as JSON, CSV or Parquet bytes, the same for the CLI and the services."""

from __future__ import annotations

import io
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["json", "csv", "parquet"]


def to_records(table: pa.Table) -> list[dict[str, object]]:
    return table.to_pylist()


def to_json(table: pa.Table) -> bytes:
    """A JSON array of objects; instants as ISO 8601 with ``Z``, bytes as text."""

    def default(value: object) -> object:
        if isinstance(value, bytes):
            return value.decode("utf-8", "backslashreplace")
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return orjson.dumps(
        table.to_pylist(), default=default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    )


def to_csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def export(table: pa.Table, fmt: Format) -> bytes:
    return {"json": to_json, "csv": to_csv, "parquet": to_parquet}[fmt](table)
