"""The receiver's side (a region, or the centre): uploads staged per sender,
and commits that make each origin site's partitions in the receiver's lake
equal to the sender's.

Uploads are content-addressed: ``<data_dir>/sync/incoming/<site>/<sha256>-<size>.part``
grows by appends at the offset the region reports, so a cut transfer resumes
from the bytes the region has; the bytes at an offset of a given hash are
fixed, so a repeated or stale append can only write what is already there.
The last append verifies the sha256 (a mismatch discards the upload) and
renames the file to ``.done``.

A commit names, per partition, every file the edge's snapshot holds. Under the
table's writer lock it checks that each file the region lacks was uploaded and
verified, links it into the partition as ``synced-<origin>.<sha256>.parquet``,
and commits one log version that adds those files and removes the files of
the same origins the sender no longer has (compacted or retired): a reader
sees either the partition's old state or its new one, so no reading is
counted twice.

A sender writes its own data (origin: the sender) and, if it is a region
(``sync.regions`` at the receiver lists its sites), its sites' data: a region
pushing to the centre lists its edges' synced files by their names, which
name their origin. The origins a commit speaks for in a partition are the
sender's own, those it lists and those of its previous claim there
(``claims.py``); for each of them the partition becomes exactly the files
listed, whoever committed them before. The last commit about an origin's
partition wins, and each commit is a whole snapshot of it, so a file that
arrives by two paths is one file, and a reading is never counted twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from citylake.lake.manifest import Removed, TableLog, TableSnapshot, partition_date
from citylake.schemas import TABLES, DataLayout, TableSpec
from citylake.sync.claims import Claim, Claims
from citylake.sync.merkle import Leaf, SiteTree, TableTree
from citylake.sync.names import (
    InvalidName,
    SyncedName,
    check_leaf_name,
    check_partition,
    check_sha256,
    check_site,
    check_table,
    origin_of,
    split_relative,
)
from citylake.sync.upload_check import InvalidUpload, check_lake_file

log = logging.getLogger(__name__)

# Uploads nobody finished or committed for this long are dropped (an edge
# that replanned after its files were compacted never comes back for them).
STALE_UPLOAD_S = 24 * 3600
SWEEP_EVERY_S = 600


class SyncRejected(Exception):
    """A request the region refuses; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class BadRequest(SyncRejected):
    status = 422


class TableNotFound(SyncRejected):
    status = 404


class TooLarge(SyncRejected):
    status = 413


class OffsetMismatch(SyncRejected):
    status = 409


class NotUploaded(SyncRejected):
    status = 409


class ChecksumMismatch(SyncRejected):
    status = 422


class StagingFull(SyncRejected):
    status = 507


class NotYourSite(SyncRejected):
    """A file of a site the sender may not write for."""

    status = 403


class RefusedFile(SyncRejected):
    """An uploaded file that is not a lake file of the table and site."""

    status = 422


@dataclass(frozen=True)
class Limits:
    max_chunk_bytes: int
    max_file_bytes: int
    incoming_max_bytes: int


@dataclass(frozen=True)
class UploadState:
    size: int
    offset: int
    complete: bool
    sha256: str = ""

    def wire(self) -> dict[str, object]:
        return {"size": self.size, "offset": self.offset, "complete": self.complete}


@dataclass(frozen=True)
class CommitResult:
    table: str
    version: int | None  # None: the partitions already matched, nothing committed
    added: int
    removed: int
    added_bytes: int
    origins: tuple[str, ...] = ()  # the sites whose files this commit added


@dataclass(frozen=True)
class Addition:
    """A file a commit makes live: where its upload is staged, as listed, whose data."""

    staged: Path
    leaf: Leaf
    origin: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _site(site: str) -> str:
    try:
        return check_site(site)
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None


def _spec(table: str) -> TableSpec:
    try:
        return check_table(table)
    except InvalidName as exc:
        raise TableNotFound(str(exc)) from None


class RegionStore:
    """The region's lake as the sync receiver writes it."""

    def __init__(
        self, layout: DataLayout, limits: Limits, regions: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.layout = layout
        self.limits = limits
        # region -> its sites: whose data a region may write (sync.regions).
        self.regions = {region: frozenset(sites) for region, sites in (regions or {}).items()}
        self.claims = Claims(layout.data_dir)
        self.incoming = layout.data_dir / "sync" / "incoming"
        # Striped: bounded memory however many files pass, and two appends to
        # one upload never interleave.
        self._upload_locks = [threading.Lock() for _ in range(64)]
        self._swept_at = 0.0

    # -- the tree ---------------------------------------------------------

    def table_tree(self, site: str, table: str) -> tuple[TableTree, date | None]:
        """What ``site`` last committed of one table (its claim), without the
        partitions this receiver has retired."""
        _site(site)
        spec = _spec(table)
        retained_from = TableLog(self.layout, spec).current().retained_from
        return TableTree.of(self.claims.load(site, spec.name)).since(retained_from), retained_from

    def origins(self, sender: str) -> frozenset[str]:
        """The sites whose data ``sender`` may write: its own, and a region's sites."""
        return self.regions.get(sender, frozenset()) | {sender}

    def tree(self, site: str) -> tuple[SiteTree, dict[str, date]]:
        _site(site)
        tables: dict[str, TableTree] = {}
        retained: dict[str, date] = {}
        for name in TABLES:
            tables[name], retained_from = self.table_tree(site, name)
            if retained_from is not None:
                retained[name] = retained_from
        return SiteTree(tables), retained

    # -- uploads ----------------------------------------------------------

    def _staged(self, site: str, sha: str, size: int, suffix: str) -> Path:
        return self.incoming / site / f"{sha}-{size}.{suffix}"

    @contextlib.contextmanager
    def _upload_lock(self, site: str, sha: str, size: int) -> Iterator[None]:
        with self._upload_locks[hash((site, sha, size)) % len(self._upload_locks)]:
            yield

    def _check_upload(self, site: str, sha: str, size: int) -> None:
        _site(site)
        try:
            check_sha256(sha)
        except InvalidName as exc:
            raise BadRequest(str(exc)) from None
        if size < 0:
            raise BadRequest(f"invalid size {size}")
        if size > self.limits.max_file_bytes:
            raise TooLarge(
                f"a file of {size} bytes is larger than the region's max_file_bytes "
                f"({self.limits.max_file_bytes})"
            )

    def upload_state(self, site: str, sha: str, size: int) -> UploadState:
        self._check_upload(site, sha, size)
        if self._staged(site, sha, size, "done").exists():
            return UploadState(size, size, True)
        try:
            offset = self._staged(site, sha, size, "part").stat().st_size
        except FileNotFoundError:
            offset = 0
        return UploadState(size, offset, False)

    def uploads(self, site: str) -> list[UploadState]:
        """The site's uploads not yet committed, so a sender resumes each one
        without asking for it first."""
        _site(site)
        found = []
        directory = self.incoming / site
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                stem, _, suffix = entry.name.partition(".")
                sha, _, size = stem.partition("-")
                if suffix not in ("part", "done") or not size.isdigit():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    done = suffix == "done"
                    offset = int(size) if done else entry.stat().st_size
                    found.append(UploadState(int(size), offset, done, sha))
        return found

    def _incoming_bytes(self) -> int:
        """The declared sizes of the uploads staged, not the bytes on disk: a
        begun upload holds its whole size, so many slow uploads begun at once
        cannot together outgrow ``incoming_max_bytes``."""
        total = 0
        for _, _, names in os.walk(self.incoming):
            for name in names:
                stem, _, suffix = name.partition(".")
                size = stem.partition("-")[2]
                if suffix in ("part", "done") and size.isdigit():
                    total += int(size)
        return total

    def append(self, site: str, sha: str, size: int, offset: int, data: bytes) -> UploadState:
        """Write ``data`` at ``offset`` of the upload of (``sha``, ``size``)."""
        self._check_upload(site, sha, size)
        if len(data) > self.limits.max_chunk_bytes:
            raise TooLarge(
                f"a chunk of {len(data)} bytes is larger than the region's max_chunk_bytes "
                f"({self.limits.max_chunk_bytes}); set sync.chunk_bytes at most that on the edge"
            )
        if offset < 0 or offset + len(data) > size:
            raise BadRequest(
                f"a chunk of {len(data)} bytes at offset {offset} runs past the file's {size} bytes"
            )
        with self._upload_lock(site, sha, size):
            done = self._staged(site, sha, size, "done")
            if done.exists():
                return UploadState(size, size, True)
            part = self._staged(site, sha, size, "part")
            try:
                current = part.stat().st_size
            except FileNotFoundError:
                current = -1
            if offset != max(current, 0):
                raise OffsetMismatch(
                    f"the region has {max(current, 0)} bytes of this upload, not {offset}; "
                    "continue from its offset",
                    offset=max(current, 0),
                )
            if current < 0:
                if self._incoming_bytes() + size > self.limits.incoming_max_bytes:
                    raise StagingFull(
                        f"uploads not yet committed would exceed the region's incoming_max_bytes "
                        f"({self.limits.incoming_max_bytes}); retry later"
                    )
                part.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "ab") as out:
                out.write(data)
                if offset + len(data) == size:
                    out.flush()
                    os.fsync(out.fileno())
            if offset + len(data) < size:
                return UploadState(size, offset + len(data), False)
            actual = _sha256(part)
            if actual != sha:
                part.unlink()
                raise ChecksumMismatch(
                    f"the {size} bytes uploaded hash to sha256 {actual}, not {sha}; the upload was "
                    "discarded: send the file again from offset 0",
                    offset=0,
                )
            os.rename(part, done)
            _fsync_dir(done.parent)
            return UploadState(size, size, True)

    def drop_stale_uploads(self, older_than_s: float = STALE_UPLOAD_S) -> int:
        self._swept_at = time.monotonic()
        before = time.time() - older_than_s
        dropped = 0
        for dirpath, _, names in os.walk(self.incoming):
            for name in names:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < before:
                        os.unlink(path)
                        dropped += 1
        return dropped

    # -- commits ----------------------------------------------------------

    def _desired(
        self, spec: TableSpec, partitions: Mapping[str, Sequence[Leaf]]
    ) -> dict[str, dict[str, Leaf]]:
        desired: dict[str, dict[str, Leaf]] = {}
        try:
            for partition, leaves in partitions.items():
                check_partition(spec, partition)
                names: dict[str, Leaf] = {}
                for leaf in leaves:
                    check_leaf_name(leaf.name)
                    parsed = SyncedName.parse(leaf.name)
                    if parsed is not None and parsed.sha256 != leaf.sha256:
                        raise InvalidName(
                            f"file {leaf.name!r} names sha256 {parsed.sha256}, listed as {leaf.sha256}"
                        )
                    check_sha256(leaf.sha256)
                    if leaf.size < 0 or leaf.size > self.limits.max_file_bytes:
                        raise InvalidName(f"file {leaf.name!r}: invalid size {leaf.size}")
                    if leaf.name in names:
                        raise InvalidName(f"file {leaf.name!r} is listed twice in partition {partition!r}")
                    names[leaf.name] = leaf
                desired[partition] = names
        except InvalidName as exc:
            raise BadRequest(f"{spec.name}: {exc}; nothing was committed") from None
        return desired

    def _check_files(self, spec: TableSpec, to_add: Mapping[str, Addition], root: Path) -> None:
        """Each new file must be a lake file of the table, all of its origin's
        rows (sync/upload_check.py); a refused one is dropped, with its reason."""
        for relative, addition in to_add.items():
            staged, leaf = addition.staged, addition.leaf
            if self._in_place(root / relative, leaf):
                continue  # committed before under this content-addressed name: checked then
            try:
                check_lake_file(staged, spec, addition.origin)
            except InvalidUpload as exc:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
                raise RefusedFile(
                    f"{spec.name}: {relative.rsplit('/', 1)[0]}/{leaf.name} refused: {exc}; the upload was "
                    "dropped and nothing was committed",
                    file=leaf.name,
                    reason=str(exc),
                ) from None

    def _check_origins(self, sender: str, desired: Mapping[str, Mapping[str, Leaf]]) -> None:
        allowed = self.origins(sender)
        for partition, names in desired.items():
            for name in names:
                origin = origin_of(sender, name)
                if origin not in allowed:
                    raise NotYourSite(
                        f"{partition}/{name} is data of site {origin!r}; site {sender!r} may write only its "
                        f"own data and its region's sites ({', '.join(sorted(allowed))}): list {origin!r} "
                        f"under sync.regions.{sender} at this receiver if it is one of them; nothing was "
                        "committed",
                        file=name,
                        origin=origin,
                    )

    @staticmethod
    def _in_place(target: Path, leaf: Leaf) -> bool:
        try:
            return target.stat().st_size == leaf.size
        except FileNotFoundError:
            return False

    def _plan(
        self, site: str, snap: TableSnapshot, desired: Mapping[str, Mapping[str, Leaf]], claim: Claim
    ) -> tuple[dict[str, Addition], set[str]]:
        """The files a commit adds and removes: per partition and per origin the
        sender speaks for there, the listed files replace the live ones."""
        live: dict[tuple[str, str], set[str]] = defaultdict(set)  # (partition, origin) -> files
        for relative in snap.files:
            partition, basename = split_relative(relative)
            parsed = SyncedName.parse(basename)
            if parsed is not None and partition in desired:
                live[(partition, parsed.origin)].add(relative)
        to_add: dict[str, Addition] = {}
        to_remove: set[str] = set()
        cutoff = snap.manifest.retained_from
        for partition, names in desired.items():
            day = partition_date(partition)
            retired = cutoff is not None and day is not None and day < cutoff
            wanted: dict[str, set[str]] = defaultdict(set)
            adding: dict[str, Addition] = {}
            claimed = set(claim.get(partition, ()))
            superseded: set[str] = set()
            for leaf in names.values():
                origin = origin_of(site, leaf.name)
                base = str(SyncedName(origin, leaf.sha256))
                relative = f"{partition}/{base}" if partition else base
                wanted[origin].add(relative)
                if relative not in live[(partition, origin)] and not retired:
                    if leaf in claimed:
                        # This sender committed it, and another path's newer
                        # commit of the origin replaced it: this sender is
                        # behind, and must not bring the older snapshot back.
                        superseded.add(origin)
                    staged = self._staged(site, leaf.sha256, leaf.size, "done")
                    adding[relative] = Addition(staged, leaf, origin)
            if superseded:
                log.info(
                    "%s %s: %s left as another sender committed them", site, partition, sorted(superseded)
                )
            to_add |= {r: a for r, a in adding.items() if a.origin not in superseded}
            spoken_for = {site} | wanted.keys() | {origin_of(site, leaf.name) for leaf in claimed}
            for origin in spoken_for - superseded:
                to_remove |= live[(partition, origin)] - wanted[origin]
        return to_add, to_remove

    @staticmethod
    def _next_claim(claim: Claim, desired: Mapping[str, Mapping[str, Leaf]], cutoff: date | None) -> Claim:
        """The sender's claim after a commit: the committed partitions replaced,
        retired ones dropped (the receiver's retention bounds the claim)."""
        new = {p: ls for p, ls in claim.items() if p not in desired}
        new |= {p: tuple(sorted(names.values())) for p, names in desired.items() if names}
        if cutoff is None:
            return new
        return {p: ls for p, ls in new.items() if (d := partition_date(p)) is None or d >= cutoff}

    def commit(self, site: str, table: str, partitions: Mapping[str, Sequence[Leaf]]) -> CommitResult:
        """Make each named partition hold exactly the given files for every
        origin the sender speaks for there, in one log commit, and record the
        sender's claim. Nothing changes if any file is missing or refused."""
        _site(site)
        spec = _spec(table)
        desired = self._desired(spec, partitions)
        self._check_origins(site, desired)
        table_log = TableLog(self.layout, spec)
        with table_log.writer():
            snap = table_log.snapshot()
            manifest = snap.manifest
            claim = self.claims.load(site, spec.name)
            to_add, to_remove = self._plan(site, snap, desired, claim)
            absent = sorted(
                f"{a.leaf.name} ({a.leaf.sha256})"
                for relative, a in to_add.items()
                if not a.staged.exists() and not self._in_place(snap.root / relative, a.leaf)
            )
            if absent:
                raise NotUploaded(
                    f"{table}: {len(absent)} files were not uploaded (or failed their sha256 check): "
                    f"{', '.join(absent[:5])}; upload them, then commit again; nothing was committed",
                    missing=absent,
                )
            new_claim = self._next_claim(claim, desired, manifest.retained_from)
            if not to_add and not to_remove:
                if new_claim != claim:
                    self.claims.save(site, spec.name, new_claim)
                return CommitResult(table, None, 0, 0, 0)
            self._check_files(spec, to_add, snap.root)
            directories: set[Path] = set()
            for relative, a in to_add.items():
                target = snap.root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                # A file already there under this name (left by a commit that
                # crashed before its log write, or removed but within its grace)
                # holds this very content: the name holds the hash. Keep it, as
                # a query planned on an older version may be about to open it.
                if not self._in_place(target, a.leaf):
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
                    os.link(a.staged, target)
                directories.add(target.parent)
            for directory in directories:
                _fsync_dir(directory)
            now = datetime.now(UTC)
            new = table_log.commit(
                manifest,
                "sync",
                added=(manifest.added - to_remove) | set(to_add),
                # A file back in the table must leave the removed list, or
                # vacuum would delete it once that entry's grace ran out.
                removed=tuple(r for r in manifest.removed if r.path not in to_add)
                + tuple(Removed(r, now) for r in sorted(to_remove)),
            )
            self.claims.save(site, spec.name, new_claim)
        # Linked into the lake and committed: the staged names can go.
        for a in to_add.values():
            with contextlib.suppress(FileNotFoundError):
                a.staged.unlink()
        if time.monotonic() - self._swept_at > SWEEP_EVERY_S:
            self.drop_stale_uploads()
        added_bytes = sum(a.leaf.size for a in to_add.values())
        origins = sorted({a.origin for a in to_add.values()})
        log.info(
            "%s %s: version %d, %d files in (%d bytes; of %s), %d out",
            site, table, new.version, len(to_add), added_bytes, ", ".join(origins) or "-", len(to_remove),
        )  # fmt: skip
        return CommitResult(table, new.version, len(to_add), len(to_remove), added_bytes, tuple(origins))
