"""Issue 13's data-safety cases of ingest, on real files: a flush that fails is
retried and acknowledges nothing, event times outside the window are rejected,
junk rejects are rate-limited, reject labels are a closed set, new landing
directories are fsynced, and a committed record whose files are gone is
repaired loudly."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from citylake.ingest import landing
from citylake.ingest.batcher import TimeWindow
from citylake.ingest.landing import LandingWriter, forget_collected
from citylake.ingest.landing_buffer import FlushPolicy, LandingBuffer
from citylake.ingest.metrics import IngestMetrics
from citylake.ingest.reject_kinds import reason_kind
from citylake.schemas import DataLayout, table
from tests.landing_rows import reading

READINGS = table("readings")


def now_ms() -> int:
    return int(time.time() * 1000)


def landed_rows(layout: DataLayout, name: str = "readings") -> list[dict[str, Any]]:
    root = layout.landing(table(name))
    if not root.exists() or not list(root.rglob("*.parquet")):
        return []
    rows: list[dict[str, Any]] = pq.read_table(root).to_pylist()
    return rows


def test_a_flush_that_hits_a_full_disk_keeps_its_rows_and_acks_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = DataLayout(tmp_path)
    metrics = IngestMetrics()
    buffer = LandingBuffer(LandingWriter(layout), metrics, FlushPolicy(max_buffered_rows=3))
    acked: list[str] = []
    ctx = buffer.context("s", "x")
    # A polled source (Modbus, OPC UA, SIP) has no ack: only the buffer holds its rows.
    ctx.emit(READINGS, [reading(now_ms(), device="polled")], b"poll")
    ctx.emit(READINGS, [reading(now_ms(), device="mqtt")], b"msg", lambda: acked.append("mqtt"), "7:a")

    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        asyncio.run(buffer.flush())
    assert acked == []
    assert buffer.buffered_rows() == 2 and buffer.due()
    # More arrives while the disk is full; the bound still holds sources back.
    ctx.emit(READINGS, [reading(now_ms(), device="late")], b"late", lambda: acked.append("late"))
    assert not ctx.ready()
    with pytest.raises(OSError):
        asyncio.run(buffer.flush())
    assert acked == [] and buffer.buffered_rows() == 3

    monkeypatch.setattr(os, "fsync", real_fsync)
    asyncio.run(buffer.flush())
    assert sorted(r["device_id"] for r in landed_rows(layout)) == ["late", "mqtt", "polled"]
    assert acked == ["mqtt", "late"]
    assert buffer.buffered_rows() == 0 and not buffer.due()
    assert buffer.already_landed("s", "7:a")
    assert not list(tmp_path.rglob(".*.tmp"))


def test_event_times_outside_the_window_are_rejected_with_the_reason(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    metrics = IngestMetrics()
    window = TimeWindow(past_ms=7 * 86_400_000, future_ms=300_000)
    buffer = LandingBuffer(LandingWriter(layout), metrics, FlushPolicy(window=window))
    now = now_ms()
    year_2099 = 4_080_000_000_000
    rows = [
        reading(now, device="ok"),
        reading(year_2099, device="pinned"),
        reading(now - 30 * 86_400_000, device="stale"),
    ]
    buffer.add("s", READINGS, rows, b"payload", None)
    asyncio.run(buffer.flush())
    assert [r["device_id"] for r in landed_rows(layout)] == ["ok"]
    reasons = sorted(r["reason"] for r in landed_rows(layout, "rejected"))
    assert len(reasons) == 2
    assert all("outside the accepted window" in r and "ingest.accept_future_s" in r for r in reasons)
    assert any("ahead of the ingest clock" in r for r in reasons)
    assert metrics.rejected.labels("s", "timestamp outside window")._value.get() == 2

    # The same through the row-by-row path (a batch that does not convert).
    buffer.add("s", READINGS, [reading(year_2099, device="p2"), {**reading(now), "value": "x"}], b"p", None)
    asyncio.run(buffer.flush())
    assert [r["device_id"] for r in landed_rows(layout)] == ["ok"]
    assert metrics.rejected.labels("s", "timestamp outside window")._value.get() == 3


def test_junk_rejects_are_rate_limited_counted_and_still_acknowledged(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    metrics = IngestMetrics()
    policy = FlushPolicy(reject_rate_per_s=0.001, reject_burst=5)
    buffer = LandingBuffer(LandingWriter(layout), metrics, policy)
    acked: list[int] = []

    def ack_of(i: int) -> Callable[[], None]:
        return lambda: acked.append(i)

    for i in range(200):
        buffer.add_reject("junk", os.urandom(4096), "malformed SIP: junk", ack_of(i))
    buffer.add_reject("other", b"x", "invalid JSON: no", None)  # a bucket per source
    asyncio.run(buffer.flush())
    rejected = landed_rows(layout, "rejected")
    assert sum(1 for r in rejected if r["source"] == "junk") == 5
    assert sum(1 for r in rejected if r["source"] == "other") == 1
    assert metrics.rejects_dropped.labels("junk")._value.get() == 195
    assert metrics.rejected.labels("junk", "malformed SIP")._value.get() == 200
    assert len(acked) == 200
    landed_bytes = sum(p.stat().st_size for p in layout.landing(table("rejected")).rglob("*.parquet"))
    assert landed_bytes < 200 * 4096 / 10


def test_reject_labels_are_a_closed_set_whatever_the_sender_puts_in_them(tmp_path: Path) -> None:
    metrics = IngestMetrics()
    buffer = LandingBuffer(LandingWriter(DataLayout(tmp_path)), metrics, FlushPolicy())
    for i in range(300):
        buffer.add_reject("mqtt", b"x", f"topic city/{i}/junk matches no configured template", None)
        buffer.add_reject("mqtt", b"x", f"attacker-chosen-{i}: whatever", None)
        buffer.add_reject("sip", b"x", f"unregistered device: MESSAGE from sip:{i}@evil", None)
    labels = {
        s.labels["reason"]
        for family in metrics.registry.collect()
        if family.name == "citylake_ingest_rejected"
        for s in family.samples
    }
    assert labels == {"no topic template", "other", "unregistered device"}
    assert reason_kind("readings.value: expected a number, got str 'x'") == "readings.value"
    window_reason = "readings.ts: timestamp outside the accepted window: ..."
    assert reason_kind(window_reason) == "timestamp outside window"
    assert reason_kind("modbus no response: device d (slave 1) ...") == "modbus no response"


def test_a_new_date_directory_is_fsynced_in_its_parent_before_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = DataLayout(tmp_path)
    events: list[str] = []
    real = landing._fsync_dir
    real_write = landing._write_durably

    def spy(path: Path) -> None:
        events.append(f"fsync {path.relative_to(tmp_path)}")
        real(path)

    def spy_write(path: Path, data: bytes) -> None:
        events.append("commit record")
        real_write(path, data)

    monkeypatch.setattr(landing, "_fsync_dir", spy)
    monkeypatch.setattr(landing, "_write_durably", spy_write)
    buffer = LandingBuffer(LandingWriter(layout), IngestMetrics(), FlushPolicy())
    buffer.add("s", READINGS, [reading(now_ms())], b"raw", None)
    asyncio.run(buffer.flush())
    before_commit = events[: events.index("commit record")]
    # landing/, landing/readings/ and landing/readings/date=... are all new.
    assert "fsync ." in before_commit  # the data dir holds the new landing/
    assert "fsync landing" in before_commit
    assert "fsync landing/readings" in before_commit


def _commit_one(layout: DataLayout, input_id: str) -> Path:
    writer = LandingWriter(layout)
    buffer = LandingBuffer(writer, IngestMetrics(), FlushPolicy())
    buffer.add("mqtt", READINGS, [reading(now_ms())], b"raw", None, input_id)
    asyncio.run(buffer.flush())
    (path,) = layout.landing(READINGS).rglob("*.parquet")
    return path


def test_recovery_sets_aside_a_committed_record_whose_files_are_lost(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    landed = _commit_one(layout, "3:lost")
    landed.unlink()  # the disk lost it after the commit
    report = LandingWriter(layout).recover()
    assert len(report.missing) == 1 and landed.name in report.missing[0]
    # Not remembered as landed: a redelivery of the input is taken again.
    assert "3:lost" not in report.recent_inputs.get("mqtt", set())
    broken = list((layout.landing_root / "_commits" / "broken").glob("*.json"))
    assert len(broken) == 1 and "3:lost" in broken[0].read_text()
    assert not list((layout.landing_root / "_commits").glob("*.json"))


def test_files_the_collector_removed_are_not_lost(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    landed = _commit_one(layout, "4:taken")
    landed.unlink()
    assert forget_collected(layout, {landed}) == 1
    report = LandingWriter(layout).recover()
    assert report.missing == []
    assert "4:taken" in report.recent_inputs["mqtt"]
    (record,) = (layout.landing_root / "_commits").glob("*.json")
    assert json.loads(record.read_text())["files"] == []
