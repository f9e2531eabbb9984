"""``citylake simulate coap``: NB-IoT sensors on a real CoAP server (Debian's
libcoap ``coap-server``), each an observable resource the simulator updates
with ``coap-client`` PUTs in SenML JSON; or, with ``push_to``, sensors that
POST SenML to a CoAP server (citylake's ``mode: server``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from citylake_devstack.coap_server import CoapServer, coap_client, start_coap_server


def senml_pack(device: int, now_s: float) -> bytes:
    """An air-quality reading of simulated device ``device`` at ``now_s``."""
    phase = now_s / 60 + device
    return orjson.dumps([
        {"bn": f"air-{device}:", "bt": round(now_s, 3), "n": "pm25", "u": "ug/m3",
         "v": round(35 + 20 * math.sin(phase), 2)},
        {"n": "humidity", "u": "%RH", "v": round(55 + 10 * math.cos(phase), 1)},
    ])  # fmt: skip


@dataclass
class CoapSimulation:
    server: CoapServer | None
    updates: int = 0
    failures: int = 0


def run_coap_simulator(
    workdir: Path,
    devices: int,
    duration_s: float,
    every_s: float = 1.0,
    push_to: str | None = None,
    on_start: Callable[[CoapSimulation], None] | None = None,
) -> CoapSimulation:
    server = None if push_to is not None else start_coap_server(workdir, max_dynamic_resources=devices + 1)
    simulation = CoapSimulation(server)
    if on_start is not None:
        on_start(simulation)
    try:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            for device in range(devices):
                if push_to is not None:
                    done = coap_client(
                        "post", f"{push_to.rstrip('/')}/air-{device}", senml_pack(device, time.time()), 110
                    )
                else:
                    assert server is not None
                    done = coap_client(
                        "put", f"{server.url}/air/{device}", senml_pack(device, time.time()), 110
                    )
                if done.returncode == 0:
                    simulation.updates += 1
                else:
                    simulation.failures += 1
            time.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
    finally:
        if server is not None:
            server.process.stop()
    return simulation
