"""One ingest process: sources -> validation -> batches -> landing -> acks.

Adapters call the ``SourceContext`` from any thread; rows collect in the
``LandingBuffer`` (``landing_buffer.py``). The flush loop swaps its batchers out,
writes them to the landing zone in a worker thread and only then runs the
acknowledgements collected with them, so an acknowledged input is always on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from citylake.ingest.base import PollingSource, PollTarget, Source, StreamingSource
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.ingest.landing_buffer import (
    BufferContext,
    FlushPolicy,
    LandingBuffer,
    LandingFull,
)
from citylake.ingest.live import LivePublisher
from citylake.ingest.metric_types import MetricTypeGuard
from citylake.ingest.metrics import IngestMetrics
from citylake.schemas import TABLES, DataLayout

# FlushPolicy is the runner's parameter: importable from here as well.
__all__ = ["FlushPolicy", "IngestRunner"]

log = logging.getLogger(__name__)
LANDING_RESCAN_S = 30.0


def _warm_up() -> None:
    """Build one row of every table once before data flows. pyarrow imports
    pandas lazily on its first conversion (about a second, holding the GIL);
    paid at start it does not stall the network threads of a busy source."""
    for spec in TABLES.values():
        batcher = ColumnBatcher(spec)
        batcher.append({}, b"", "")
        batcher.take()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True)
class _PollMetrics:
    ok: Counter
    error: Counter
    seconds: Histogram


class IngestRunner:
    """Runs sources until ``stop()``; ``run()`` is the whole lifecycle."""

    def __init__(
        self,
        sources: Sequence[Source],
        layout: DataLayout,
        site: str,
        policy: FlushPolicy | None = None,
        metrics: IngestMetrics | None = None,
        live: LivePublisher | None = None,
    ) -> None:
        self.sources = list(sources)
        self.live = live
        self.site = site
        self.metrics = metrics or IngestMetrics()
        self.writer = LandingWriter(layout)
        policy = policy or FlushPolicy()
        declared = {source.name: source.config.metric_types for source in self.sources}
        guard = MetricTypeGuard(declared, policy.max_metric_types)
        self.buffer = LandingBuffer(self.writer, self.metrics, policy, guard)
        self._counted: dict[tuple[str, str], int] = {}
        self._evictions_counted = 0
        if live is not None:
            self.buffer.on_landed = live.offer
        self._stopping = asyncio.Event()
        self._sleeping: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_flush_error: str | None = None
        self.lost_files = 0  # files committed records named but recovery did not find

    async def start(self) -> None:
        await asyncio.to_thread(_warm_up)
        recovery = await asyncio.to_thread(self.writer.recover)
        self.lost_files = len(recovery.missing)
        self.buffer.remember_landed(recovery.recent_inputs)
        if self.live is not None:
            self.live.start()
        for source in self.sources:
            ctx = self.buffer.context(source.name, self.site)
            configured = source.known_devices(int(time.time() * 1000))
            if configured:
                # Landed with the first flush, before any reading of the source.
                ctx.describe_devices(configured, f"devices configured in source {source.name}".encode())
            if isinstance(source, StreamingSource):
                await source.start(ctx)
            elif isinstance(source, PollingSource):
                await source.open()
                targets = source.targets()
                for index, target in enumerate(targets):
                    offset = target.interval_s * index / max(1, len(targets))
                    self._tasks.append(asyncio.create_task(self._poll_loop(source, target, ctx, offset)))
        self._tasks.append(asyncio.create_task(self._flush_loop()))

    async def _poll_loop(
        self, source: PollingSource, target: PollTarget, ctx: BufferContext, offset_s: float
    ) -> None:
        """Poll ``target`` every ``interval_s`` on a fixed grid (no drift), starting
        ``offset_s`` in so thousands of targets do not all fire at once."""
        metrics = self.metrics
        lateness = metrics.poll_lateness.labels(source.name)
        # A poll's counters looked up once (labels() costs a lock and a tuple).
        counted = _PollMetrics(
            metrics.polls.labels(source.name, "ok"),
            metrics.polls.labels(source.name, "error"),
            metrics.poll_seconds.labels(source.name),
        )
        interval = target.interval_s
        start = time.monotonic() + offset_s
        tick = 0
        running: asyncio.Task[None] | None = None
        while not self._stopping.is_set():
            scheduled = start + tick * interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                await self._sleep(delay)
                if self._stopping.is_set():
                    break
            tick += 1
            if running is not None and not running.done():
                metrics.polls_skipped.labels(source.name, "previous poll still running").inc()
                continue
            if not ctx.ready():
                metrics.polls_skipped.labels(source.name, "landing buffer full").inc()
                log.warning("%s/%s: poll skipped, landing buffer full", source.name, target.name)
                continue
            lateness.observe(max(0.0, time.monotonic() - scheduled))
            running = asyncio.create_task(self._poll_once(source, target, ctx, counted))
            # Catch up without a burst: skip ticks already in the past.
            behind = int((time.monotonic() - start) / interval) - tick
            if behind > 0:
                metrics.polls_skipped.labels(source.name, "behind schedule").inc(behind)
                tick += behind
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if ``stop()`` comes first. As cheap as
        ``asyncio.sleep``: ``wait_for(stopping.wait(), delay)`` costs a task and a
        cancellation per wait on Python 3.11, and every poll target waits once a tick."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(delay, _wake, waiter)
        self._sleeping.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._sleeping.discard(waiter)

    async def _poll_once(
        self, source: PollingSource, target: PollTarget, ctx: BufferContext, counted: _PollMetrics
    ) -> None:
        started = time.perf_counter()
        try:
            await target.poll(ctx)
        except Exception:
            counted.error.inc()
            log.exception("%s/%s: poll failed", source.name, target.name)
        else:
            counted.ok.inc()
        finally:
            counted.seconds.observe(time.perf_counter() - started)

    def _export_counts(self) -> None:
        """Counts kept outside prometheus (the metric type guard, the adapters'
        own tables) brought to their counters as deltas."""
        guard = self.buffer.guard
        self.metrics.metric_types_known.set(len(guard))
        if guard.evictions > self._evictions_counted:
            self.metrics.metric_types_evicted.inc(guard.evictions - self._evictions_counted)
            self._evictions_counted = guard.evictions
        for source in self.sources:
            for event, value in source.counters().items():
                key = (source.name, event)
                before = self._counted.get(key, 0)
                if value > before:
                    self.metrics.adapter_events.labels(source.name, event).inc(value - before)
                    self._counted[key] = value

    async def _flush_loop(self) -> None:
        rescan_at = time.monotonic() + LANDING_RESCAN_S
        while not self._stopping.is_set():
            for source in self.sources:
                self.metrics.source_up.labels(source.name).set(1 if source.is_up() else 0)
            self._export_counts()
            if time.monotonic() >= rescan_at:
                # The pipeline removes landing files it has committed to the lake.
                await asyncio.to_thread(self.writer.measure_usage)
                rescan_at = time.monotonic() + LANDING_RESCAN_S
            self.metrics.landing_bytes.set(self.writer.landing_bytes)
            if self.buffer.due():
                try:
                    await self.buffer.flush()
                    self.last_flush_error = None
                    self.metrics.landing_full.set(0)
                except LandingFull as exc:
                    self.last_flush_error = str(exc)
                    self.metrics.landing_full.set(1)
                    log.warning("%s; holding sources back until it drains", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
                except OSError as exc:
                    self.last_flush_error = f"landing write failed: {exc}"
                    # Disk full or unwritable: nothing was acknowledged; the rows
                    # stay unacknowledged and the peer redelivers.
                    self.metrics.flush_errors.inc()
                    log.exception("landing write failed; rows kept for retry, inputs stay unacknowledged")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.05)

    async def stop(self) -> None:
        """Flush and acknowledge what arrived, then let go of every source."""
        self._stopping.set()
        for waiter in self._sleeping:
            _wake(waiter)
        # Poll loops end at their next wait and finish the poll in flight; the
        # flush loop is cancelled. Then whatever arrived is made durable.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.buffer.flush()
        for source in self.sources:
            if isinstance(source, StreamingSource):
                await source.stop()
            elif isinstance(source, PollingSource):
                await source.close()
        await self.buffer.flush()
        if self.live is not None:
            await self.live.close()

    def health(self) -> dict[str, object]:
        """What /healthz reports: each source, the buffer and the landing zone."""
        policy = self.buffer.policy
        checks: dict[str, str] = {}
        for source in self.sources:
            checks[f"source:{source.name}"] = "ok" if source.is_up() else "down"
        buffered = self.buffer.buffered_rows()
        checks["buffer"] = "ok" if buffered < policy.max_buffered_rows else f"full ({buffered} rows)"
        checks["landing"] = "ok" if self.last_flush_error is None else self.last_flush_error
        if self.lost_files:
            checks["landing_recovery"] = (
                f"{self.lost_files} committed landing file(s) were missing at start; their records are in "
                "landing/_commits/broken (see the log)"
            )
        return {
            "status": "ok" if all(v == "ok" for v in checks.values()) else "degraded",
            "checks": checks,
            "buffered_rows": buffered,
            "landing_bytes": self.writer.landing_bytes,
            "landing_max_bytes": policy.max_landing_bytes,
        }

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
