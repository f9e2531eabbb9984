"""Simulated gateways pushing JSON readings to an ``http_push`` source: each
device posts one object with its metrics per tick, with its bearer token and an
Idempotency-Key, and counts only what was answered 200 (durable in landing)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from citylake_devstack.simulators.mqtt import METRICS, device_topic
from citylake_devstack.simulators.signals import city_value


@dataclass
class PushResult:
    requests: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # status -> count
    errors: int = 0


def run_push_simulator(
    url: str,
    token: str,
    devices: int,
    rate_hz: float,
    duration_s: float,
    seed: int = 7,
    timeout_s: float = 10.0,
    stop: Callable[[], bool] = lambda: False,
) -> PushResult:
    """POST ``{url}/{device_id}`` ``rate_hz`` times a second per device.

    ``url`` is the source's push prefix (``http://host:port/v1/push``). A
    request that fails at the transport is counted and the run goes on, as a
    field gateway would: the next tick sends fresh readings.
    """
    rng = random.Random(seed)
    result = PushResult()
    interval = 1.0 / rate_hz if rate_hz > 0 else 0.0
    headers = {"Authorization": f"Bearer {token}"}
    start = time.monotonic()
    tick = 0
    with httpx.Client(timeout=timeout_s, headers=headers) as client:
        while (time.monotonic() - start < duration_s or tick == 0) and not stop():
            ts = int(time.time() * 1000)
            for index in range(devices):
                device_id, _topic = device_topic(index)
                device_type = device_id.split("-", 1)[0]
                body: dict[str, float | int] = {"ts": ts}
                for metric in METRICS[device_type]:
                    body[metric] = city_value(metric, index, ts, rng)
                result.requests += 1
                try:
                    answer = client.post(
                        f"{url.rstrip('/')}/{device_id}",
                        json=body,
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                except httpx.HTTPError:
                    result.errors += 1
                    continue
                if answer.status_code == 200:
                    result.accepted += int(answer.json().get("accepted", 0))
                else:
                    result.refused[answer.status_code] = result.refused.get(answer.status_code, 0) + 1
            tick += 1
            if interval:
                time.sleep(max(0.0, start + tick * interval - time.monotonic()))
    return result
