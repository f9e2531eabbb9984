"""What the scale run adds beside the devices: freshness markers published at
the edge, and a query load generator against the query service.

Both run as threads of the orchestrator and record raw events (one per marker,
one per request); the report derives every percentile from those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citylake_devstack.scale.plan import MARKER_TOPIC
from citylake_devstack.scalereport.record import Marker, Query
from citylake_devstack.simulators.mqtt import device_topic

log = logging.getLogger(__name__)


class MarkerPublisher:
    """Publishes one marker reading (``seq`` as its value) every ``every_s``
    at QoS 1 and notes when the broker acknowledged it: the edge's promise,
    from which freshness is timed (as in bench/bench_freshness.py)."""

    def __init__(self, url: str, every_s: float, clock: Callable[[], float]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.every_s = every_s
        self.clock = clock  # seconds since the load started
        self.markers: list[Marker] = []
        self.unacked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="markers", daemon=True)

    def publish_one(self, client: mqtt.Client, seq: int) -> float | None:
        """One marker; the ack time in seconds since the load started, or None."""
        payload = json.dumps({"ts": int(time.time() * 1000), "seq": float(seq)})
        info = client.publish(MARKER_TOPIC, payload, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(30)
        return self.clock() if info.is_published() else None

    def connect(self, name: str) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"citylake-scale-{name}")
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        return client

    def _run(self) -> None:
        client = self.connect("markers")
        try:
            seq = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                acked = self.publish_one(client, seq)
                if acked is None:
                    self.unacked += 1
                else:
                    self.markers.append(Marker(seq, acked))
                seq += 1
                next_at += self.every_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            client.disconnect()
            client.loop_stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(35)


@dataclass(frozen=True)
class QueryMix:
    """Shares of the request kinds: latest value (hot tier), the last minutes
    of a device (hot tier), and per-minute rollups of the last half hour (the
    lake, written by the streaming rollups job)."""

    latest: float = 0.5
    recent: float = 0.3
    rollups: float = 0.2

    def pick(self, rng: random.Random) -> str:
        x = rng.random() * (self.latest + self.recent + self.rollups)
        if x < self.latest:
            return "latest"
        return "recent" if x < self.latest + self.recent else "rollups"


@dataclass
class QueryLoad:
    """Open-loop requests at ``rate`` per second (each sent on schedule whether
    or not earlier ones answered), for a device among those that reported.

    ``base_url`` is the query service or, through Dapr, the sidecar's
    ``/v1.0/invoke/query/method`` prefix. A request still unanswered after
    ``timeout_s``, refused, or shed because ``max_in_flight`` were already
    waiting, is recorded with status 0."""

    base_url: str
    rate: float
    clock: Callable[[], float]
    reporting_devices: Callable[[], int]
    mix: QueryMix = field(default_factory=QueryMix)
    timeout_s: float = 10.0
    max_in_flight: int = 200
    seed: int = 5
    queries: list[Query] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="queries", daemon=True)
        self._rng = random.Random(self.seed)
        self._in_flight = 0

    def _path(self, kind: str) -> tuple[str, dict[str, str]]:
        count = max(1, self.reporting_devices())
        device_id, _ = device_topic(self._rng.randrange(count))
        now = datetime.now(UTC)
        if kind == "latest":
            return f"v1/devices/{device_id}/latest", {}
        if kind == "recent":
            start = now - timedelta(minutes=5)
            return f"v1/devices/{device_id}/readings", {"from": start.isoformat(), "to": now.isoformat()}
        start = now - timedelta(minutes=30)
        return f"v1/devices/{device_id}/rollups/1m", {"from": start.isoformat(), "to": now.isoformat()}

    async def _one(self, client: aiohttp.ClientSession, kind: str, path: str, params: dict[str, str]) -> None:
        sent = self.clock()
        started = time.perf_counter()
        status = 0
        try:
            async with client.get(f"{self.base_url}/{path}", params=params) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("query %s failed: %s", path, exc)
        finally:
            self._in_flight -= 1
        self.queries.append(Query(sent, kind, (time.perf_counter() - started) * 1000, status))

    async def _run(self) -> None:
        # aiohttp, not httpx: against a constant route here httpx's AsyncClient
        # took 3.3-3.6 ms of CPU per request and aiohttp 0.12-0.13 ms, and the
        # load must leave the machine's CPU to the system under test.
        connector = aiohttp.TCPConnector(limit=64)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                kind = self.mix.pick(self._rng)
                path, params = self._path(kind)
                if self._in_flight >= self.max_in_flight:
                    self.queries.append(Query(self.clock(), kind, 0.0, 0))
                else:
                    self._in_flight += 1
                    task = asyncio.create_task(self._one(client, kind, path, params))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)
