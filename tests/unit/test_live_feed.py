"""The live feed's encoding and its never-block promise (the sidecar path is
tested with a real daprd in tests/integration/test_hot_tier.py)."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.live import LivePublisher, decode, encode
from citylake.schemas import table


def readings_batch(n: int) -> pa.RecordBatch:
    batcher = ColumnBatcher(table("readings"))
    for i in range(n):
        batcher.append(
            {
                "device_id": f"d{i}",
                "ts": 1_764_072_000_000 + i,
                "metric": "pm25",
                "value": float(i),
                "text": None,
                "unit": "ug/m3",
                "quality": 0,
                "source": "s",
                "site": "x",
                "ingest_ts": 1_764_072_000_000,
            }
        )
    return batcher.take()[0]


def test_a_batch_survives_the_wire_with_its_schema() -> None:
    batch = readings_batch(5)
    decoded = decode(encode(batch))
    assert decoded.schema.equals(batch.schema)
    assert decoded.to_pylist() == pa.Table.from_batches([batch]).to_pylist()


@pytest.mark.parametrize("payload", [b"", b"{}", b"\xff" * 64, b"ARROW1" + b"\x00" * 10])
def test_garbage_is_refused_by_decode(payload: bytes) -> None:
    with pytest.raises((pa.ArrowInvalid, OSError)):
        decode(payload)


def test_offer_never_blocks_and_counts_what_it_drops() -> None:
    async def scenario() -> tuple[int, float]:
        registry = CollectorRegistry()
        # Port 9 (discard) on loopback: nothing listens, nothing is started.
        publisher = LivePublisher(9, "pubsub", "readings", registry=registry, max_queued=2)
        batch = readings_batch(3)
        for _ in range(5):
            publisher.offer([(table("readings"), batch), (table("device_events"), batch)])
        queued = publisher._queue.qsize()
        await publisher._client.aclose()
        dropped = registry.get_sample_value("citylake_live_dropped_batches_total", {"reason": "queue_full"})
        return queued, dropped or 0.0

    queued, dropped = asyncio.run(scenario())
    assert queued == 2, "only readings are queued, up to the bound"
    assert dropped == 3


def test_an_unreachable_sidecar_drops_the_batch_and_says_so() -> None:
    async def scenario() -> float:
        registry = CollectorRegistry()
        publisher = LivePublisher(9, "pubsub", "readings", registry=registry)
        publisher.start()
        publisher.offer([(table("readings"), readings_batch(2))])
        await publisher.close()
        value = registry.get_sample_value(
            "citylake_live_dropped_batches_total", {"reason": "sidecar_unreachable"}
        )
        return value or 0.0

    assert asyncio.run(scenario()) == 1.0
