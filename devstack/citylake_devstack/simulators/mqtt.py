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

from citylake_devstack.simulators.signals import city_value

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
    # Every acknowledged reading as (device_id, metric, ts), when asked for:
    # what a test compares the landing zone or the lake with, exactly.
    keys: list[tuple[str, str, int]] | None = None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        if data.get("keys") is not None:
            data["keys"] = [tuple(k) for k in data["keys"]]
        return cls(**data)


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
    record_keys: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> Manifest:
    """Each device publishes one message with its metrics ``rate_hz`` times a second."""
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"citylake-sim-{time.monotonic_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    client.loop_start()
    rng = random.Random(seed)
    manifest = Manifest(keys=[] if record_keys else None)
    pending: list[tuple[mqtt.MQTTMessageInfo, str, int, list[tuple[str, float]]]] = []
    interval = 1.0 / rate_hz if rate_hz > 0 else 0.0
    start = time.monotonic()
    tick = 0
    try:
        while (time.monotonic() - start < duration_s or tick == 0) and not stop():
            ts = int(time.time() * 1000)
            if manifest.last_ts is not None and ts <= manifest.last_ts:
                ts = manifest.last_ts + 1  # one message per device per millisecond at most
            for index in range(devices):
                device_id, topic = device_topic(index)
                device_type = DEVICE_TYPES[index % len(DEVICE_TYPES)]
                payload: dict[str, object] = {"ts": ts}
                values = []
                for metric in METRICS[device_type]:
                    value = city_value(metric, index, ts, rng)
                    payload[metric] = value
                    values.append((metric, value))
                pending.append((client.publish(topic, json.dumps(payload), qos=qos), device_id, ts, values))
            tick += 1
            for info, device_id, sent_ts, sent_values in pending:
                info.wait_for_publish(timeout=30)
                if not info.is_published():
                    continue  # the broker never acknowledged it: not in the manifest
                manifest.messages += 1
                manifest.readings += len(sent_values)
                manifest.value_sum += sum(v for _, v in sent_values)
                manifest.per_device[device_id] = manifest.per_device.get(device_id, 0) + 1
                manifest.first_ts = manifest.first_ts or sent_ts
                manifest.last_ts = sent_ts
                if manifest.keys is not None:
                    manifest.keys.extend((device_id, metric, sent_ts) for metric, _ in sent_values)
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
