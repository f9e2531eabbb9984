"""The live feed: landed readings, published through the Dapr sidecar.

Services keep a hot tier (latest values, the recent window) from this feed so
the most frequent questions never touch Parquet. It is published only after
the landing commit, so it never shows a reading the lake could lose, and it is
best effort: a slow or absent sidecar costs dropped batches (counted), never a
held-back source. The lake stays the truth; the hot tier rebuilds from it.

Each message is one Arrow IPC stream (the readings schema) sent with Dapr's
``rawPayload`` so the broker carries the bytes as they are, no CloudEvent
envelope or base64.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import quote

import httpx
import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter

from citylake.schemas import TableSpec

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
LIVE_TABLES = ("readings",)


def encode(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def decode(payload: bytes) -> pa.Table:
    """The inverse of ``encode``; raises ``pa.ArrowInvalid`` on anything else."""
    return pa.ipc.open_stream(payload).read_all()


class LivePublisher:
    """Queues landed batches and publishes them from one task."""

    def __init__(
        self,
        dapr_http_port: int,
        pubsub: str,
        topic: str,
        registry: CollectorRegistry | None = None,
        max_queued: int = 64,
        api_token: str | None = None,
    ) -> None:
        self.url = (
            f"http://127.0.0.1:{dapr_http_port}/v1.0/publish/{quote(pubsub, safe='')}/"
            f"{quote(topic, safe='')}?metadata.rawPayload=true"
        )
        headers = {"content-type": ARROW_STREAM}
        if api_token:
            headers["dapr-api-token"] = api_token
        self._client = httpx.AsyncClient(headers=headers, timeout=5.0)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None
        self.published = Counter(
            "citylake_live_published_batches", "landed batches published to the live topic", registry=registry
        )
        self.dropped = Counter(
            "citylake_live_dropped_batches",
            "landed batches not published (queue full or sidecar refused); the lake still has them",
            ["reason"],
            registry=registry,
        )

    def offer(self, batches: list[tuple[TableSpec, pa.RecordBatch]]) -> None:
        """Called after a landing commit, on the event loop; never blocks."""
        for spec, batch in batches:
            if spec.name not in LIVE_TABLES or batch.num_rows == 0:
                continue
            try:
                self._queue.put_nowait(encode(batch))
            except asyncio.QueueFull:
                self.dropped.labels("queue_full").inc()

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_loop())

    async def _publish_loop(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._publish(payload)
            finally:
                self._queue.task_done()

    async def _publish(self, payload: bytes) -> None:
        try:
            response = await self._client.post(self.url, content=payload)
        except httpx.HTTPError as exc:
            self.dropped.labels("sidecar_unreachable").inc()
            log.warning("live feed: sidecar unreachable (%s); batch dropped, the lake has it", exc)
            return
        if response.status_code >= 300:
            self.dropped.labels(f"http_{response.status_code}").inc()
            log.warning("live feed: sidecar answered %s: %s", response.status_code, response.text[:200])
            return
        self.published.inc()

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Give queued batches a moment to go out at shutdown."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._queue.join()

    async def close(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()
