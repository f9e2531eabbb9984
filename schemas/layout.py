"""Where each table lives under ``data_dir``.

``landing/<table>/date=YYYY-MM-DD/`` holds what ingest made durable and not yet
processed; ``lake/<table>/date=YYYY-MM-DD/`` holds what the pipelines wrote.
Both are Hive-style partitions so Flink, DuckDB and pyarrow all read the
partition column without configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from citylake.schemas.tables import TableSpec

PARTITION_COLUMN = "date"


@dataclass(frozen=True)
class DataLayout:
    """The directory tree under one ``data_dir``."""

    data_dir: Path

    @property
    def landing_root(self) -> Path:
        return self.data_dir / "landing"

    @property
    def lake_root(self) -> Path:
        return self.data_dir / "lake"

    @property
    def checkpoints(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def landing(self, spec: TableSpec) -> Path:
        return self.landing_root / spec.name

    def lake(self, spec: TableSpec) -> Path:
        return self.lake_root / spec.name

    def lake_glob(self, spec: TableSpec) -> str:
        """Committed lake files only: Flink's in-progress files start with a dot."""
        if spec.time_column is None:
            return str(self.lake(spec) / "part-*")
        return str(self.lake(spec) / f"{PARTITION_COLUMN}=*" / "part-*")

    def landing_glob(self, spec: TableSpec) -> str:
        return str(self.landing(spec) / f"{PARTITION_COLUMN}=*" / "*.parquet")
