"""Flink SQL DDL columns derived from the Arrow schemas in schemas/.

The table contract is written once (schemas/tables.py); Flink sees the same
columns through this mapping, so a schema change cannot drift between layers.
"""

from __future__ import annotations

import pyarrow as pa

from citylake.schemas import TableSpec


def flink_type(dtype: pa.DataType) -> str:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "STRING"
    if pa.types.is_timestamp(dtype):
        # Event times are instants: LTZ keeps them UTC whatever the JVM zone is.
        return "TIMESTAMP_LTZ(3)" if dtype.tz else "TIMESTAMP(3)"
    if pa.types.is_float64(dtype):
        return "DOUBLE"
    if pa.types.is_float32(dtype):
        return "FLOAT"
    if pa.types.is_int64(dtype) or pa.types.is_uint32(dtype):
        return "BIGINT"
    # Parquet stores uint8/uint16 as annotated INT32; Flink reads them as INT.
    if pa.types.is_integer(dtype):
        return "INT"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    if pa.types.is_binary(dtype):
        return "BYTES"
    raise TypeError(f"no Flink SQL type for Arrow {dtype}")


def columns_ddl(spec: TableSpec) -> str:
    return ",\n  ".join(f"`{f.name}` {flink_type(f.type)}" for f in spec.schema)
