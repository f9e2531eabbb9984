"""The live feed into the hot tier: a Dapr pub/sub subscription, and the
background work that keeps the tier honest (eviction, catch-up from the lake).

daprd asks ``GET /dapr/subscribe`` which topics the app wants and then POSTs
each message to the route given there. Messages are Arrow IPC streams
published raw (ingest/live.py); with ``rawPayload`` daprd hands them over
either as the raw body or wrapped in a CloudEvent (``data_base64``), so both
are accepted. Answers follow Dapr's contract: ``SUCCESS`` consumes the
message, ``DROP`` discards one that can never be processed (it is counted and
logged, never retried forever).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from fastapi import APIRouter, Depends, HTTPException, Request, status
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from citylake.ingest.live import decode
from citylake.services.query.hot_tier import HotTier, LakeReader

log = logging.getLogger(__name__)

ROUTE = "/live/readings"


def _payload(body: bytes, content_type: str) -> bytes:
    if "cloudevents" not in content_type and not body.startswith(b"{"):
        return body
    event = json.loads(body)
    if "data_base64" in event:
        return base64.b64decode(event["data_base64"], validate=True)
    data = event.get("data")
    if isinstance(data, str):
        return base64.b64decode(data, validate=True)
    raise ValueError("CloudEvent without data_base64")


def app_token_guard(token: str | None) -> Callable[[Request], None]:
    """daprd calls the app with ``dapr-api-token: $APP_API_TOKEN`` when that is
    set: the one credential a sidecar can present on a subscription call."""

    def guard(request: Request) -> None:
        if token is not None and not hmac.compare_digest(request.headers.get("dapr-api-token", ""), token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or wrong dapr-api-token")

    return guard


class HotTierCollector(Collector):
    """The hot tier's sizes against its bounds, and what the bounds evicted,
    read at scrape time (citylake_hot_*)."""

    def __init__(self, hot: HotTier) -> None:
        self.hot = hot

    def collect(self) -> Iterator[Metric]:
        counts, stats, bounds = self.hot.counts(), self.hot.stats, self.hot.bounds
        for name, value, limit in (
            ("devices", counts["devices"], bounds.max_devices),
            ("metrics", len(self.hot.metrics), bounds.max_metrics),
            ("window_readings", counts["recent_readings"], bounds.max_window_rows),
        ):
            yield GaugeMetricFamily(f"citylake_hot_{name}", f"hot tier: {name.replace('_', ' ')} held", value)
            yield GaugeMetricFamily(
                f"citylake_hot_max_{name}", f"hot tier: bound on {name.replace('_', ' ')}", limit
            )
        yield GaugeMetricFamily(
            "citylake_hot_bytes",
            "hot tier: bytes of its arrays (text values aside)",
            self.hot.footprint_bytes(),
        )
        for name, value, help_ in (
            ("devices_evicted", stats.devices_evicted, "devices evicted to stay within hot_max_devices"),
            ("metrics_evicted", stats.metrics_evicted, "metrics evicted to stay within hot_max_metrics"),
            ("window_rows_evicted", stats.window_rows_evicted, "readings evicted by hot_max_window_rows"),
            ("rows_not_cached", stats.rows_not_cached, "readings no code was left for (the lake answers)"),
        ):
            yield CounterMetricFamily(f"citylake_hot_{name}", f"hot tier: {help_}", value)


def subscription_router(
    hot: HotTier,
    pubsub: str,
    topic: str,
    app_token: str | None,
    registry: CollectorRegistry | None = None,
) -> APIRouter:
    api = APIRouter(include_in_schema=False, dependencies=[Depends(app_token_guard(app_token))])
    received = Counter("citylake_hot_batches", "live batches merged into the hot tier", registry=registry)
    dropped = Counter(
        "citylake_hot_dropped_batches", "live messages that could not be read", registry=registry
    )
    if registry is not None:
        registry.register(HotTierCollector(hot))

    @api.get("/dapr/subscribe")
    def subscriptions() -> list[dict[str, object]]:
        return [{"pubsubname": pubsub, "topic": topic, "route": ROUTE, "metadata": {"rawPayload": "true"}}]

    @api.post(ROUTE)
    async def live_readings(request: Request) -> dict[str, str]:
        body = await request.body()
        try:
            batch = decode(_payload(body, request.headers.get("content-type", "")))
            await asyncio.to_thread(hot.apply, batch)
        except (
            pa.ArrowInvalid,
            ValueError,
            binascii.Error,
            json.JSONDecodeError,
            KeyError,
            TypeError,
        ) as exc:
            dropped.inc()
            log.warning("live message dropped (%d bytes): %s", len(body), exc)
            return {"status": "DROP"}
        received.inc()
        return {"status": "SUCCESS"}

    return api


@contextlib.asynccontextmanager
async def keep_hot(
    hot: HotTier, lake: LakeReader, evict_every_s: float = 10.0, catch_up_every_s: float = 30.0
) -> AsyncIterator[None]:
    """Rebuild from the lake in the background (the service reports not ready
    until done), then evict and catch up periodically until the app stops."""

    async def maintain() -> None:
        try:
            await asyncio.to_thread(hot.rebuild, lake)
        except Exception:
            log.exception("hot tier rebuild from the lake failed; queries fall back to the lake")
            return
        next_catch_up = asyncio.get_running_loop().time() + catch_up_every_s
        while True:
            await asyncio.sleep(evict_every_s)
            await asyncio.to_thread(hot.evict)
            if asyncio.get_running_loop().time() >= next_catch_up:
                since = datetime.now(UTC) - timedelta(seconds=2 * catch_up_every_s)
                try:
                    await asyncio.to_thread(hot.catch_up, lake, since)
                except Exception:
                    log.exception("hot tier catch-up from the lake failed; will retry")
                next_catch_up = asyncio.get_running_loop().time() + catch_up_every_s

    task = asyncio.create_task(maintain())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
