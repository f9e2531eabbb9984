"""SQL results as bytes: JSON, an Arrow IPC stream, CSV or Parquet.

Analyst SQL can return any DuckDB type, so JSON needs more care than the typed
routes: HUGEINT sums arrive as 38-digit decimals, intervals as month/day/nano
triples, blobs as bytes. Each gets a faithful JSON form, and anything
unforeseen its text, so no result type turns into a 500.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from citylake.lake.export import to_csv, to_parquet
from citylake.services.query.errors import bad_request
from citylake.services.query.negotiation import ARROW_STREAM, JSON, arrow_stream

_INT64 = 2**63


class SqlFormat(StrEnum):
    json = "json"
    arrow = "arrow"
    csv = "csv"
    parquet = "parquet"


MEDIA_TYPES = {
    SqlFormat.json: JSON,
    SqlFormat.arrow: ARROW_STREAM,
    SqlFormat.csv: "text/csv; charset=utf-8",
    SqlFormat.parquet: "application/vnd.apache.parquet",
}


def _iso_duration(months: int, days: int, nanoseconds: int) -> str:
    seconds = nanoseconds / 1e9
    return f"P{months}M{days}DT{seconds:g}S"


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            integral = int(value)
            # Beyond 64 bits orjson (and most JSON readers) lose the number: text keeps it.
            return integral if -_INT64 <= integral < 2 * _INT64 else str(integral)
        as_float = float(value)
        return as_float if math.isfinite(as_float) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, timedelta):
        return _iso_duration(0, value.days, (value.seconds * 10**6 + value.microseconds) * 1000)
    if isinstance(value, tuple) and hasattr(value, "nanoseconds"):  # pyarrow's MonthDayNano
        months, days, nanoseconds = value
        return _iso_duration(months, days, nanoseconds)
    if isinstance(value, datetime | date):  # subclasses orjson refuses, e.g. pandas' Timestamp
        return value.isoformat()
    return str(value)


def _instants_as_text(table: pa.Table) -> pa.Table:
    """Top-level timestamps as ISO 8601 text at their own precision; zoned ones
    in UTC with ``Z``. Arrow formats nanoseconds that Python's datetime cannot hold."""
    for index, field in enumerate(table.schema):
        if not pa.types.is_timestamp(field.type):
            continue
        column = table.column(index)
        if field.type.tz is not None:
            column = pc.cast(column, pa.timestamp(field.type.unit, tz="UTC"))
            text = pc.binary_join_element_wise(pc.strftime(column, format="%Y-%m-%dT%H:%M:%S"), "Z", "")
        else:
            text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
        table = table.set_column(index, pa.field(field.name, pa.string()), text)
    return table


def to_json(table: pa.Table, types: list[str]) -> bytes:
    table = _instants_as_text(table)
    columns = [{"name": name, "type": type_} for name, type_ in zip(table.column_names, types, strict=True)]
    # Column-wise to Python, then zipped into rows: to_pylist() would build one
    # dict per row and silently merge two columns that share a name.
    rows = list(zip(*(column.to_pylist() for column in table.columns), strict=True)) if columns else []
    try:
        return orjson.dumps(
            {"columns": columns, "rows": rows, "row_count": table.num_rows},
            default=_json_default,
            option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
        )
    except orjson.JSONEncodeError as exc:
        raise bad_request(f"the result cannot be written as JSON ({exc}); ask for format arrow") from None


def encode(table: pa.Table, types: list[str], fmt: SqlFormat) -> bytes:
    try:
        if fmt is SqlFormat.json:
            return to_json(table, types)
        if fmt is SqlFormat.arrow:
            return arrow_stream(table)
        if fmt is SqlFormat.csv:
            return to_csv(table)
        return to_parquet(table)
    except (pa.ArrowException, ValueError) as exc:
        raise bad_request(
            f"the result cannot be written as {fmt.value} ({exc}); ask for format json or arrow"
        ) from None
