"""A lake table as a batch job's input: the files of its snapshot when the run
starts, hard-linked into a directory of the run's own.

Flink's filesystem source reads a directory. The lake's directory holds more
than the table: files compaction replaced stay there until vacuum's grace
ends, so a scan of it would read those rows twice. The snapshot
(lake/manifest.py) says which files are the table; linking exactly those
gives Flink a directory that is the table, and a hard link keeps a file
readable for the whole run even if vacuum removes the lake's name for it.
Streaming mode is refused: a directory watched for new files would see each
compaction output as new rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

from citylake.lake.manifest import TableLog
from citylake.lake.registry import lake_tables
from citylake.schemas import DataLayout, TableSpec

# Runs' link directories older than this are removed when a run starts (a
# batch run longer than this would lose its input: none is near it).
KEEP_S = 7 * 24 * 3600


class LakeInputRefused(ValueError):
    """A lake input that cannot be read as asked (unknown table, streaming mode)."""


def lake_input_specs(layout: DataLayout, names: list[str]) -> list[TableSpec]:
    known = lake_tables(layout)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LakeInputRefused(
            f"lake input {', '.join(map(repr, unknown))} is no lake table; "
            f"lake tables: {', '.join(sorted(known))}"
        )
    return [known[n] for n in names]


def runs_root(layout: DataLayout) -> Path:
    return layout.data_dir / "tmp" / "lake-inputs"


def link_snapshot(layout: DataLayout, spec: TableSpec, run_dir: Path) -> Path:
    """``run_dir/<table>/``: one link per file of the table's snapshot, in the
    lake's own partition directories."""
    snapshot = TableLog(layout, spec).snapshot()
    target = run_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    for relative in snapshot.files:
        link = target / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(snapshot.root / relative, link)
        except OSError:
            shutil.copy2(snapshot.root / relative, link)  # another file system than the lake's
    return target


def new_run_dir(layout: DataLayout, key: str) -> Path:
    root = runs_root(layout)
    if root.exists():
        cutoff = time.time() - KEEP_S
        for old in root.iterdir():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
    run_dir = root / f"{key}-{uuid.uuid4().hex[:12]}"
    run_dir.mkdir(parents=True)
    return run_dir
