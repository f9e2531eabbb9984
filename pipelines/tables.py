"""Flink tables over the landing zone and the lake, as DDL.

Connection settings live here and in the config, never in a job: a job's
transform only sees table names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from citylake.config import FlinkConfig
from citylake.pipelines.flink_types import columns_ddl
from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

Mode = Literal["streaming", "batch"]


def _options(options: Mapping[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())


def landing_source_ddl(
    spec: TableSpec, layout: DataLayout, mode: Mode, flink: FlinkConfig, continuous: bool = True
) -> str:
    """``landing_<table>_files``: the files ingest made durable. A continuous
    streaming job watches the directory for new files; otherwise (batch, or a
    bounded streaming run) it reads what is there.

    ``proc`` (processing time) orders deduplication: the one order Flink
    dedupes append-only in both modes. The watermark trails event time by the
    allowed lateness, so windows wait that long for late readings."""
    options = {"connector": "filesystem", "path": layout.landing(spec).as_uri(), "format": "parquet"}
    if mode == "streaming" and continuous:
        options["source.monitor-interval"] = f"{int(flink.monitor_interval_s * 1000)} ms"
    extra = ""
    partitioned = ""
    if spec.time_column is not None:
        lateness_s = math.ceil(flink.allowed_lateness_s)
        time_column = f"`{spec.time_column}`"
        if mode == "streaming" and continuous:
            # A partitioned source lists its partitions when the job is planned
            # and, finding none on a fresh site, ends at once. Unpartitioned, it
            # watches the whole tree (files are found recursively) and the date
            # is computed from event time, which is how ingest partitions anyway.
            date = f"`{PARTITION_COLUMN}` AS DATE_FORMAT({time_column}, 'yyyy-MM-dd')"
        else:
            date = f"`{PARTITION_COLUMN}` STRING"
            partitioned = f"\nPARTITIONED BY (`{PARTITION_COLUMN}`)"
        extra = (
            f",\n  {date},\n  proc AS PROCTIME(),\n"
            f"  WATERMARK FOR {time_column} AS {time_column} - INTERVAL '{lateness_s}' SECOND"
        )
    return (
        f"CREATE TEMPORARY TABLE landing_{spec.name}_files (\n  {columns_ddl(spec)}{extra}\n)"
        f"{partitioned}\nWITH (\n  {_options(options)}\n)"
    )


# Tables without a time column whose rows still say when they were true:
# a backfill's range selects them by that time (a row giving none is in no
# range; a run over everything takes it).
UNPARTITIONED_EVENT_TIME = {"devices": "COALESCE(`last_seen`, `first_seen`)"}


def landing_view_ddl(
    spec: TableSpec, time_range: tuple[datetime, datetime] | None, prefix: str = "landing"
) -> str:
    """``landing_<table>``, what jobs read: all landed files, or for a backfill
    the ``[from, to)`` event-time range (date partitions outside it are pruned).
    ``prefix="lake"``: the same view over a lake input's snapshot."""
    where = ""
    if time_range is not None:
        start, end = (t.astimezone(UTC) for t in time_range)
        bounds = (
            f"{{column}} >= TO_TIMESTAMP_LTZ({int(start.timestamp() * 1000)}, 3)"
            f"\n  AND {{column}} < TO_TIMESTAMP_LTZ({int(end.timestamp() * 1000)}, 3)"
        )
        if spec.time_column is not None:
            partitions = f"`{PARTITION_COLUMN}` BETWEEN '{start:%Y-%m-%d}' AND '{end:%Y-%m-%d}'"
            where = f"\nWHERE {partitions}\n  AND " + bounds.format(column=f"`{spec.time_column}`")
        elif spec.name in UNPARTITIONED_EVENT_TIME:
            where = "\nWHERE " + bounds.format(column=UNPARTITIONED_EVENT_TIME[spec.name])
    return f"CREATE TEMPORARY VIEW {prefix}_{spec.name} AS SELECT * FROM {prefix}_{spec.name}_files{where}"


def lake_input_source_ddl(spec: TableSpec, snapshot_dir: Path) -> str:
    """``lake_<table>_files``: a lake table's snapshot (lake_inputs.py links its
    files into ``snapshot_dir``), read once in batch mode."""
    options = {"connector": "filesystem", "path": snapshot_dir.as_uri(), "format": "parquet"}
    partition = f",\n  `{PARTITION_COLUMN}` STRING" if spec.time_column else ""
    partitioned = f"\nPARTITIONED BY (`{PARTITION_COLUMN}`)" if spec.time_column else ""
    return (
        f"CREATE TEMPORARY TABLE lake_{spec.name}_files (\n  {columns_ddl(spec)}{partition}\n)"
        f"{partitioned}\nWITH (\n  {_options(options)}\n)"
    )


def lake_sink_ddl(spec: TableSpec, layout: DataLayout, flink: FlinkConfig) -> str:
    """``lake_<table>``: zstd Parquet, one directory per date. Streaming writes
    commit files at each checkpoint (in-progress files are hidden dot-files)."""
    options = {
        "connector": "filesystem",
        "path": layout.lake(spec).as_uri(),
        "format": "parquet",
        "parquet.compression": "ZSTD",
        # INT64 timestamps (not legacy INT96) so every reader gets instants in ms.
        "parquet.write.int64.timestamp": "true",
        "parquet.timestamp.time.unit": "millis",
        "sink.rolling-policy.rollover-interval": f"{int(flink.checkpoint_interval_s * 1000)} ms",
        "sink.rolling-policy.check-interval": "1 s",
    }
    partition = f",\n  `{PARTITION_COLUMN}` STRING" if spec.time_column else ""
    partitioned = f"\nPARTITIONED BY (`{PARTITION_COLUMN}`)" if spec.time_column else ""
    return (
        f"CREATE TEMPORARY TABLE lake_{spec.name} (\n  {columns_ddl(spec)}{partition}\n)"
        f"{partitioned}\nWITH (\n  {_options(options)}\n)"
    )
