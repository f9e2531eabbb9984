"""What sources hand to ingest, until the flush loop lands it: one
``ColumnBatcher`` per table under a lock, the rows a batcher refuses and the
inputs an adapter rejects turned into ``rejected`` rows (rate-limited per
source), the acknowledgements and input ids that travel with them.

Adapters call the ``SourceContext`` (``BufferContext``) from any thread; only
``flush()`` runs in the runner's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from prometheus_client import Counter

from citylake.ingest.base import Ack, Row
from citylake.ingest.batcher import ColumnBatcher, TimeWindow
from citylake.ingest.landing import LandedFile, LandingWriter
from citylake.ingest.metric_types import MetricTypeGuard
from citylake.ingest.metrics import IngestMetrics
from citylake.ingest.reject_budget import RejectBudget
from citylake.ingest.reject_kinds import reason_kind
from citylake.schemas import TABLES, TableSpec, table, truncate_raw

log = logging.getLogger("citylake.ingest.runner")  # the name operators filter on
REJECTED = table("rejected")
DEVICES = table("devices")
READINGS_NAME = "readings"


@dataclass(frozen=True)
class FlushPolicy:
    """A flush happens when any of these is reached."""

    max_rows: int = 50_000
    max_bytes: int = 32 * 1024 * 1024
    max_age_s: float = 0.5
    # Above this many buffered rows, ready() turns false so streaming sources
    # stop acknowledging and the broker holds the rest.
    max_buffered_rows: int = 500_000
    # Landing disk bound: at it, flushes wait (rows stay buffered, so sources
    # are held back) until the pipeline has drained landing files.
    max_landing_bytes: int | None = None
    # Bound of the (source, metric) -> type table fixed at first sight.
    max_metric_types: int = 100_000
    # Event times accepted around the ingest clock (ingest.accept_past_days,
    # ingest.accept_future_s); rows outside are rejected with the reason.
    window: TimeWindow = field(default_factory=TimeWindow)
    # Rejects a source may write, per second and as a burst (a token bucket):
    # junk datagrams or bad MQTT messages beyond it are counted
    # (citylake_ingest_rejects_dropped_total) but not written, so a flood of
    # junk cannot fill the landing zone and stop every source.
    reject_rate_per_s: float = 50.0
    reject_burst: int = 500


class LandingFull(Exception):
    """The landing zone reached its configured bound."""


@dataclass(frozen=True)
class _SourceMetrics:
    received: Counter
    received_bytes: Counter
    rows: Counter


class BufferContext:
    """The ``SourceContext`` handed to one source."""

    def __init__(self, buffer: LandingBuffer, source: str, site: str) -> None:
        self._buffer = buffer
        self._source = source
        self._site = site
        self._limit = buffer.policy.max_buffered_rows

    @property
    def source(self) -> str:
        return self._source

    @property
    def site(self) -> str:
        return self._site

    def emit(
        self,
        table: TableSpec,
        rows: Sequence[Row],
        raw: bytes,
        ack: Ack | None = None,
        input_id: str | None = None,
    ) -> None:
        self._buffer.add(self._source, table, rows, raw, ack, input_id)

    def emit_columns(
        self,
        table: TableSpec,
        columns: Mapping[str, Sequence[object]],
        count: int,
        raw: bytes,
        ack: Ack | None = None,
        input_id: str | None = None,
    ) -> int:
        return self._buffer.add_columns(self._source, table, columns, count, raw, ack, input_id)

    def reject(self, raw: bytes, reason: str, ack: Ack | None = None, input_id: str | None = None) -> None:
        self._buffer.add_reject(self._source, raw, reason, ack, input_id)

    def describe_devices(self, rows: Sequence[Row], raw: bytes) -> None:
        self._buffer.add(self._source, DEVICES, rows, raw, None, counted=False)

    def ready(self) -> bool:
        return self._buffer.buffered_rows() < self._limit

    def already_landed(self, input_id: str) -> bool:
        return self._buffer.already_landed(self._source, input_id)


def _reject_row(source: str, raw: bytes, reason: str, now_ms: int) -> dict[str, object]:
    """The ``rejected`` row of an input refused for ``reason``."""
    return {"source": source, "received_at": now_ms, "reason": reason, "raw": truncate_raw(raw)}


class LandingBuffer:
    """Thread-safe buffers for every table, drained by ``flush()``."""

    def __init__(
        self,
        writer: LandingWriter,
        metrics: IngestMetrics,
        policy: FlushPolicy,
        guard: MetricTypeGuard | None = None,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.policy = policy
        self.guard = guard if guard is not None else MetricTypeGuard({}, policy.max_metric_types)
        self._lock = threading.Lock()
        self._batchers = {name: self._new_batcher(spec) for name, spec in TABLES.items()}
        self._reject_buckets: dict[str, RejectBudget] = {}
        # A flush whose commit failed (disk full, I/O error): its batches,
        # acknowledgements and input ids wait here and go first in the next
        # flush, so nothing is acknowledged or dropped until it is on disk.
        self._retry: tuple[list[tuple[TableSpec, pa.RecordBatch]], list[Ack], dict[str, list[str]]] | None
        self._retry = None
        self._retry_rows = 0
        self._acks: list[Ack] = []
        self._inputs: dict[str, list[str]] = {}
        # Insertion-ordered, so the oldest ids are dropped first.
        self._recent_inputs: dict[str, dict[str, None]] = {}
        self._flush_lock = asyncio.Lock()
        self._buffered = 0
        self._source_metrics: dict[tuple[str, str], _SourceMetrics] = {}
        # Told of each commit's batches (the live feed); runs on the event loop.
        self.on_landed: Callable[[list[tuple[TableSpec, pa.RecordBatch]]], None] | None = None

    def _metrics_for(self, source: str, table: str) -> _SourceMetrics:
        # prometheus_client's labels() costs a lock and a tuple per call; the
        # hot path looks the children up once per source and table.
        key = (source, table)
        found = self._source_metrics.get(key)
        if found is None:
            m = self.metrics
            found = _SourceMetrics(
                m.received.labels(source),
                m.received_bytes.labels(source),
                m.rows_received.labels(source, table),
            )
            self._source_metrics[key] = found
        return found

    def _new_batcher(self, spec: TableSpec) -> ColumnBatcher:
        # The window applies to event times; ``rejected.received_at`` is ours.
        return ColumnBatcher(spec, None if spec.name == REJECTED.name else self.policy.window)

    def context(self, source: str, site: str) -> BufferContext:
        return BufferContext(self, source, site)

    def remember_landed(self, recent: Mapping[str, Iterable[str]]) -> None:
        """Input ids of recent commits: the last ones before a restart (see
        LandingWriter.recover), then each commit of this run. A broker that
        restarts with a persistent session resends what it never saw
        acknowledged, with DUP set, though it may already be in the landing
        zone; these ids let the source acknowledge and drop it. The memory is
        bounded: a redelivery comes right after a reconnect, not hours later."""
        with self._lock:
            for source, ids in recent.items():
                remembered = self._recent_inputs.setdefault(source, {})
                for input_id in ids:
                    remembered[input_id] = None
                excess = len(remembered) - RECENT_INPUTS_KEPT
                for stale in list(itertools.islice(remembered, max(0, excess))):
                    del remembered[stale]

    def already_landed(self, source: str, input_id: str) -> bool:
        if input_id in self._recent_inputs.get(source, ()):
            self.metrics.duplicates.labels(source).inc()
            return True
        return False

    def buffered_rows(self) -> int:
        """Rows not yet on disk: buffered, and any of a flush waiting for retry."""
        return self._buffered + self._retry_rows

    def _received(self, source: str, raw: bytes, ack: Ack | None, input_id: str | None) -> None:
        # Called with the lock held.
        if ack is not None:
            self._acks.append(ack)
        if input_id is not None:
            self._inputs.setdefault(source, []).append(input_id)

    def _count_input(self, source: str, spec: TableSpec, raw: bytes, rows: int) -> None:
        counters = self._metrics_for(source, spec.name)
        counters.received.inc()
        counters.received_bytes.inc(len(raw))
        counters.rows.inc(rows)

    def add(
        self,
        source: str,
        spec: TableSpec,
        rows: Sequence[Row],
        raw: bytes,
        ack: Ack | None,
        input_id: str | None = None,
        counted: bool = True,
    ) -> None:
        if counted:
            self._count_input(source, spec, raw, len(rows))
        else:
            self._metrics_for(source, spec.name).rows.inc(len(rows))
        names = spec.schema.names
        # Rows become columns here, one list comprehension per column (a third
        # of the cost of appending row by row); a row with a key that is no
        # column goes the row-by-row way, which rejects it with the reason.
        columns: Mapping[str, Sequence[object]] | None = None
        if rows and set().union(*rows).issubset(names):
            if min(map(len, rows)) == len(names):
                # Every row has every column: one C-level tuple per row, transposed by zip.
                get = operator.itemgetter(*names)
                columns = dict(zip(names, map(list, zip(*map(get, rows), strict=True)), strict=True))
            else:
                columns = {name: [row.get(name) for row in rows] for name in names}
        with self._lock:
            batcher = self._batchers[spec.name]
            if columns is not None:
                count = len(rows)
                if spec.name == READINGS_NAME:
                    columns, count = self._typed_columns(source, columns, count, raw)
                batcher.extend(columns, count, raw, source)
                self._buffered += count
            else:
                if spec.name == READINGS_NAME and rows:
                    rows = self._typed_rows(source, rows, raw)
                for row in rows:
                    batcher.append(row, raw, source)
                self._buffered += len(rows)
            self._received(source, raw, ack, input_id)

    def add_columns(
        self,
        source: str,
        spec: TableSpec,
        columns: Mapping[str, Sequence[object]],
        count: int,
        raw: bytes,
        ack: Ack | None,
        input_id: str | None = None,
    ) -> int:
        """Buffer ``count`` rows given as columns; returns how many were kept."""
        self._count_input(source, spec, raw, count)
        with self._lock:
            if spec.name == READINGS_NAME and count:
                columns, count = self._typed_columns(source, columns, count, raw)
            self._batchers[spec.name].extend(columns, count, raw, source)
            self._buffered += count
            self._received(source, raw, ack, input_id)
        return count

    def _typed_rows(self, source: str, rows: Sequence[Row], raw: bytes) -> Sequence[Row]:
        """``rows`` without the readings that break their metric's type, which
        are rejected here with the raw input (lock held)."""
        conflicts = self.guard.conflicts(
            source,
            [r.get("device_id") for r in rows],
            [r.get("metric") for r in rows],
            [r.get("value") for r in rows],
            [r.get("text") for r in rows],
        )
        if not conflicts:
            return rows
        self._reject_conflicts(source, conflicts, raw)
        refused = {index for index, _ in conflicts}
        return [row for index, row in enumerate(rows) if index not in refused]

    def _typed_columns(
        self, source: str, columns: Mapping[str, Sequence[object]], count: int, raw: bytes
    ) -> tuple[Mapping[str, Sequence[object]], int]:
        """``_typed_rows`` for columns (lock held)."""
        conflicts = self.guard.conflicts(
            source,
            columns.get("device_id") or [None] * count,
            columns.get("metric") or [None] * count,
            columns.get("value"),
            columns.get("text"),
        )
        if not conflicts:
            return columns, count
        self._reject_conflicts(source, conflicts, raw)
        refused = {index for index, _ in conflicts}
        kept = {
            name: [v for index, v in enumerate(values) if index not in refused]
            for name, values in columns.items()
        }
        return kept, count - len(refused)

    def _reject_conflicts(self, source: str, conflicts: list[tuple[int, str]], raw: bytes) -> None:
        now_ms = int(time.time() * 1000)
        for _, reason in conflicts:
            self._append_reject(source, raw, reason, now_ms)
        self._buffered += len(conflicts)

    def add_reject(
        self, source: str, raw: bytes, reason: str, ack: Ack | None, input_id: str | None = None
    ) -> None:
        self.metrics.received.labels(source).inc()
        self.metrics.received_bytes.labels(source).inc(len(raw))
        with self._lock:
            bucket = self._reject_buckets.get(source)
            if bucket is None:
                bucket = RejectBudget(self.policy.reject_rate_per_s, self.policy.reject_burst)
                self._reject_buckets[source] = bucket
            if bucket.allow():
                self._append_reject(source, raw, reason, int(time.time() * 1000))
                self._buffered += 1
            else:
                # Counted, not written; still acknowledged with the next flush
                # (a peer must not redeliver junk forever).
                self._count_reject(source, reason)
                self.metrics.rejects_dropped.labels(source).inc()
            self._received(source, raw, ack, input_id)

    def _count_reject(self, source: str, reason: str) -> None:
        # A closed set of reason kinds: the text may carry topics or SIP ids.
        self.metrics.rejected.labels(source, reason_kind(reason)).inc()

    def _append_reject(self, source: str, raw: bytes, reason: str, now_ms: int) -> None:
        self._count_reject(source, reason)
        self._batchers[REJECTED.name].append(_reject_row(source, raw, reason, now_ms))

    def due(self) -> bool:
        now = time.monotonic()
        p = self.policy
        if self._retry is not None:
            return True
        return any(
            len(b) >= p.max_rows or b.approx_bytes >= p.max_bytes or (len(b) and b.age_s(now) >= p.max_age_s)
            for b in self._batchers.values()
        ) or (bool(self._acks) and all(len(b) == 0 for b in self._batchers.values()))

    def _take(self) -> tuple[list[tuple[TableSpec, pa.RecordBatch]], list[Ack], dict[str, list[str]]]:
        """Swap everything buffered out (lock held): valid batches, plus a
        ``rejected`` batch that includes the rows refused while building them."""
        with self._lock:
            batchers = {name: b for name, b in self._batchers.items() if len(b)}
            self._batchers.update({name: self._new_batcher(b.spec) for name, b in batchers.items()})
            acks, self._acks = self._acks, []
            inputs, self._inputs = self._inputs, {}
            self._buffered = 0
        batches = []
        rejected = batchers.pop(REJECTED.name, None) or self._new_batcher(REJECTED)
        now_ms = int(time.time() * 1000)
        for batcher in batchers.values():
            batch, refused = batcher.take()
            if batch.num_rows:
                batches.append((batcher.spec, batch))
                if batcher.spec.name == READINGS_NAME:
                    self._observe_lag(batch, now_ms)
            for row in refused:
                self._count_reject(row.source, row.reason)
                rejected.append(_reject_row(row.source, row.raw, row.reason, now_ms))
        if len(rejected):
            batch, _ = rejected.take()
            batches.append((REJECTED, batch))
        return batches, acks, inputs

    def _observe_lag(self, batch: pa.RecordBatch, now_ms: int) -> None:
        """How old the newest and oldest readings of each source are when they
        land: a device clock, a buffering gateway or a backlog shows here."""
        table = pa.Table.from_batches([batch]).select(["source", "ts"])
        table = table.set_column(0, "source", table.column("source").cast(pa.string()))
        table = table.set_column(1, "ts", table.column("ts").cast(pa.int64()))
        for row in table.group_by("source").aggregate([("ts", "min"), ("ts", "max")]).to_pylist():
            self.metrics.event_lag.labels(row["source"]).set((now_ms - row["ts_min"]) / 1000)
            self.metrics.freshest_lag.labels(row["source"]).set((now_ms - row["ts_max"]) / 1000)

    async def flush(self) -> list[LandedFile]:
        """Commit everything buffered so far, then acknowledge it."""
        async with self._flush_lock:
            limit = self.policy.max_landing_bytes
            if limit is not None and self.writer.landing_bytes >= limit:
                raise LandingFull(f"landing zone holds {self.writer.landing_bytes} bytes, bound {limit}")
            batches, acks, inputs = await asyncio.to_thread(self._take)
            if self._retry is not None:
                # The failed flush goes first, in the same commit: its inputs
                # arrived earlier and their acknowledgements run first.
                old_batches, old_acks, old_inputs = self._retry
                batches, acks = old_batches + batches, old_acks + acks
                for source, ids in inputs.items():
                    old_inputs.setdefault(source, []).extend(ids)
                inputs = old_inputs
                self._retry, self._retry_rows = None, 0
            self.metrics.buffered_rows.set(self.buffered_rows())
            self.metrics.pending_acks.set(len(acks))
            started = time.perf_counter()
            try:
                landed = await asyncio.to_thread(self.writer.commit, batches, inputs)
            except BaseException:
                # Nothing of it is acknowledged; it stays for the next flush
                # and counts against max_buffered_rows (sources are held back).
                self._retry = (batches, acks, inputs)
                self._retry_rows = sum(batch.num_rows for _, batch in batches)
                self.metrics.buffered_rows.set(self.buffered_rows())
                raise
            self.remember_landed(inputs)
            if batches:
                self.metrics.flush_seconds.observe(time.perf_counter() - started)
            for spec, batch in batches:
                self.metrics.batches.labels(spec.name).inc()
                self.metrics.landed_rows.labels(spec.name).inc(batch.num_rows)
            if self.on_landed is not None and batches:
                self.on_landed(batches)
            for ack in acks:
                try:
                    ack()
                except Exception:  # an ack to a dropped connection is redelivered by the peer
                    log.warning("acknowledgement failed; the peer will redeliver", exc_info=True)
            self.metrics.pending_acks.set(0)
            return landed


RECENT_INPUTS_KEPT = 100_000  # per source: a reconnect's worth of redeliveries, many times over
