"""The lake: Parquet under ``<data_dir>/lake/`` and the DuckDB views over it.

Floor 2: imports schemas/ and config only.
"""

from citylake.lake.catalog import SERVICE_REFRESH_S, Lake, duckdb_type

__all__ = ["SERVICE_REFRESH_S", "Lake", "duckdb_type"]
