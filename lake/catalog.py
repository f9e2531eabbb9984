"""The lake as DuckDB sees it: one view per table, named as analysts know them.

Views read committed lake files only (``part-*``; Flink's in-progress files
are hidden dot-files) and cast to the contract's types, so every client sees
the same columns whether a table has files yet or not.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from citylake.schemas import PARTITION_COLUMN, TABLES, DataLayout, TableSpec


def duckdb_type(dtype: pa.DataType) -> str:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    mapping = {
        pa.string(): "VARCHAR",
        pa.float64(): "DOUBLE",
        pa.float32(): "FLOAT",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.uint8(): "UTINYINT",
        pa.bool_(): "BOOLEAN",
        pa.binary(): "BLOB",
    }
    try:
        return mapping[dtype]
    except KeyError:
        raise TypeError(f"no DuckDB type for Arrow {dtype}") from None


def _select_list(spec: TableSpec, from_files: bool) -> str:
    columns = []
    for field in spec.schema:
        value = f'"{field.name}"' if from_files else "NULL"
        columns.append(f'CAST({value} AS {duckdb_type(field.type)}) AS "{field.name}"')
    if spec.time_column is not None:
        value = f'"{PARTITION_COLUMN}"' if from_files else "NULL"
        columns.append(f'CAST({value} AS DATE) AS "{PARTITION_COLUMN}"')
    return ", ".join(columns)


class Lake:
    """One DuckDB database with a view per table. ``cursor()`` gives a
    connection for one thread (DuckDB cursors share the database and views)."""

    def __init__(self, layout: DataLayout, database: str = ":memory:") -> None:
        self.layout = layout
        self.conn = duckdb.connect(database)
        self.conn.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._has_files: dict[str, bool] = {}
        self.refresh(force=True)

    def _table_has_files(self, spec: TableSpec) -> bool:
        root = self.layout.lake(spec)
        if spec.time_column is None:
            return any(root.glob("part-*"))
        return any(root.glob(f"{PARTITION_COLUMN}=*/part-*"))

    def view_sql(self, spec: TableSpec, has_files: bool) -> str:
        if has_files:
            glob = self.layout.lake_glob(spec).replace("'", "''")
            source = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
            return f'CREATE OR REPLACE VIEW "{spec.name}" AS SELECT {_select_list(spec, True)} FROM {source}'
        return f'CREATE OR REPLACE VIEW "{spec.name}" AS SELECT {_select_list(spec, False)} WHERE false'

    def refresh(self, force: bool = False) -> None:
        """Point a table's view at its files once it has any."""
        with self._lock:
            for spec in TABLES.values():
                if not force and self._has_files.get(spec.name):
                    continue  # a table with files keeps them: the glob re-reads each query
                has_files = self._table_has_files(spec)
                if force or self._has_files.get(spec.name) != has_files:
                    self.conn.execute(self.view_sql(spec, has_files))
                    self._has_files[spec.name] = has_files

    def cursor(self) -> duckdb.DuckDBPyConnection:
        self.refresh()
        return self.conn.cursor()

    def close(self) -> None:
        self.conn.close()
