"""The lake: Parquet under ``<data_dir>/lake/`` and the DuckDB views over it.

Floor 3: imports ingest/ (the landing zone it collects), schemas/ and config.
"""

# The room is reached through the link citylake/lake; imported as plain
# `lake` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.lake":
    raise ImportError(f"import citylake.lake, not {__name__}: the rooms have one import name")

from citylake.lake.catalog import SERVICE_REFRESH_S, Lake, duckdb_type

__all__ = ["SERVICE_REFRESH_S", "Lake", "duckdb_type"]
