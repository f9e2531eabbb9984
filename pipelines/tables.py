"""Flink tables over the landing zone and the lake, as DDL.

Connection settings live here and in the config, never in a job: a job's
transform only sees table names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from citylake.config import FlinkConfig
from citylake.pipelines.flink_types import columns_ddl
from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

Mode = Literal["streaming", "batch"]


def _options(options: Mapping[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())


def landing_source_ddl(spec: TableSpec, layout: DataLayout, mode: Mode, flink: FlinkConfig) -> str:
    """``landing_<table>``: the files ingest made durable. In streaming mode Flink
    watches the directory; in batch mode it reads what is there."""
    options = {"connector": "filesystem", "path": layout.landing(spec).as_uri(), "format": "parquet"}
    if mode == "streaming":
        options["source.monitor-interval"] = f"{int(flink.monitor_interval_s * 1000)} ms"
    partition = f",\n  `{PARTITION_COLUMN}` STRING" if spec.time_column else ""
    partitioned = f"\nPARTITIONED BY (`{PARTITION_COLUMN}`)" if spec.time_column else ""
    return (
        f"CREATE TEMPORARY TABLE landing_{spec.name} (\n  {columns_ddl(spec)}{partition}\n)"
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
