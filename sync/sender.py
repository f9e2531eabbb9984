"""The edge's side: one round compares the edge's tree with the region's top
down, uploads the files the region lacks (resumable, paced, compressed where
it pays) and commits each changed partition's new state.

A round plans from one snapshot of the edge's lake. If the region stays
unreachable for ``retry_window_s`` the round gives up; the next one plans
again from a fresh snapshot (so files compacted away during an outage are not
shipped), and uploads already begun continue from the bytes the region has.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from citylake.config.models import SyncConfig
from citylake.ingest.backoff import Backoff as Doubling
from citylake.schemas import TABLES, DataLayout, TableSpec
from citylake.sync import wire
from citylake.sync.bucket import TokenBucket
from citylake.sync.credentials import edge_key
from citylake.sync.edge import EdgeLake, HashCache, edge_lake
from citylake.sync.merkle import Leaf, SiteTree, combine, differing, missing
from citylake.sync.names import origin_of

log = logging.getLogger(__name__)

# Pieces a paced body is cut into: small enough that the bucket, not the
# socket buffer, sets the pace.
PIECE = 16 * 1024
# Worth another try: the region is busy, restarting, out of staging room, or
# the request body did not arrive in time.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 507})
# A checksum mismatch at the region (bytes corrupted on the way) restarts the
# file; twice in a row means the file itself is not what the edge hashed.
CHECKSUM_ATTEMPTS = 2


class SyncFailed(RuntimeError):
    """The region refused a request; retrying it as it is will not help."""


class RegionUnreachable(RuntimeError):
    """No answer from the region for ``retry_window_s``."""


class Transient(RuntimeError):
    """One request failed in a way worth retrying."""


@dataclass
class Counters:
    payload_bytes: int = 0  # upload bodies as sent (a resent chunk counts again)
    metadata_bytes: int = 0  # tree exchange and commits: JSON both ways, as sent
    resumed_bytes: int = 0  # bytes not sent again: the region had them when an upload (re)started
    files_uploaded: int = 0
    file_bytes_uploaded: int = 0  # sizes of the files uploaded
    commits: int = 0
    files_added: int = 0  # at the region, by this round's commits
    files_removed: int = 0
    requests: int = 0
    retries: int = 0
    upload_s: float = 0.0  # time spent sending file bytes

    def add(self, other: Counters) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class PushReport:
    site: str
    started_at: str
    elapsed_s: float = 0.0
    in_sync: bool = False
    edge_root: str = ""
    region_root: str = ""
    lake_files: int = 0
    lake_bytes: int = 0
    hashed_bytes: int = 0  # edge files read to hash them (new since the last round)
    tables_differing: list[str] = field(default_factory=list)
    partitions_differing: int = 0
    partitions_skipped: int = 0  # changed under the round (a file vanished): next round
    # Files shipped per origin site: the sender's own, and a region's edges' (named in synced names).
    origins: dict[str, int] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    error: str | None = None

    @property
    def upload_rate(self) -> float:
        """Bytes sent per second while uploading (waits for the bucket included)."""
        c = self.counters
        return c.payload_bytes / c.upload_s if c.upload_s > 0 else 0.0


class Backoff:
    """Capped exponential waits with jitter, until ``window_s`` of failure."""

    def __init__(
        self,
        max_s: float,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_s, self.window_s = max_s, window_s
        self._clock, self._sleep = clock, sleep
        self._since: float | None = None
        self._doubling = Doubling(min(0.25, max_s), max_s)

    def wait(self, problem: str) -> None:
        now = self._clock()
        if self._since is None:
            self._since = now
        if now - self._since >= self.window_s:
            raise RegionUnreachable(f"region unreachable for {now - self._since:.0f}s: {problem}")
        delay = self._doubling.next() * random.uniform(0.8, 1.2)
        log.info("retrying in %.1fs: %s", delay, problem)
        self._sleep(delay)

    def reset(self) -> None:
        self._since = None
        self._doubling.reset()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("error") or body.get("detail") or body) if isinstance(body, dict) else str(body)


class RegionClient:
    """The region's receiver API for one edge site, with retries and byte counts."""

    def __init__(
        self,
        client: httpx.Client,
        site: str,
        config: SyncConfig,
        bucket: TokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self.site, self.config, self.bucket = client, site, config, bucket
        self.prefix = f"/v1/sync/sites/{site}"
        self.counters = Counters()
        self._sleep = sleep
        self.api_key = edge_key(config)

    def backoff(self) -> Backoff:
        return Backoff(self.config.retry_max_s, self.config.retry_window_s, sleep=self._sleep)

    def _paced(self, body: bytes, payload: bool) -> Iterator[bytes]:
        for start in range(0, len(body), PIECE):
            piece = body[start : start + PIECE]
            if self.bucket is not None:
                self.bucket.take(len(piece))
            if payload:
                self.counters.payload_bytes += len(piece)
            else:
                self.counters.metadata_bytes += len(piece)
            yield piece

    def _once(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        encoding: str | None = None,
        params: Mapping[str, int] | None = None,
        payload: bool = False,
        ok: Sequence[int] = (200,),
    ) -> httpx.Response:
        headers = {}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if encoding:
            headers["Content-Encoding"] = encoding
        content: Iterator[bytes] | None = None
        if body is not None:
            headers["Content-Length"] = str(len(body))
            content = self._paced(body, payload)
        self.counters.requests += 1
        try:
            response = self.client.request(
                method, self.prefix + path, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        self.counters.metadata_bytes += response.num_bytes_downloaded
        if response.status_code in ok:
            return response
        problem = f"{method} {path}: {response.status_code} {_error_text(response)}"
        if response.status_code in RETRY_STATUSES:
            raise Transient(problem)
        raise SyncFailed(problem)

    def _retried(self, method: str, path: str, value: object | None = None) -> Any:
        """A JSON request, retried until it succeeds or the window ends."""
        body = encoding = None
        if value is not None:
            body, encoding = wire.maybe_compress(wire.dumps(value))
        backoff = self.backoff()
        while True:
            try:
                return self._once(method, path, body, encoding).json()
            except Transient as exc:
                self.counters.retries += 1
                backoff.wait(str(exc))

    # -- the tree exchange ---------------------------------------------------

    def tree(self) -> tuple[str, dict[str, str], dict[str, date]]:
        answer = self._retried("GET", "/tree")
        retained = {t: date.fromisoformat(d) for t, d in answer["retained_from"].items()}
        return answer["root"], dict(answer["tables"]), retained

    def partitions(self, table: str) -> dict[str, str]:
        return dict(self._retried("GET", f"/tables/{table}/partitions")["partitions"])

    def leaves(self, table: str, partitions: Sequence[str]) -> dict[str, list[Leaf]]:
        answer = self._retried("POST", f"/tables/{table}/leaves", {"partitions": list(partitions)})
        return {p: [Leaf(n, int(s), h) for n, s, h in ls] for p, ls in answer["leaves"].items()}

    def commit(self, table: str, partitions: Mapping[str, Sequence[Leaf]]) -> dict[str, Any]:
        value = {"partitions": {p: [leaf.wire() for leaf in ls] for p, ls in partitions.items()}}
        answer: dict[str, Any] = self._retried("POST", f"/tables/{table}/commit", value)
        if answer.get("version") is not None:
            self.counters.commits += 1
        self.counters.files_added += int(answer.get("added", 0))
        self.counters.files_removed += int(answer.get("removed", 0))
        return answer

    # -- uploads ---------------------------------------------------------------

    def uploads(self) -> dict[tuple[str, int], int]:
        """(sha256, size) -> bytes the region has, of uploads not yet committed."""
        answer = self._retried("GET", "/uploads")
        return {(sha, int(size)): int(offset) for sha, size, offset in answer["uploads"]}

    def upload_state(self, leaf: Leaf) -> tuple[int, bool]:
        path = f"/uploads/{leaf.sha256}?size={leaf.size}"
        answer = self._retried("GET", path)
        return int(answer["offset"]), bool(answer["complete"])

    def upload(self, leaf: Leaf, path: Path, offset: int = 0) -> bool:
        """Send the bytes of ``path`` from ``offset`` (what the region has, as
        ``uploads()`` said); False if the region had them all."""
        self.counters.resumed_bytes += offset
        if offset >= leaf.size and leaf.size > 0:
            return False
        started = time.monotonic()
        backoff = self.backoff()
        encoder = wire.ChunkEncoder(wire.codec_level(self.config.wire_codec))
        mismatches = 0
        with open(path, "rb") as f:
            while True:
                f.seek(offset)
                data = f.read(min(self.config.chunk_bytes, leaf.size - offset))
                if len(data) != min(self.config.chunk_bytes, leaf.size - offset):
                    raise SyncFailed(f"{path}: not the {leaf.size} bytes hashed, yet lake files never change")
                body, encoding = encoder.encode(data)
                try:
                    response = self._once(
                        "PATCH",
                        f"/uploads/{leaf.sha256}",
                        body,
                        encoding,
                        params={"size": leaf.size, "offset": offset},
                        payload=True,
                        ok=(200, 409, 422),
                    )
                except Transient as exc:
                    # The chunk may or may not have landed: ask where the region is.
                    self.counters.retries += 1
                    backoff.wait(str(exc))
                    sent_from = offset
                    offset, complete = self.upload_state(leaf)
                    self.counters.resumed_bytes += max(0, offset - sent_from)
                    if complete:
                        break
                    continue
                backoff.reset()
                answer = response.json()
                if response.status_code != 200 and "offset" not in answer:
                    raise SyncFailed(f"PATCH {path.name}: {response.status_code} {_error_text(response)}")
                if response.status_code == 422:
                    mismatches += 1
                    if mismatches >= CHECKSUM_ATTEMPTS:
                        raise SyncFailed(f"{path}: {_error_text(response)}")
                    log.warning("%s: %s", path.name, _error_text(response))
                if response.status_code == 409:
                    # The region has more (or less) than this sender thought.
                    self.counters.resumed_bytes += max(0, int(answer["offset"]) - offset)
                offset = int(answer["offset"])
                if response.status_code == 200 and answer["complete"]:
                    break
        self.counters.upload_s += time.monotonic() - started
        self.counters.files_uploaded += 1
        self.counters.file_bytes_uploaded += leaf.size
        return True


class EdgeSync:
    """Rounds of edge → region sync for one edge site."""

    def __init__(
        self,
        layout: DataLayout,
        site: str,
        config: SyncConfig,
        client: httpx.Client,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        unknown = [t for t in config.tables if t not in TABLES]
        if unknown:
            raise ValueError(
                f"sync.tables names unknown tables {', '.join(unknown)}; tables: {', '.join(TABLES)}"
            )
        self.layout, self.site, self.config = layout, site, config
        self.specs: list[TableSpec] = [TABLES[t] for t in (config.tables or TABLES)]
        bucket = None
        if config.bandwidth_bytes_per_s is not None:
            bucket = TokenBucket(config.bandwidth_bytes_per_s, config.burst_bytes)
        self.region = RegionClient(client, site, config, bucket, sleep)
        self.cache = HashCache(layout.data_dir / "sync" / "hashes.json")

    def round(self) -> PushReport:
        """Compare, upload, commit; ``in_sync`` if the region then holds this
        round's snapshot of the edge. Raises ``RegionUnreachable`` or ``SyncFailed``."""
        started = time.monotonic()
        report = PushReport(self.site, datetime.now(UTC).isoformat(timespec="seconds"))
        self.region.counters = report.counters
        hashed_before = self.cache.hashed_bytes
        edge = edge_lake(self.layout, self.specs, self.cache)
        report.hashed_bytes = self.cache.hashed_bytes - hashed_before
        region_tables, retained = self._region_tables()
        view = edge.tree.since(retained)
        report.edge_root, report.region_root = view.root, combine(region_tables)
        report.lake_files, report.lake_bytes = view.files, view.bytes
        report.origins = _origins(self.site, view)
        if report.edge_root != report.region_root:
            tables = differing(view.table_hashes(), region_tables)
            report.tables_differing = tables
            for table in tables:
                self._table(edge, view, table, table in region_tables, report)
            region_tables, retained = self._region_tables()
            view = edge.tree.since(retained)
            report.edge_root, report.region_root = view.root, combine(region_tables)
        report.in_sync = report.edge_root == report.region_root
        report.elapsed_s = time.monotonic() - started
        return report

    def _region_tables(self) -> tuple[dict[str, str], dict[str, date]]:
        """The region's hashes of the tables this edge ships (a table left out
        of ``sync.tables`` stays at the region as it was)."""
        _, tables, retained = self.region.tree()
        shipped = {spec.name for spec in self.specs}
        return {t: h for t, h in tables.items() if t in shipped}, retained

    def _table(self, edge: EdgeLake, view: SiteTree, table: str, on_region: bool, report: PushReport) -> None:
        mine = view.tables.get(table)
        mine_hashes = mine.partition_hashes() if mine else {}
        theirs = self.region.partitions(table) if on_region else {}
        changed = differing(mine_hashes, theirs)
        report.partitions_differing += len(changed)
        known = [p for p in changed if p in theirs]
        region_leaves = self.region.leaves(table, known) if known else {}
        wanted = {
            p: missing(mine.partitions.get(p, ()) if mine else (), region_leaves.get(p, ())) for p in changed
        }
        staged = self.region.uploads() if any(wanted.values()) else {}
        batch: dict[str, tuple[Leaf, ...]] = {}
        batch_bytes = 0
        for partition in changed:
            leaves = mine.partitions.get(partition, ()) if mine else ()
            try:
                for leaf in wanted[partition]:
                    offset = staged.get((leaf.sha256, leaf.size), 0)
                    self.region.upload(leaf, edge.path(table, partition, leaf), offset)
                    batch_bytes += leaf.size
            except FileNotFoundError as exc:
                # Vacuumed since the snapshot: the partition has changed, and
                # the next round plans it from a fresh one.
                log.info("%s %s: %s is gone; next round", table, partition, exc.filename)
                report.partitions_skipped += 1
                continue
            batch[partition] = leaves
            if batch_bytes >= self.config.commit_batch_bytes:
                self.region.commit(table, batch)
                batch, batch_bytes = {}, 0
        if batch:
            self.region.commit(table, batch)


def _origins(site: str, view: SiteTree) -> dict[str, int]:
    found: Counter[str] = Counter(
        origin_of(site, leaf.name)
        for tree in view.tables.values()
        for leaves in tree.partitions.values()
        for leaf in leaves
    )
    return dict(sorted(found.items()))


def write_status(path: Path, report: PushReport, totals: Counters, rounds: int) -> None:
    """The last round and the totals since start, for operators and tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "last_round": {**asdict(report), "upload_rate": report.upload_rate},
        "rounds": rounds,
        "totals": asdict(totals),
        "written_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1), "utf-8")
    os.replace(temporary, path)


def status_path(layout: DataLayout) -> Path:
    return layout.data_dir / "sync" / "push-status.json"


def follow(
    sync: EdgeSync,
    stop: threading.Event,
    on_round: Callable[[PushReport], None] | None = None,
) -> Counters:
    """Rounds until ``stop`` is set: the next one at once after a round that
    shipped something, ``interval_s`` after one that found nothing to do, and
    after a pause when the region could not be reached."""
    totals = Counters()
    rounds = 0
    while not stop.is_set():
        pause = 0.0
        try:
            report = sync.round()
        except (RegionUnreachable, SyncFailed, OSError) as exc:
            report = PushReport(sync.site, datetime.now(UTC).isoformat(timespec="seconds"), error=str(exc))
            report.counters = sync.region.counters
            log.warning("sync round failed: %s", exc)
            # Unreachable: try again soon. Refused: the same request would be
            # refused again until someone acts, so do not hammer the region.
            pause = sync.config.retry_max_s if isinstance(exc, RegionUnreachable) else sync.config.interval_s
        else:
            if report.in_sync and not report.counters.commits:
                pause = sync.config.interval_s
        rounds += 1
        totals.add(report.counters)
        write_status(status_path(sync.layout), report, totals, rounds)
        if on_round is not None:
            on_round(report)
        stop.wait(pause)
    return totals
