"""The lake's table log: what changed a table besides Flink's own commits.

Flink's file sink already commits appends atomically (an in-progress dot-file
is renamed to ``part-*`` at a checkpoint), so appends need no log entry. The
log records what only maintenance does: files compaction wrote, files it (or
retention) took out of the table, and the date before which partitions are
gone. A table's contents at a version are::

    (part files on disk, minus removed) plus added, dated >= retained_from

Each version is one JSON file ``lake/_log/<table>/<version>.json`` holding the
whole state, created with ``link`` so two writers can never both write
version N, and written before any file it removes is deleted. Removed files
stay on disk for a grace period, so a query planned on the previous version
still finds every file it listed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq

from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

LOG_DIR = "_log"
FLINK_PART_PREFIX = "part-"
COMPACTED_PREFIX = "compacted-"
# Files another site's lake shipped here (sync/): live only through ``added``,
# and only that site's sync commits may add or remove them.
SYNCED_PREFIX = "synced-"
# The newest version under a fixed name, replaced by rename at each commit:
# what readers outside Python (the DuckDB CLI's live views) read at query time
# without listing the log or racing ``prune_versions``.
CURRENT_NAME = "current.json"
# A zero-row file of the table's contract schema in its directory, so a glob
# over the table always matches something. Flink and Hadoop readers skip
# names starting with ``_``.
SCHEMA_FILE_NAME = "_schema.parquet"


class ConcurrentCommit(RuntimeError):
    """Another writer committed the version this one meant to write."""


@dataclass(frozen=True)
class Removed:
    path: str  # relative to the table's directory
    at: datetime  # when it left the table; deleted from disk a grace period later


@dataclass(frozen=True)
class Manifest:
    table: str
    version: int = 0
    operation: str = "create"
    committed_at: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))
    # Files a log commit brought in (compaction's output, files synced from
    # another site), relative to the table directory.
    added: frozenset[str] = frozenset()
    removed: tuple[Removed, ...] = ()
    retained_from: date | None = None

    @property
    def removed_paths(self) -> frozenset[str]:
        return frozenset(r.path for r in self.removed)

    def to_json(self) -> str:
        return json.dumps(
            {
                "table": self.table,
                "version": self.version,
                "operation": self.operation,
                "committed_at": self.committed_at.isoformat(),
                "added": sorted(self.added),
                "removed": [{"path": r.path, "at": r.at.isoformat()} for r in self.removed],
                "retained_from": self.retained_from.isoformat() if self.retained_from else None,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            table=data["table"],
            version=int(data["version"]),
            operation=data["operation"],
            committed_at=datetime.fromisoformat(data["committed_at"]),
            added=frozenset(data["added"]),
            removed=tuple(Removed(r["path"], datetime.fromisoformat(r["at"])) for r in data["removed"]),
            retained_from=date.fromisoformat(data["retained_from"]) if data["retained_from"] else None,
        )


def partition_date(relative: str) -> date | None:
    head = relative.split("/", 1)[0]
    if head.startswith(f"{PARTITION_COLUMN}="):
        try:
            return date.fromisoformat(head.split("=", 1)[1])
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class TableSnapshot:
    """One table at one log version: the files a reader reads, all complete."""

    spec: TableSpec
    root: Path
    manifest: Manifest
    files: tuple[str, ...]  # relative paths, sorted

    @property
    def paths(self) -> list[Path]:
        return [self.root / f for f in self.files]


class TableLog:
    """Reads and writes one table's log. Readers never lock; writers (compaction,
    retention, vacuum) serialise on a ``flock`` and commit with ``link``."""

    def __init__(self, layout: DataLayout, spec: TableSpec) -> None:
        self.spec = spec
        self.root = layout.lake(spec)
        self.dir = layout.lake_root / LOG_DIR / spec.name

    def versions(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def current(self) -> Manifest:
        versions = self.versions()
        if not versions:
            return Manifest(self.spec.name)
        return Manifest.from_json((self.dir / f"{versions[-1]:010d}.json").read_text("utf-8"))

    def flink_files(self) -> list[str]:
        """Committed Flink part files on disk, relative to the table directory."""
        if not self.root.exists():
            return []
        if self.spec.time_column is None:
            return sorted(e.name for e in os.scandir(self.root) if e.name.startswith(FLINK_PART_PREFIX))
        found: list[str] = []
        for part in os.scandir(self.root):
            if part.is_dir() and part.name.startswith(f"{PARTITION_COLUMN}="):
                found.extend(
                    f"{part.name}/{e.name}"
                    for e in os.scandir(part.path)
                    if e.name.startswith(FLINK_PART_PREFIX)
                )
        return sorted(found)

    def snapshot(self) -> TableSnapshot:
        # The manifest first, then the directory: a file compaction removes
        # after this read is still on disk (grace), so the pair is consistent.
        manifest = self.current()
        removed = manifest.removed_paths
        live = [f for f in self.flink_files() if f not in removed]
        live.extend(manifest.added)
        if manifest.retained_from is not None:
            cutoff = manifest.retained_from
            live = [f for f in live if (d := partition_date(f)) is None or d >= cutoff]
        return TableSnapshot(self.spec, self.root, manifest, tuple(sorted(live)))

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".writer.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def commit(self, base: Manifest, operation: str, **changes: object) -> Manifest:
        """Write ``base`` with ``changes`` as the next version. Raises
        ``ConcurrentCommit`` if someone else wrote that version first."""
        new = replace(
            base,
            version=base.version + 1,
            operation=operation,
            committed_at=datetime.now(UTC),
            **changes,  # type: ignore[arg-type]
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.dir / f".{uuid.uuid4().hex}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(new.to_json())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, self.dir / f"{new.version:010d}.json")
        except FileExistsError:
            raise ConcurrentCommit(
                f"{self.spec.name}: version {new.version} was committed by another writer"
            ) from None
        finally:
            temporary.unlink()
        self._fsync_dir()
        self._publish(new)
        return new

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _publish(self, manifest: Manifest) -> None:
        temporary = self.dir / f".{uuid.uuid4().hex}.current.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(manifest.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.dir / CURRENT_NAME)

    @property
    def current_path(self) -> Path:
        return self.dir / CURRENT_NAME

    @property
    def schema_file(self) -> Path:
        return self.root / SCHEMA_FILE_NAME

    def publish_for_readers(self) -> None:
        """Make sure ``current.json`` names the newest version and the schema
        file exists: a table no commit has touched yet, or a lake written
        before these files existed, gets them here."""
        with self.writer():
            manifest = self.current()
            try:
                published = Manifest.from_json(self.current_path.read_text("utf-8")).version
            except (FileNotFoundError, ValueError, KeyError):
                published = -1
            if published != manifest.version:
                self._publish(manifest)
            if not self.schema_file.exists():
                self.root.mkdir(parents=True, exist_ok=True)
                temporary = self.root / f".{uuid.uuid4().hex}.schema.tmp"
                pq.write_table(self.spec.schema.empty_table(), temporary)
                os.replace(temporary, self.schema_file)

    def prune_versions(self, keep: int = 20) -> None:
        """Old versions are history only; readers read the newest."""
        for version in self.versions()[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{version:010d}.json").unlink()


def snapshot(layout: DataLayout, spec: TableSpec) -> TableSnapshot:
    return TableLog(layout, spec).snapshot()
