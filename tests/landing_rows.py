"""What an ingest runner landed, read back the way the jobs read it, and the
runner a test builds from a city config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from citylake.config import load_config
from citylake.ingest.base import Source
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout, table


def landed(layout: DataLayout, name: str) -> list[dict[str, Any]]:
    """Every row landed in table ``name``, in landing order."""
    # Landing files are named by write time: sorting by name is landing order.
    files = sorted(layout.landing(table(name)).rglob("*.parquet"), key=lambda f: f.name)
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def make_runner(
    config_path: Path, policy: FlushPolicy | None = None, sources: list[Source] | None = None
) -> tuple[IngestRunner, DataLayout]:
    """A runner over the config's sources (or ``sources``), and its layout."""
    loaded = load_config(config_path)
    layout = DataLayout(loaded.config.data_dir)
    built = build_sources(loaded) if sources is None else sources
    return IngestRunner(built, layout, loaded.config.site, policy), layout


def reading(ts: int, value: float = 1.0, device: str = "d1") -> dict[str, object]:
    """A readings row as an adapter emits it (the buffer's and writer's tests)."""
    return {
        "device_id": device,
        "ts": ts,
        "metric": "m",
        "value": value,
        "text": None,
        "unit": None,
        "quality": 0,
        "source": "s",
        "site": "x",
        "ingest_ts": ts,
    }
