"""The Dapr Python SDK against citylake's hand-written sidecar clients, on the
same daprd (1.17.5, standalone, the project's component files: SQLite state,
MQTT pub/sub through mosquitto).

Operations, one at a time (latency of each call, the caller waits):
  publish-json   an alert event (JSON, with a cloudevent.id), as services/alerts do
  publish-arrow  a landed readings batch as one Arrow IPC stream with rawPayload,
                 as ingest's live feed does (encoding included on both sides)
  state-save     a JSON value, last-write
  state-cas      read, then save with the ETag (first-write): the alert rules' update
  state-get      one key

Clients:
  hand      services/sidecar.py DaprSidecar (async httpx, HTTP API) and, for
            publish-arrow, ingest/live.py LivePublisher (offer, then drain)
  sdk       dapr.clients.DaprClient (sync, gRPC API)
  sdk-aio   dapr.aio.clients.DaprClient (async, gRPC API)
  stdlib    the same HTTP requests as hand over one keep-alive http.client
            connection: what daprd's HTTP API costs without httpx, to tell the
            transport (HTTP vs gRPC) from the client library

The clients take turns in blocks of --block calls, so a neighbour's load on the
machine falls on all of them alike. p50/p99 come from
citylake_devstack.scalereport.summary.quantile; ratio = sdk / hand
(stdlib is shown without one: it is a floor, not a candidate).

    .venv/bin/python bench/bench_dapr_sdk.py [--calls 2000] [--block 100] [--rows 500]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from dapr.aio.clients import DaprClient as AsyncDaprClient
from dapr.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.conf import settings
from prometheus_client import CollectorRegistry

from citylake.ingest.live import ARROW_STREAM, LivePublisher, encode
from citylake.schemas import table
from citylake.services.sidecar import DaprSidecar, SidecarAddress
from citylake_devstack import Daprd, free_port, start_daprd, start_mosquitto
from citylake_devstack.scalereport.summary import quantile

STORE = "citylake-state"
PUBSUB = "citylake-pubsub"
CLIENTS = ("hand", "sdk", "sdk-aio", "stdlib")
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)
RULES = {
    "rules": [{"rule": {"name": f"r{i}", "metric": "pm25", "above": 75.0}, "etag": "1"} for i in range(20)]
}
EVENT = {"alert_id": "a-1", "event": "opened", "device_id": "air-1", "state": "active", "ended_at": None}

Op = Callable[[int], Awaitable[None]]


def readings_batch(rows: int) -> pa.RecordBatch:
    now = datetime.now(UTC)
    columns = {
        "device_id": [f"air-{i % 100:06d}" for i in range(rows)],
        "ts": [now] * rows,
        "metric": ["pm25"] * rows,
        "value": [float(i) for i in range(rows)],
        "text": [None] * rows,
        "unit": ["ug/m3"] * rows,
        "quality": [0] * rows,
        "source": ["sensors"] * rows,
        "site": ["bench"] * rows,
        "ingest_ts": [now] * rows,
    }
    return pa.RecordBatch.from_pydict(columns, schema=table("readings").schema)


class Clients:
    """The three clients on one sidecar, each operation as an awaitable of the call number."""

    def __init__(self, sidecar: Daprd, batch: pa.RecordBatch) -> None:
        self.batch = batch
        self.hand = DaprSidecar(SidecarAddress(sidecar.http_port))
        self.registry = CollectorRegistry()
        self.live = LivePublisher(sidecar.http_port, PUBSUB, "bench-live", registry=self.registry)
        self.sdk = DaprClient(address=f"127.0.0.1:{sidecar.grpc_port}")
        self.aio = AsyncDaprClient(address=f"127.0.0.1:{sidecar.grpc_port}")
        self.spec = table("readings")
        self.conn = http.client.HTTPConnection("127.0.0.1", sidecar.http_port, timeout=5)

    async def close(self) -> None:
        await self.live.close()
        await self.hand.aclose()
        # The SDK's close() methods carry no type hints.
        self.sdk.close()  # type: ignore[no-untyped-call]
        await self.aio.close()  # type: ignore[no-untyped-call]
        self.conn.close()

    def _stdlib(
        self, method: str, path: str, body: bytes | None = None, ctype: str = ""
    ) -> http.client.HTTPResponse:
        headers = {"content-type": ctype} if ctype else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"daprd answered {method} {path} with HTTP {response.status}")
        return response

    def ops(self) -> dict[str, dict[str, Op]]:
        return {
            "publish-json": {
                "hand": self._hand_publish_json,
                "sdk": self._sdk_publish_json,
                "sdk-aio": self._aio_publish_json,
                "stdlib": self._stdlib_publish_json,
            },
            "publish-arrow": {
                "hand": self._hand_publish_arrow,
                "sdk": self._sdk_publish_arrow,
                "sdk-aio": self._aio_publish_arrow,
                "stdlib": self._stdlib_publish_arrow,
            },
            "state-save": {
                "hand": self._hand_save,
                "sdk": self._sdk_save,
                "sdk-aio": self._aio_save,
                "stdlib": self._stdlib_save,
            },
            "state-cas": {
                "hand": self._hand_cas,
                "sdk": self._sdk_cas,
                "sdk-aio": self._aio_cas,
                "stdlib": self._stdlib_cas,
            },
            "state-get": {
                "hand": self._hand_get,
                "sdk": self._sdk_get,
                "sdk-aio": self._aio_get,
                "stdlib": self._stdlib_get,
            },
        }

    def _published(self) -> float:
        return self.registry.get_sample_value("citylake_live_published_batches_total") or 0.0

    # publish-json
    async def _hand_publish_json(self, n: int) -> None:
        await self.hand.publish(PUBSUB, "bench-alerts", EVENT, {"cloudevent.id": f"hand-{n}"})

    async def _sdk_publish_json(self, n: int) -> None:
        self.sdk.publish_event(
            PUBSUB,
            "bench-alerts",
            json.dumps(EVENT),
            data_content_type="application/json",
            publish_metadata={"cloudevent.id": f"sdk-{n}"},
        )

    async def _aio_publish_json(self, n: int) -> None:
        await self.aio.publish_event(
            PUBSUB,
            "bench-alerts",
            json.dumps(EVENT),
            data_content_type="application/json",
            publish_metadata={"cloudevent.id": f"aio-{n}"},
        )

    # publish-arrow
    async def _hand_publish_arrow(self, n: int) -> None:
        before = self._published()
        self.live.offer([(self.spec, self.batch)])
        await self.live.drain(5.0)
        if self._published() != before + 1:
            raise RuntimeError("the live feed dropped a batch: see citylake_live_dropped_batches")

    async def _sdk_publish_arrow(self, n: int) -> None:
        self.sdk.publish_event(
            PUBSUB,
            "bench-live",
            encode(self.batch),
            data_content_type=ARROW_STREAM,
            publish_metadata={"rawPayload": "true"},
        )

    async def _aio_publish_arrow(self, n: int) -> None:
        await self.aio.publish_event(
            PUBSUB,
            "bench-live",
            encode(self.batch),
            data_content_type=ARROW_STREAM,
            publish_metadata={"rawPayload": "true"},
        )

    async def _stdlib_publish_json(self, n: int) -> None:
        path = f"/v1.0/publish/{PUBSUB}/bench-alerts?metadata.cloudevent.id=stdlib-{n}"
        self._stdlib("POST", path, json.dumps(EVENT).encode(), "application/json")

    async def _stdlib_publish_arrow(self, n: int) -> None:
        path = f"/v1.0/publish/{PUBSUB}/bench-live?metadata.rawPayload=true"
        self._stdlib("POST", path, encode(self.batch), ARROW_STREAM)

    # state-save
    async def _hand_save(self, n: int) -> None:
        await self.hand.save_state(STORE, "hand-rules", RULES)

    async def _sdk_save(self, n: int) -> None:
        self.sdk.save_state(STORE, "sdk-rules", json.dumps(RULES))

    async def _aio_save(self, n: int) -> None:
        await self.aio.save_state(STORE, "aio-rules", json.dumps(RULES))

    async def _stdlib_save(self, n: int) -> None:
        item = [{"key": "stdlib-rules", "value": RULES, "options": {"concurrency": "last-write"}}]
        self._stdlib("POST", f"/v1.0/state/{STORE}", json.dumps(item).encode(), "application/json")

    # state-cas
    async def _hand_cas(self, n: int) -> None:
        entry = await self.hand.get_state(STORE, "hand-rules")
        assert entry is not None
        await self.hand.save_state(STORE, "hand-rules", entry.value, etag=entry.etag)

    async def _sdk_cas(self, n: int) -> None:
        entry = self.sdk.get_state(STORE, "sdk-rules")
        value = json.loads(entry.data)
        self.sdk.save_state(STORE, "sdk-rules", json.dumps(value), etag=entry.etag, options=FIRST_WRITE)

    async def _aio_cas(self, n: int) -> None:
        entry = await self.aio.get_state(STORE, "aio-rules")
        value = json.loads(entry.data)
        await self.aio.save_state(STORE, "aio-rules", json.dumps(value), etag=entry.etag, options=FIRST_WRITE)

    async def _stdlib_cas(self, n: int) -> None:
        self.conn.request("GET", f"/v1.0/state/{STORE}/stdlib-rules")
        response = self.conn.getresponse()
        value, etag = json.loads(response.read()), response.headers["etag"]
        item = [
            {"key": "stdlib-rules", "value": value, "etag": etag, "options": {"concurrency": "first-write"}}
        ]
        self._stdlib("POST", f"/v1.0/state/{STORE}", json.dumps(item).encode(), "application/json")

    # state-get
    async def _hand_get(self, n: int) -> None:
        entry = await self.hand.get_state(STORE, "hand-rules")
        assert entry is not None and entry.value == RULES

    async def _sdk_get(self, n: int) -> None:
        assert json.loads(self.sdk.get_state(STORE, "sdk-rules").data) == RULES

    async def _aio_get(self, n: int) -> None:
        assert json.loads((await self.aio.get_state(STORE, "aio-rules")).data) == RULES

    async def _stdlib_get(self, n: int) -> None:
        self.conn.request("GET", f"/v1.0/state/{STORE}/stdlib-rules")
        assert json.loads(self.conn.getresponse().read()) == RULES


async def measure(clients: Clients, calls: int, block: int) -> dict[str, dict[str, list[float]]]:
    clients.live.start()
    results: dict[str, dict[str, list[float]]] = {}
    for op, by_client in clients.ops().items():
        for run in by_client.values():  # warm connections, the store's key and the codecs
            for n in range(min(50, calls)):
                await run(-n - 1)
        samples: dict[str, list[float]] = {name: [] for name in CLIENTS}
        done = 0
        while done < calls:
            size = min(block, calls - done)
            for name in CLIENTS:
                run = by_client[name]
                for n in range(done, done + size):
                    start = time.perf_counter()
                    await run(n)
                    samples[name].append((time.perf_counter() - start) * 1000)
            done += size
        results[op] = samples
        print(f"  {op}: {calls} calls per client done", flush=True)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{'operation':<14} {'client':<8} {'p50 ms':>8} {'p99 ms':>8}   sdk/hand p50  p99")
    for op, samples in results.items():
        hand50, hand99 = quantile(samples["hand"], 0.5), quantile(samples["hand"], 0.99)
        for name in CLIENTS:
            p50, p99 = quantile(samples[name], 0.5), quantile(samples[name], 0.99)
            ratio = "" if name in ("hand", "stdlib") else f"{p50 / hand50:>12.2f} {p99 / hand99:>5.2f}"
            print(f"{op:<14} {name:<8} {p50:>8.3f} {p99:>8.3f}   {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per operation and client")
    parser.add_argument(
        "--block", type=int, default=100, help="calls a client makes before the next one's turn"
    )
    parser.add_argument("--rows", type=int, default=500, help="readings in the live feed's Arrow batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dapr-sdk-") as tmp:
        work = Path(tmp)
        print("starting mosquitto and daprd ...", flush=True)
        mosquitto = start_mosquitto(work / "mosquitto")
        # No app behind the sidecar: publish and state are outbound calls.
        sidecar = start_daprd("bench", free_port(), work / "dapr", mosquitto.url)
        try:
            # The SDK reads these once at import (what `dapr run` sets); its
            # client waits on this port's health before connecting.
            # (Settings sets its attributes dynamically, so mypy cannot see them.)
            settings.DAPR_HTTP_PORT = sidecar.http_port  # type: ignore[attr-defined]
            settings.DAPR_GRPC_PORT = sidecar.grpc_port  # type: ignore[attr-defined]
            batch = readings_batch(args.rows)
            print(
                f"daprd {sidecar.http_url} (gRPC {sidecar.grpc_port}); {args.calls} calls per operation and "
                f"client in blocks of {args.block}; Arrow batch {args.rows} rows, {len(encode(batch))} bytes",
                flush=True,
            )

            async def run() -> dict[str, dict[str, list[float]]]:
                clients = Clients(sidecar, batch)
                try:
                    return await measure(clients, args.calls, args.block)
                finally:
                    await clients.close()

            load_before = os.getloadavg()[0]
            report(asyncio.run(run()))
            # Figures from a shared machine mean little without how busy it was.
            print(f"\nload average (1 min): {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end")
        finally:
            sidecar.process.stop()
            mosquitto.process.stop()


if __name__ == "__main__":
    main()
