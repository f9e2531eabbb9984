"""HTTP push adapter with the real IngestRunner and real HTTP requests: a 200
means the readings are already in landing Parquet, bad input is answered with
the reason that also goes to ``rejected``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import free_port
from tests.landing_rows import landed, make_runner

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000
TOKEN = "gateway-a-0123456789abcdef"
OTHER_TOKEN = "gateway-b-0123456789abcdef"


def push_source(port: int, **extra: object) -> dict[str, object]:
    return {
        "name": "push",
        "type": "http_push",
        "url": f"http://127.0.0.1:{port}",
        "tokens": [TOKEN, OTHER_TOKEN],
        "units": {"water_level": "m"},
        "max_body_bytes": 1024,
        **extra,
    }


@pytest.fixture
async def pushing(
    city_config: Callable[..., Path],
) -> AsyncIterator[tuple[IngestRunner, DataLayout, httpx.AsyncClient]]:
    port, gateway_port = free_port(), free_port()
    gateway = push_source(gateway_port, name="gateway", path="/v1/gateway", tokens=[OTHER_TOKEN])
    runner, layout = make_runner(city_config(sources=[push_source(port), gateway]))
    await runner.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
        client.headers["authorization"] = f"Bearer {TOKEN}"
        yield runner, layout, client
    await runner.stop()


def readings_of(layout: DataLayout, device_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (r["metric"], int(r["ts"].timestamp() * 1000)): r
        for r in landed(layout, "readings")
        if r["device_id"] == device_id
    }


async def test_single_and_batched_pushes_are_landed_when_answered(
    pushing: tuple[IngestRunner, DataLayout, httpx.AsyncClient],
) -> None:
    runner, layout, client = pushing
    response = await client.post(
        "/v1/push/gauge-1", content=orjson.dumps({"ts": TS, "water_level": 2.5, "gate": "open"})
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2}
    # No waiting: the answer was sent after the landing commit.
    rows = readings_of(layout, "gauge-1")
    assert rows[("water_level", TS)]["value"] == 2.5
    assert rows[("water_level", TS)]["unit"] == "m"
    assert rows[("gate", TS)]["text"] == "open"
    assert rows[("gate", TS)]["value"] is None
    assert {r["source"] for r in rows.values()} == {"push"}
    assert {r["site"] for r in rows.values()} == {"test-site"}
    assert {r["quality"] for r in rows.values()} == {0}

    batch = [{"ts": TS + i * 1000, "water_level": 1.0 + i, "alarm": i == 2} for i in range(3)]
    response = await client.post("/v1/push/gauge%2F2", content=orjson.dumps(batch))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 6}
    rows = readings_of(layout, "gauge/2")  # percent-decoded path segment
    assert sorted((m, ts, r["value"]) for (m, ts), r in rows.items()) == [
        ("alarm", TS, 0.0),
        ("alarm", TS + 1000, 0.0),
        ("alarm", TS + 2000, 1.0),
        ("water_level", TS, 1.0),
        ("water_level", TS + 1000, 2.0),
        ("water_level", TS + 2000, 3.0),
    ]

    # The other source: device ids in the payload, its own token only.
    gateway = runner.sources[1]
    url = f"http://127.0.0.1:{gateway.config.url.rsplit(':', 1)[1]}/v1/gateway"
    body = orjson.dumps(
        [{"device_id": "g-1", "ts": TS, "flow": 7}, {"device_id": "g-2", "ts": TS, "flow": 8}]
    )
    refused = await client.post(url, content=body)  # TOKEN is not one of the gateway's
    assert refused.status_code == 401
    response = await client.post(url, content=body, headers={"authorization": f"Bearer {OTHER_TOKEN}"})
    assert response.status_code == 200, response.text
    assert readings_of(layout, "g-1")[("flow", TS)]["value"] == 7.0
    assert readings_of(layout, "g-2")[("flow", TS)]["source"] == "gateway"
    assert landed(layout, "rejected") == []

    # water_level is a number (fixed by its first reading): a text one is
    # rejected alone, and the answer says so.
    mixed = orjson.dumps({"ts": TS + 9000, "water_level": "2.6", "gate": "shut"})
    response = await client.post("/v1/push/gauge-1", content=mixed)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": 1}
    assert readings_of(layout, "gauge-1")[("gate", TS + 9000)]["text"] == "shut"
    assert ("water_level", TS + 9000) not in readings_of(layout, "gauge-1")
    [conflict] = landed(layout, "rejected")
    assert conflict["reason"].startswith(
        "metric type conflict: source push device gauge-1 metric water_level expects number"
    )


async def test_refusals_are_answered_with_the_rejected_reason(
    pushing: tuple[IngestRunner, DataLayout, httpx.AsyncClient],
) -> None:
    runner, layout, client = pushing
    good = orjson.dumps({"ts": TS, "water_level": 1.5})

    for headers in ({"authorization": "Bearer wrong-token-0123456789"}, {"authorization": "Basic eDp5"}):
        response = await client.post("/v1/push/gauge-1", content=good, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    no_auth = httpx.AsyncClient(base_url=str(client.base_url), timeout=20)
    async with no_auth:
        assert (await no_auth.post("/v1/push/gauge-1", content=good)).status_code == 401
    assert (await client.post("/v1/other/gauge-1", content=good)).status_code == 404
    assert (await client.get("/v1/push/gauge-1")).status_code == 405

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: chunked transfer, stopped at the limit while reading.
        for _ in range(20):
            yield b"[" + b" " * 98 + b"]"

    big = orjson.dumps({"ts": TS, "pad": "x" * 2000})
    cases: list[tuple[bytes | Callable[[], AsyncIterator[bytes]], int, str]] = [
        (b"{broken json", 400, "invalid JSON: "),
        (b"\xff\xfe\xfa not utf-8", 400, "invalid JSON: "),
        (orjson.dumps({"ts": "noon", "x": 1}), 400, "timestamp 'ts' must be a number of ms, got str"),
        (
            orjson.dumps({"ts": TS, "ok": 1, "level": {"v": 1}}),
            400,
            "readings.value: expected a number, got dict",
        ),
        (big, 413, f"body of {len(big)} bytes exceeds max_body_bytes 1024"),
        (chunks, 413, "body of more than 1024 bytes exceeds max_body_bytes 1024"),
    ]
    for body, status, prefix in cases:
        before = len(landed(layout, "rejected"))
        content = body() if callable(body) else body
        response = await client.post("/v1/push/gauge-9", content=content)
        assert response.status_code == status, (prefix, response.text)
        reason = response.json()["error"]
        assert reason.startswith(prefix), reason
        assert reason.endswith("(path /v1/push/gauge-9)"), reason
        # The reject is durable when the answer arrives, with the same reason.
        rejected = landed(layout, "rejected")
        assert len(rejected) == before + 1
        assert rejected[-1]["reason"] == reason
        assert rejected[-1]["source"] == "push"
        if status == 400:
            assert rejected[-1]["raw"] == b"POST /v1/push/gauge-9 " + body  # type: ignore[operator]
    # All or nothing: the valid neighbour "ok" of the nested value did not land.
    assert readings_of(layout, "gauge-9") == {}
    assert runner.sources[0].responses == {401: 3, 404: 1, 405: 1, 400: 4, 413: 2}  # type: ignore[attr-defined]


async def test_answer_waits_for_durability_and_times_out_with_503(city_config: Callable[..., Path]) -> None:
    port = free_port()
    never = FlushPolicy(max_age_s=3600, max_rows=10**9, max_bytes=10**12)
    runner, layout = make_runner(city_config(sources=[push_source(port, ack_timeout_s=0.5)]), never)
    await runner.start()
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/v1/push/gauge-1",
                content=orjson.dumps({"ts": TS, "water_level": 4.0}),
                headers={"authorization": f"Bearer {TOKEN}", "idempotency-key": "req-1"},
            )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert landed(layout, "readings") == []
    finally:
        await runner.stop()
    # The rows were buffered, not lost: the final flush at stop lands them.
    assert [r["value"] for r in landed(layout, "readings")] == [4.0]

    # After a restart the same Idempotency-Key is recognised: answered 200, not landed twice.
    again, _ = make_runner(city_config(sources=[push_source(port)]))
    await again.start()
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/v1/push/gauge-1",
                content=orjson.dumps({"ts": TS, "water_level": 4.0}),
                headers={"authorization": f"Bearer {TOKEN}", "idempotency-key": "req-1"},
            )
        assert response.status_code == 200
        assert response.json()["duplicate"] is True
    finally:
        await again.stop()
    await asyncio.sleep(0)
    assert [r["value"] for r in landed(layout, "readings")] == [4.0]


async def test_simulated_gateways_push_and_every_accepted_reading_is_landed(
    pushing: tuple[IngestRunner, DataLayout, httpx.AsyncClient],
) -> None:
    """``citylake simulate http-push``'s client against the real source: what
    the source answered 200 for is exactly what landing holds."""
    from citylake_devstack.simulators.http_push import run_push_simulator

    _runner, layout, client = pushing
    prefix = str(client.base_url.join("/v1/push"))
    result = await asyncio.to_thread(run_push_simulator, prefix, TOKEN, 6, 4.0, 0.5)
    assert result.errors == 0 and result.refused == {}, result
    assert result.requests >= 6
    simulated = [
        r for r in landed(layout, "readings") if r["device_id"].split("-")[0] in ("air", "noise", "water")
    ]
    assert len(simulated) == result.accepted > 0
    assert {r["device_id"] for r in simulated} == {
        f"{t}-{i:06d}" for i, t in enumerate(["air", "noise", "water"] * 2)
    }
