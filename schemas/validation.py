"""Row-level validation against the table schemas.

Adapters hand rows to the batcher as plain dicts (timestamps as integer epoch
milliseconds). ``validate_row`` returns ``None`` for a good row or one reason
naming the table, the column and what was wrong, which is what the ``rejected``
table stores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from citylake.schemas.tables import REJECTED_RAW_LIMIT, TableSpec

# 2000-01-01 .. 2100-01-01 in epoch milliseconds: a reading outside is a unit
# mistake (seconds or microseconds sent as milliseconds) or a broken clock.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
MAX_TEXT_CHARS = 4096


@dataclass(frozen=True)
class RowError:
    """Why one row was refused."""

    table: str
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}: {self.reason}"


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _check_value(spec: TableSpec, name: str, dtype: pa.DataType, value: object) -> RowError | None:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_timestamp(dtype):
        if isinstance(value, bool) or not isinstance(value, int):
            return RowError(spec.name, name, f"expected epoch milliseconds (int), got {_describe(value)}")
        if not MIN_TS_MS <= value < MAX_TS_MS:
            return RowError(spec.name, name, f"timestamp {value} ms is outside 2000..2100")
    elif pa.types.is_floating(dtype):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return RowError(spec.name, name, f"expected a number, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            return RowError(spec.name, name, f"expected a finite number, got {value}")
    elif pa.types.is_integer(dtype):
        if isinstance(value, bool) or not isinstance(value, int):
            return RowError(spec.name, name, f"expected an integer, got {_describe(value)}")
        bits = dtype.bit_width
        low, high = (0, 2**bits - 1) if pa.types.is_unsigned_integer(dtype) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if not low <= value <= high:
            return RowError(spec.name, name, f"{value} does not fit {dtype}")
    elif pa.types.is_string(dtype):
        if not isinstance(value, str):
            return RowError(spec.name, name, f"expected text, got {_describe(value)}")
        if len(value) > MAX_TEXT_CHARS:
            return RowError(spec.name, name, f"text of {len(value)} chars exceeds {MAX_TEXT_CHARS}")
    elif pa.types.is_binary(dtype):
        if not isinstance(value, bytes):
            return RowError(spec.name, name, f"expected bytes, got {_describe(value)}")
    return None


def validate_row(spec: TableSpec, row: Mapping[str, object]) -> RowError | None:
    """The first problem with ``row`` for table ``spec``, or ``None`` if it fits."""
    for name in spec.required:
        if row.get(name) is None:
            return RowError(spec.name, name, "missing (required)")
    for field in spec.schema:
        value = row.get(field.name)
        if value is None:
            continue
        error = _check_value(spec, field.name, field.type, value)
        if error is not None:
            return error
    unknown = set(row) - set(spec.schema.names)
    if unknown:
        return RowError(spec.name, sorted(unknown)[0], "not a column of this table")
    return None


def truncate_raw(raw: bytes) -> bytes:
    """Raw input as kept in ``rejected.raw``."""
    return raw[:REJECTED_RAW_LIMIT]
