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


def _check_timestamp(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected epoch milliseconds (int), got {_describe(value)}"
    if not MIN_TS_MS <= value < MAX_TS_MS:
        return f"timestamp {value} ms is outside 2000..2100"
    return None


def _check_float(value: object) -> str | None:
    # bool is an int in Python and 1.0/0.0 in Arrow: a switch state is a number.
    if not isinstance(value, int | float):
        return f"expected a number, got {_describe(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value}"
    return None


def _check_integer(value: object, dtype: pa.DataType) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer, got {_describe(value)}"
    bits = dtype.bit_width
    if pa.types.is_unsigned_integer(dtype):
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return None if low <= value <= high else f"{value} does not fit {dtype}"


def _check_text(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected text, got {_describe(value)}"
    if len(value) > MAX_TEXT_CHARS:
        return f"text of {len(value)} chars exceeds {MAX_TEXT_CHARS}"
    return None


def _check_value(dtype: pa.DataType, value: object) -> str | None:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_timestamp(dtype):
        return _check_timestamp(value)
    if pa.types.is_floating(dtype):
        return _check_float(value)
    if pa.types.is_integer(dtype):
        return _check_integer(value, dtype)
    if pa.types.is_string(dtype):
        return _check_text(value)
    if pa.types.is_binary(dtype) and not isinstance(value, bytes):
        return f"expected bytes, got {_describe(value)}"
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
        reason = _check_value(field.type, value)
        if reason is not None:
            return RowError(spec.name, field.name, reason)
    unknown = set(row) - set(spec.schema.names)
    if unknown:
        return RowError(spec.name, sorted(unknown)[0], "not a column of this table")
    return None


def truncate_raw(raw: bytes) -> bytes:
    """Raw input as kept in ``rejected.raw``."""
    return raw[:REJECTED_RAW_LIMIT]
