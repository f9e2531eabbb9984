"""What the region checks in an uploaded lake file before a commit makes it live.

A sha256 proves the bytes arrived as sent, not that they belong in the
region's lake. A file whose ``ts`` is text would break every region query of
the table (the views cast each column to the contract's type), and a file of
edge A whose ``site`` column says B would plant rows in B's name. So each file
is opened as Parquet and held to the table's contract (``schemas/``): every
required column present, every contract column of a type the views can cast
(the same family: a Flink INT for the contract's uint8 is fine, text for a
timestamp is not), and, where the table has a ``site`` column, every row of
the edge's own site.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from citylake.schemas import TableSpec

SITE_COLUMN = "site"
# Rows read per batch when checking the site column: bounds memory whatever the file's size.
BATCH_ROWS = 65_536


class InvalidUpload(ValueError):
    """An uploaded file that must not enter the lake; the message says why."""


def type_family(dtype: pa.DataType) -> str:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "binary"
    return str(dtype)


def _compatible(contract: pa.DataType, found: pa.DataType) -> bool:
    want, got = type_family(contract), type_family(found)
    # Integers cast to a float column without loss of meaning.
    return want == got or (want == "float" and got == "integer")


def check_lake_file(path: Path, spec: TableSpec, site: str) -> int:
    """Raise ``InvalidUpload`` unless ``path`` is a Parquet file of ``spec``'s
    contract whose rows all belong to ``site``; returns its row count."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidUpload(f"not a readable Parquet file ({exc})") from None
    columns = {field.name: field.type for field in schema}
    missing = [name for name in spec.required if name not in columns]
    if missing:
        raise InvalidUpload(f"required columns missing: {', '.join(missing)}")
    for field in spec.schema:
        found = columns.get(field.name)
        if found is not None and not _compatible(field.type, found):
            raise InvalidUpload(
                f"column {field.name!r} is {found}, but the {spec.name} table's contract has "
                f"{type_family(field.type)} ({field.type})"
            )
    # A rollup file from before rollups carried a site (spec.added) has no
    # column to check; its rows are NULL-site at every tier.
    if SITE_COLUMN in spec.schema.names and SITE_COLUMN in columns:
        _check_site(parquet, site)
    rows: int = parquet.metadata.num_rows
    return rows


def _check_site(parquet: pq.ParquetFile, site: str) -> None:
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[SITE_COLUMN]):
            column = batch.column(0)
            if column.null_count:
                raise InvalidUpload(
                    f"{column.null_count} rows have no site; every row must be of site {site!r}"
                )
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            others = pc.unique(pc.filter(column, pc.not_equal(column, pa.scalar(site, column.type))))
            if len(others):
                shown = ", ".join(repr(v) for v in others.to_pylist()[:3])
                raise InvalidUpload(
                    f"rows of site {shown} in an upload of site {site!r}: an edge ships only its own rows"
                )
    except pa.ArrowException as exc:
        raise InvalidUpload(f"the site column cannot be read ({exc})") from None
