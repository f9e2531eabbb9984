"""The edge: protocol adapters into durable landing Parquet (ingest/README.md).

Floor 2: imports schemas/ and config only.
"""

# The room is reached through the link citylake/ingest; imported as plain
# `ingest` (from the repository root) every module would exist twice, with two
# sets of classes and Prometheus collectors.
if __name__ != "citylake.ingest":
    raise ImportError(f"import citylake.ingest, not {__name__}: the rooms have one import name")
