"""The edge's side of the tree: its lake's snapshots, hashed.

Each table's files are what ``TableLog.snapshot()`` lists (Flink's committed
part files and compaction's output, never an in-progress file). sha256 is
remembered across rounds in ``<data_dir>/sync/hashes.json``: a committed lake
file never changes, so one with the same path, size and modification time has
the same hash, and a round over an unchanged lake reads no data at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from citylake.lake.manifest import TableLog
from citylake.schemas import DataLayout, TableSpec
from citylake.sync.merkle import Leaf, SiteTree, TableTree
from citylake.sync.names import split_relative

log = logging.getLogger(__name__)

# A file vacuum deleted between the snapshot and its hashing: take the
# snapshot again (vacuum waits a grace period, so this is rare).
SNAPSHOT_ATTEMPTS = 3


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HashCache:
    """sha256 of lake files by (path, size, mtime), kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, tuple[int, int, str]] = {}
        self._dirty = False
        self.hashed_bytes = 0
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            raw = json.loads(path.read_text("utf-8"))
            self._entries = {k: (int(v[0]), int(v[1]), str(v[2])) for k, v in raw.items()}

    def leaf(self, key: str, path: Path) -> Leaf:
        stat = path.stat()
        known = self._entries.get(key)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            sha = known[2]
        else:
            sha = file_sha256(path)
            self.hashed_bytes += stat.st_size
            self._entries[key] = (stat.st_size, stat.st_mtime_ns, sha)
            self._dirty = True
        return Leaf(path.name, stat.st_size, sha)

    def keep_only(self, keys: Iterable[str]) -> None:
        live = set(keys)
        gone = self._entries.keys() - live
        for key in gone:
            del self._entries[key]
        self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps({k: list(v) for k, v in self._entries.items()}), "utf-8")
        os.replace(temporary, self.path)
        self._dirty = False


@dataclass(frozen=True)
class EdgeLake:
    """The edge's tree at one moment and where each leaf's file is."""

    tree: SiteTree
    paths: dict[tuple[str, str, str], Path]  # (table, partition, name) -> file

    def path(self, table: str, partition: str, leaf: Leaf) -> Path:
        return self.paths[(table, partition, leaf.name)]


def _table(layout: DataLayout, spec: TableSpec, cache: HashCache) -> tuple[TableTree, dict[str, Path]]:
    for attempt in range(SNAPSHOT_ATTEMPTS):
        snap = TableLog(layout, spec).snapshot()
        leaves: dict[str, list[Leaf]] = defaultdict(list)
        paths: dict[str, Path] = {}
        try:
            for relative in snap.files:
                partition, _ = split_relative(relative)
                path = snap.root / relative
                leaves[partition].append(cache.leaf(f"{spec.name}/{relative}", path))
                paths[relative] = path
        except FileNotFoundError as exc:
            log.info("%s: %s left the lake while hashing (attempt %d)", spec.name, exc.filename, attempt + 1)
            continue
        return TableTree.of(leaves), paths
    raise RuntimeError(f"{spec.name}: files kept vanishing while hashing the snapshot; is vacuum's grace 0?")


def edge_lake(layout: DataLayout, specs: Iterable[TableSpec], cache: HashCache) -> EdgeLake:
    tables: dict[str, TableTree] = {}
    paths: dict[tuple[str, str, str], Path] = {}
    live: list[str] = []
    for spec in specs:
        tree, files = _table(layout, spec, cache)
        tables[spec.name] = tree
        for relative, path in files.items():
            partition, name = split_relative(relative)
            paths[(spec.name, partition, name)] = path
            live.append(f"{spec.name}/{relative}")
    cache.keep_only(live)
    cache.save()
    return EdgeLake(SiteTree(tables), paths)
