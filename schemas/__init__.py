"""The contract every floor shares: table schemas, validation, lake layout.

Floor 1: imports nothing from citylake but itself.
"""

# The room is reached through the link citylake/schemas; imported as plain
# `schemas` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.schemas":
    raise ImportError(f"import citylake.schemas, not {__name__}: the rooms have one import name")

from citylake.schemas.layout import PARTITION_COLUMN, DataLayout
from citylake.schemas.tables import (
    SCHEMA_VERSION,
    TABLES,
    EventKind,
    Quality,
    TableSpec,
    table,
)
from citylake.schemas.validation import RowError, truncate_raw, validate_row

__all__ = [
    "PARTITION_COLUMN",
    "SCHEMA_VERSION",
    "TABLES",
    "DataLayout",
    "EventKind",
    "Quality",
    "RowError",
    "TableSpec",
    "table",
    "truncate_raw",
    "validate_row",
]
