"""The lake: Parquet under ``<data_dir>/lake/`` and the DuckDB views over it.

Floor 2: imports schemas/ and config only.
"""

from citylake.lake.catalog import Lake, duckdb_type

__all__ = ["Lake", "duckdb_type"]
