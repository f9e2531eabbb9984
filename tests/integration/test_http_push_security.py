"""Issue 13's HTTP push cases against the real uvicorn server: a token bound to
device-id patterns cannot push for others, and Idempotency-Keys are scoped
per token, so one client cannot make another's retries look like duplicates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from citylake_devstack import free_port
from tests.integration.test_http_push_ingest import TOKEN, TS, push_source
from tests.landing_rows import landed, make_runner

pytestmark = pytest.mark.integration
BOUND = "gauges-only-0123456789abcdef"


async def test_bound_tokens_and_idempotency_keys_per_token(city_config: Callable[..., Path]) -> None:
    port = free_port()
    tokens = [{"token": BOUND, "devices": ["gauge-*", "pump-7"]}, TOKEN]
    runner, layout = make_runner(city_config(sources=[push_source(port, tokens=tokens)]))
    await runner.start()
    body = orjson.dumps({"ts": TS, "water_level": 2.5})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
        bound = {"authorization": f"Bearer {BOUND}"}
        free = {"authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/v1/push/gauge-1", content=body, headers=bound)).status_code == 200
        assert (await client.post("/v1/push/pump-7", content=body, headers=bound)).status_code == 200
        refused = await client.post("/v1/push/pump-1", content=body, headers=bound)
        assert (
            refused.status_code == 403 and "token not allowed for device 'pump-1'" in refused.json()["error"]
        )
        assert (await client.post("/v1/push/pump-1", content=body, headers=free)).status_code == 200

        # The same Idempotency-Key under two tokens: two inputs, both landed.
        key = {"idempotency-key": "retry-1"}
        first = await client.post("/v1/push/gauge-2", content=body, headers={**free, **key})
        assert first.json() == {"accepted": 1}
        other = await client.post("/v1/push/gauge-3", content=body, headers={**bound, **key})
        assert other.json() == {"accepted": 1}
        again = await client.post("/v1/push/gauge-2", content=body, headers={**free, **key})
        assert again.json() == {"accepted": None, "duplicate": True}
    await runner.stop()
    devices = sorted(r["device_id"] for r in landed(layout, "readings"))
    assert devices == ["gauge-1", "gauge-2", "gauge-3", "pump-1", "pump-7"]
    [rejected] = landed(layout, "rejected")
    assert rejected["reason"].startswith("token not allowed for device 'pump-1'")
    assert runner.metrics.rejected.labels("push", "token not allowed")._value.get() == 1
