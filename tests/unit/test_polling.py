"""The runner's poll scheduler: fixed grid, lateness measured, skips counted."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, PollTarget, SourceContext
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout, table

T0 = 1_764_072_000_000


class CountingTarget(PollTarget):
    def __init__(self, name: str, interval_s: float, work_s: float = 0.0) -> None:
        self.name = name
        self.interval_s = interval_s
        self.work_s = work_s
        self.starts: list[float] = []

    async def poll(self, ctx: SourceContext) -> None:
        self.starts.append(time.monotonic())
        await asyncio.sleep(self.work_s)
        n = len(self.starts)
        row = {
            "device_id": self.name, "ts": T0 + n, "metric": "n", "value": float(n),
            "quality": 0, "source": ctx.source, "site": ctx.site, "ingest_ts": T0,
        }  # fmt: skip
        ctx.emit(table("readings"), [row], b"")


class FakePollingSource(PollingSource):
    config_model = SourceConfig

    def __init__(self, targets: list[CountingTarget]) -> None:
        super().__init__(SourceConfig(name="fake", type="fake", url="tcp://127.0.0.1:1"))
        self._targets = targets
        self.closed = False

    def targets(self) -> Sequence[PollTarget]:
        return self._targets

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


async def run_for(runner: IngestRunner, seconds: float) -> None:
    await runner.start()
    await asyncio.sleep(seconds)
    await runner.stop()


async def test_targets_poll_on_their_own_interval(tmp_path: Path) -> None:
    fast, slow = CountingTarget("fast", 0.1), CountingTarget("slow", 0.5)
    source = FakePollingSource([fast, slow])
    runner = IngestRunner([source], DataLayout(tmp_path), "s1")
    await run_for(runner, 1.05)
    assert 9 <= len(fast.starts) <= 12
    assert 2 <= len(slow.starts) <= 3
    # On a fixed grid: a late poll does not shift the ones after it.
    offsets = [(t - fast.starts[0]) / 0.1 for t in fast.starts]
    slots = [math.floor(o + 0.05) for o in offsets]  # a late poll stays in its own slot
    assert slots == sorted(set(slots)), offsets
    assert all(-0.05 <= o - k < 0.95 for o, k in zip(offsets, slots, strict=True)), offsets
    assert slots[-1] - slots[0] >= 8
    assert source.closed
    lateness = runner.metrics.poll_lateness.labels("fake")
    assert lateness._sum.get() / max(1, len(fast.starts) + len(slow.starts)) < 0.05
    landed = runner.metrics.landed_rows.labels("readings")._value.get()
    assert landed == len(fast.starts) + len(slow.starts)


async def test_overrunning_poll_is_skipped_and_counted(tmp_path: Path) -> None:
    stuck = CountingTarget("stuck", 0.1, work_s=0.35)
    runner = IngestRunner([FakePollingSource([stuck])], DataLayout(tmp_path), "s1")
    await run_for(runner, 1.0)
    assert 2 <= len(stuck.starts) <= 4
    assert runner.metrics.polls_skipped.labels("fake", "previous poll still running")._value.get() >= 4


async def test_full_buffer_skips_polls(tmp_path: Path) -> None:
    target = CountingTarget("t", 0.05)
    policy = FlushPolicy(max_buffered_rows=1, max_age_s=3600, max_rows=10**9)
    runner = IngestRunner([FakePollingSource([target])], DataLayout(tmp_path), "s1", policy)
    await run_for(runner, 0.5)
    assert len(target.starts) == 1
    assert runner.metrics.polls_skipped.labels("fake", "landing buffer full")._value.get() >= 5
