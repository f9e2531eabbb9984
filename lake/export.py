"""Query results as JSON, CSV or Parquet bytes, the same for the CLI and the services."""

from __future__ import annotations

import io
from typing import Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["json", "csv", "parquet"]


def _instants_as_text(table: pa.Table) -> pa.Table:
    """Timestamps as ISO 8601 UTC with milliseconds (the lake's precision): 2025-11-25T12:02:03.456Z."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            column = pc.cast(table.column(index), pa.timestamp("ms", tz="UTC"))
            text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")
            table = table.set_column(index, pa.field(field.name, pa.string()), text)
    return table


def to_json(table: pa.Table) -> bytes:
    """A JSON array of objects; instants as ISO 8601 with ``Z``, bytes as text."""
    table = _instants_as_text(table)

    def default(value: object) -> object:
        if isinstance(value, bytes):
            return value.decode("utf-8", "backslashreplace")
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return orjson.dumps(table.to_pylist(), default=default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def to_csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(_instants_as_text(table), sink)
    return sink.getvalue()


def to_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def export(table: pa.Table, fmt: Format) -> bytes:
    return {"json": to_json, "csv": to_csv, "parquet": to_parquet}[fmt](table)
