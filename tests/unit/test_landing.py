from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.ingest.landing_buffer import FlushPolicy, LandingBuffer, LandingFull
from citylake.ingest.metrics import IngestMetrics
from citylake.schemas import DataLayout, table
from citylake.schemas.tables import SCHEMA_VERSION, SCHEMA_VERSION_KEY
from tests.landing_rows import reading

DAY1 = 1_764_072_000_000  # 2025-11-25T12:00Z
DAY2 = DAY1 + 86_400_000


def test_batcher_builds_the_exact_schema() -> None:
    batcher = ColumnBatcher(table("readings"))
    batcher.append(reading(DAY1, 1.5))
    batcher.append(reading(DAY1 + 1, 2.5, device="d2"))
    assert len(batcher) == 2 and batcher.approx_bytes > 0
    batch, refused = batcher.take()
    assert refused == []
    assert batch.schema == table("readings").schema
    assert batch.column("value").to_pylist() == [1.5, 2.5]
    assert batch.column("device_id").to_pylist() == ["d1", "d2"]
    assert len(batcher) == 0


def test_landing_partitions_by_date_and_leaves_no_temporaries(tmp_path: Path) -> None:
    batcher = ColumnBatcher(table("readings"))
    for ts in (DAY1, DAY1 + 5, DAY2):
        batcher.append(reading(ts))
    files = LandingWriter(DataLayout(tmp_path)).write(table("readings"), batcher.take()[0])
    assert sorted(f.path.parent.name for f in files) == ["date=2025-11-25", "date=2025-11-26"]
    assert sum(f.rows for f in files) == 3
    assert not list(tmp_path.rglob(".*"))
    written = pq.read_table(files[0].path)
    assert written.schema.metadata[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode()
    assert pq.ParquetFile(files[0].path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_uncommitted_flush_is_rolled_back(tmp_path: Path) -> None:
    directory = tmp_path / "landing" / "readings" / "date=2025-11-25"
    directory.mkdir(parents=True)
    (directory / ".123-abc.parquet.tmp").write_bytes(b"half a file")
    report = LandingWriter(DataLayout(tmp_path)).recover()
    assert report.rolled_back == 1
    assert not list(directory.iterdir())


def test_committed_flush_is_rolled_forward_and_its_inputs_remembered(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    writer = LandingWriter(layout)
    batcher = ColumnBatcher(table("readings"))
    batcher.append(reading(DAY1))
    batch, _ = batcher.take()
    files = writer.commit([(table("readings"), batch)], {"mqtt-a": ["7:abc"]})
    # Simulate a crash after the commit record but before the rename.
    final = files[0].path
    final.rename(final.with_name(f".{final.name}.tmp"))
    report = LandingWriter(layout).recover()
    assert report.rolled_forward == 1
    assert final.exists()
    assert report.recent_inputs == {"mqtt-a": {"7:abc"}}


def test_vectorised_validation_rejects_only_the_bad_rows() -> None:
    batcher = ColumnBatcher(table("readings"))
    batcher.append(reading(DAY1, 1.0), b"in-1", "a")
    batcher.append({**reading(DAY1), "value": float("inf")}, b"in-2", "a")
    batcher.append({**reading(DAY1), "ts": 5}, b"in-3", "b")
    batcher.append({**reading(DAY1), "device_id": None}, b"in-4", "b")
    batch, refused = batcher.take()
    assert batch.num_rows == 1
    assert [(r.source, r.raw) for r in refused] == [("a", b"in-2"), ("b", b"in-3"), ("b", b"in-4")]
    assert [r.reason.split(":")[0] for r in refused] == [
        "readings.value",
        "readings.ts",
        "readings.device_id",
    ]


def test_unconvertible_batch_falls_back_to_row_checks() -> None:
    batcher = ColumnBatcher(table("readings"))
    batcher.extend(
        {"device_id": ["d1", "d2"], "ts": [DAY1, DAY1], "metric": ["m", "m"], "value": [1.0, "x"],
         "quality": [0, 0], "source": ["s", "s"], "site": ["x", "x"], "ingest_ts": [DAY1, DAY1]},
        2, b"batch", "src",
    )  # fmt: skip
    batcher.append({**reading(DAY1), "colour": "red"}, b"odd", "src")
    batch, refused = batcher.take()
    assert batch.column("device_id").to_pylist() == ["d1"]
    assert sorted(r.reason for r in refused) == [
        "readings.colour: not a column of this table",
        "readings.value: expected a number, got str 'x'",
    ]


def test_acks_run_only_after_the_rows_are_on_disk(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    buffer = LandingBuffer(LandingWriter(layout), IngestMetrics(), FlushPolicy())
    seen_on_ack: list[int] = []

    def ack() -> None:
        seen_on_ack.append(sum(pq.read_table(p).num_rows for p in layout.landing_root.rglob("*.parquet")))

    buffer.add("s", table("readings"), [reading(DAY1), reading(DAY1 + 1)], b"raw", ack)
    assert seen_on_ack == []
    asyncio.run(buffer.flush())
    assert seen_on_ack == [2]


def test_invalid_rows_go_to_rejected_and_valid_ones_land(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    metrics = IngestMetrics()
    buffer = LandingBuffer(LandingWriter(layout), metrics, FlushPolicy())
    buffer.add(
        "s", table("readings"), [reading(DAY1), {**reading(DAY1), "value": "high"}], b"topic payload", None
    )
    buffer.add_reject("s", b"\xff" * 10_000, "invalid JSON: boom", None)
    asyncio.run(buffer.flush())
    readings = pq.read_table(layout.landing(table("readings")))
    rejected = pq.read_table(layout.landing(table("rejected"))).to_pylist()
    assert readings.num_rows == 1
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == ["invalid JSON: boom", "readings.value: expected a number, got str 'high'"]
    assert max(len(r["raw"]) for r in rejected) == 4096
    assert metrics.rejected.labels("s", "invalid JSON")._value.get() == 1


def test_failed_write_does_not_ack(tmp_path: Path) -> None:
    blocker = tmp_path / "landing"
    blocker.write_text("a file where the landing directory should be")
    buffer = LandingBuffer(LandingWriter(DataLayout(tmp_path)), IngestMetrics(), FlushPolicy())
    acked: list[bool] = []
    buffer.add("s", table("readings"), [reading(DAY1)], b"raw", lambda: acked.append(True))
    with pytest.raises(OSError):
        asyncio.run(buffer.flush())
    assert acked == []


def test_backpressure_signal(tmp_path: Path) -> None:
    buffer = LandingBuffer(
        LandingWriter(DataLayout(tmp_path)), IngestMetrics(), FlushPolicy(max_buffered_rows=2)
    )
    ctx = buffer.context("s", "x")
    assert ctx.ready()
    ctx.emit(table("readings"), [reading(DAY1), reading(DAY1 + 1)], b"raw")
    assert not ctx.ready()
    asyncio.run(buffer.flush())
    assert ctx.ready()
    assert pa.types.is_dictionary(table("readings").schema.field("device_id").type)


def test_landing_bound_holds_rows_back_until_it_drains(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    writer = LandingWriter(layout)
    buffer = LandingBuffer(writer, IngestMetrics(), FlushPolicy(max_landing_bytes=1, max_buffered_rows=2))
    acked: list[int] = []
    buffer.add("s", table("readings"), [reading(DAY1)], b"first", lambda: acked.append(1))
    asyncio.run(buffer.flush())  # under the bound: lands, and now the zone is over it
    assert acked == [1] and writer.landing_bytes > 1
    ctx = buffer.context("s", "x")
    ctx.emit(table("readings"), [reading(DAY1 + 1), reading(DAY1 + 2)], b"second", lambda: acked.append(2))
    with pytest.raises(LandingFull, match="bound 1"):
        asyncio.run(buffer.flush())
    assert acked == [1], "nothing is acknowledged while the bound holds"
    assert buffer.buffered_rows() == 2 and not ctx.ready()
    for path in layout.landing_root.rglob("*.parquet"):
        path.unlink()  # the pipeline drained the landing zone
    writer.measure_usage()
    asyncio.run(buffer.flush())
    assert acked == [1, 2] and ctx.ready()


def test_lag_per_source_is_measured_at_flush(tmp_path: Path) -> None:
    metrics = IngestMetrics()
    buffer = LandingBuffer(LandingWriter(DataLayout(tmp_path)), metrics, FlushPolicy())
    now = int(time.time() * 1000)
    buffer.add("late-gw", table("readings"), [{**reading(now - 60_000), "source": "late-gw"}], b"", None)
    buffer.add("live", table("readings"), [{**reading(now - 100), "source": "live"}], b"", None)
    asyncio.run(buffer.flush())
    assert 59 < metrics.event_lag.labels("late-gw")._value.get() < 70
    assert metrics.event_lag.labels("live")._value.get() < 10
