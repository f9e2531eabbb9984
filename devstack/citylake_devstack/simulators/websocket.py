"""Simulated gateways pushing JSON readings over WebSocket (the ``websockets``
library's own client): each opens ``/v1/ws/<device_id>`` with its bearer
token, sends messages in the HTTP push shapes and counts the acks, which the
platform sends once the readings are landed."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import connect


@dataclass
class GatewayStats:
    sent: int = 0
    accepted: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)


def readings_message(step: int, batch: int) -> bytes:
    now = int(time.time() * 1000)
    items = [{"ts": now - i * 1000, "noise_db": round(55 + 5 * math.sin(step + i), 2)} for i in range(batch)]
    return orjson.dumps(items if batch > 1 else items[0])


async def run_gateway(
    url: str, device_id: str, token: str, messages: int, batch: int = 1, interval_s: float = 0.0
) -> GatewayStats:
    stats = GatewayStats()
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url.rstrip('/')}/v1/ws/{device_id}", additional_headers=headers) as ws:
        for step in range(messages):
            await ws.send(readings_message(step, batch).decode())
            stats.sent += 1
            answer = orjson.loads(await ws.recv())
            stats.answers.append(answer)
            stats.accepted += int(answer.get("accepted", 0))
            if interval_s:
                await asyncio.sleep(interval_s)
    return stats


async def run_gateways(
    url: str, token: str, gateways: int, messages: int, batch: int, interval_s: float
) -> list[GatewayStats]:
    return await asyncio.gather(
        *(run_gateway(url, f"gw-{i:04d}", token, messages, batch, interval_s) for i in range(gateways))
    )
