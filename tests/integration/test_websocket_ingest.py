"""WebSocket push with the real IngestRunner, the `websockets` library's own
client as the peer over real sockets on 127.0.0.1: acks arrive after landing,
bad messages are answered with the reason that goes to ``rejected``, the
handshake needs a token, and a connection's rate is bounded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.ingest.websocket.adapter import WebSocketSource
from citylake.ingest.websocket.config import WebSocketSourceConfig
from citylake.schemas import DataLayout
from citylake_devstack import free_port
from citylake_devstack.simulators.websocket import run_gateway
from tests.landing_rows import landed

pytestmark = pytest.mark.integration
TOKEN = "gateway-a-0123456789abcdef"
TS = 1_764_072_000_000


@pytest.fixture
async def pushing(tmp_path: Path) -> AsyncIterator[tuple[WebSocketSource, DataLayout, str]]:
    port = free_port()
    config = WebSocketSourceConfig.model_validate(
        {
            "name": "ws",
            "type": "websocket",
            "url": f"ws://127.0.0.1:{port}",
            "tokens": [TOKEN],
            "units": {"noise_db": "dB(A)"},
            "max_message_bytes": 4096,
            "max_messages_per_s": 20,
            "burst": 5,
        }
    )
    source = WebSocketSource(config)
    layout = DataLayout(tmp_path / "data")
    runner = IngestRunner([source], layout, "test-site", FlushPolicy(max_age_s=0.2))
    await runner.start()
    yield source, layout, f"ws://127.0.0.1:{port}"
    await runner.stop()


async def test_messages_are_acked_after_landing(pushing: tuple[WebSocketSource, DataLayout, str]) -> None:
    _source, layout, url = pushing
    stats = await run_gateway(url, "gw-1", TOKEN, messages=3, batch=4)
    assert [a["ack"] for a in stats.answers] == [1, 2, 3]
    assert stats.accepted == 12
    # No waiting: each ack was sent after the landing commit.
    rows = [r for r in landed(layout, "readings") if r["device_id"] == "gw-1"]
    assert len(rows) == 12
    assert {(r["metric"], r["unit"], r["quality"], r["source"]) for r in rows} == {
        ("noise_db", "dB(A)", 0, "ws")
    }


async def test_handshake_refusals(pushing: tuple[WebSocketSource, DataLayout, str]) -> None:
    source, layout, url = pushing
    with pytest.raises(InvalidStatus, match="401"):
        async with connect(f"{url}/v1/ws/gw-1"):
            pass
    with pytest.raises(InvalidStatus, match="401"):
        async with connect(
            f"{url}/v1/ws/gw-1", additional_headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}
        ):
            pass
    with pytest.raises(InvalidStatus, match="404"):
        async with connect(f"{url}/elsewhere", additional_headers={"Authorization": f"Bearer {TOKEN}"}):
            pass
    assert source.counters()["handshakes_refused_unauthorized"] == 2
    assert landed(layout, "rejected") == []  # unauthenticated traffic fills nothing


async def test_bad_messages_are_answered_and_rejected(
    pushing: tuple[WebSocketSource, DataLayout, str],
) -> None:
    _source, layout, url = pushing
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with connect(f"{url}/v1/ws/gw-2", additional_headers=headers) as ws:
        await ws.send("{not json")
        bad_json = orjson.loads(await ws.recv())
        await ws.send(b"\x00\x01binary")
        binary = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"ts": "yesterday", "noise_db": 1}).decode())
        bad_ts = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"ts": TS, "noise_db": 60.5}).decode())
        good = orjson.loads(await ws.recv())
    assert bad_json["ack"] == 1 and bad_json["error"].startswith("invalid JSON")
    assert binary["ack"] == 2 and binary["error"].startswith("binary message")
    assert bad_ts["ack"] == 3 and "ts" in bad_ts["error"]
    assert good == {"ack": 4, "accepted": 1}
    reasons = sorted(r["reason"] for r in landed(layout, "rejected"))
    assert [r.split(":")[0] for r in reasons] == sorted(
        [bad_json["error"].split(":")[0], binary["error"].split(":")[0], bad_ts["error"].split(":")[0]]
    )
    # Oversized: the library closes with 1009; the reject is recorded.
    async with connect(f"{url}/v1/ws/gw-2", additional_headers=headers, max_size=None) as ws:
        await ws.send("[" + ",".join(['{"ts": 1764072000000, "noise_db": 1}'] * 200) + "]")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await _eventually(
        lambda: any(r["reason"].startswith("message too big") for r in landed(layout, "rejected"))
    )


async def test_rate_is_bounded_per_connection(pushing: tuple[WebSocketSource, DataLayout, str]) -> None:
    source, _layout, url = pushing
    headers = {"Authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    async with connect(f"{url}/v1/ws/gw-3", additional_headers=headers) as ws:
        for i in range(15):  # burst 5, then 20/s: at least 0.5 s
            await ws.send(orjson.dumps({"ts": TS + i, "noise_db": i}).decode())
        answers = [orjson.loads(await ws.recv()) for _ in range(15)]
    assert time.monotonic() - started >= 0.45
    assert [a["ack"] for a in answers] == list(range(1, 16)) and all(a["accepted"] == 1 for a in answers)
    assert source.counters()["rate_limited"] >= 1


async def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
