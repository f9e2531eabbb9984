"""Simulated MQTT sensors: publish JSON telemetry and write a manifest of what
was sent, so tests can check counts and sums against the lake."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DISTRICTS = ("haidian", "chaoyang", "dongcheng", "xicheng", "fengtai")
DEVICE_TYPES = ("air", "noise", "water")
METRICS = {"air": ("pm25", "temperature"), "noise": ("db",), "water": ("level", "flow")}


@dataclass
class Manifest:
    """What the simulator sent and the broker acknowledged (QoS 1) or accepted (QoS 0)."""

    messages: int = 0
    readings: int = 0
    value_sum: float = 0.0
    per_device: dict[str, int] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))


def device_topic(index: int) -> tuple[str, str]:
    device_type = DEVICE_TYPES[index % len(DEVICE_TYPES)]
    district = DISTRICTS[index % len(DISTRICTS)]
    device_id = f"{device_type}-{index:06d}"
    return device_id, f"city/{district}/{device_type}/{device_id}/telemetry"


def run_simulator(
    url: str,
    devices: int,
    rate_hz: float,
    duration_s: float,
    qos: int = 1,
    seed: int = 7,
    progress: Callable[[Manifest], None] | None = None,
) -> Manifest:
    """Each device publishes one message with its metrics ``rate_hz`` times a second."""
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"citylake-sim-{time.monotonic_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    client.loop_start()
    rng = random.Random(seed)
    manifest = Manifest()
    pending: list[mqtt.MQTTMessageInfo] = []
    interval = 1.0 / rate_hz if rate_hz > 0 else 0.0
    start = time.monotonic()
    tick = 0
    try:
        while time.monotonic() - start < duration_s or tick == 0:
            ts = int(time.time() * 1000)
            for index in range(devices):
                device_id, topic = device_topic(index)
                device_type = DEVICE_TYPES[index % len(DEVICE_TYPES)]
                payload: dict[str, object] = {"ts": ts}
                for metric in METRICS[device_type]:
                    value = round(rng.uniform(0, 100), 3)
                    payload[metric] = value
                    manifest.value_sum += value
                    manifest.readings += 1
                pending.append(client.publish(topic, json.dumps(payload), qos=qos))
                manifest.messages += 1
                manifest.per_device[device_id] = manifest.per_device.get(device_id, 0) + 1
                manifest.first_ts = manifest.first_ts or ts
                manifest.last_ts = ts
            tick += 1
            for info in pending:
                info.wait_for_publish(timeout=30)
            pending.clear()
            if progress is not None:
                progress(manifest)
            next_at = start + tick * interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        client.disconnect()
        client.loop_stop()
    return manifest
