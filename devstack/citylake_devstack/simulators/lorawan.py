"""Simulated ChirpStack v4: integration events in its documented JSON shapes on MQTT.

ChirpStack itself needs PostgreSQL, Redis and a gateway bridge; what citylake
sees of it is only what its MQTT integration publishes, so the simulator
publishes exactly that (``application/<app>/device/<devEui>/event/<type>``,
camelCase JSON as ChirpStack's protobuf JSON mapping writes it) to a real
broker with QoS 1, waiting for each PUBACK.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

APPLICATION_ID = "17c82e96-be03-4f38-aef3-f83d48582d97"
TENANT_ID = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
Event = tuple[str, bytes]


def rfc3339(ts_ms: int) -> str:
    """As ChirpStack writes ``time``: nanoseconds and an explicit offset."""
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}123+00:00"


def device_info(dev_eui: str, name: str = "", profile: str = "Environment sensor") -> dict[str, object]:
    return {
        "tenantId": TENANT_ID, "tenantName": "City",
        "applicationId": APPLICATION_ID, "applicationName": "Environment",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad", "deviceProfileName": profile,
        "deviceName": name or f"sensor-{dev_eui[-4:]}", "devEui": dev_eui, "tags": {"district": "gulou"},
    }  # fmt: skip


def topic(dev_eui: str, event: str, application_id: str = APPLICATION_ID) -> str:
    return f"application/{application_id}/device/{dev_eui}/event/{event}"


def up(
    dev_eui: str, f_cnt: int, obj: dict[str, object], ts_ms: int, rssi: int = -57, snr: float = 9.5
) -> Event:
    payload = {
        "deduplicationId": f"3ac7e3c4-4401-4b8d-9386-{f_cnt:012d}",
        "time": rfc3339(ts_ms),
        "deviceInfo": device_info(dev_eui),
        "devAddr": "00189440", "adr": True, "dr": 5, "fCnt": f_cnt, "fPort": 2, "confirmed": False,
        "data": base64.b64encode(json.dumps(obj).encode()[:16]).decode(),
        "object": obj,
        "rxInfo": [
            {"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": rssi, "snr": snr,
             "location": {}, "context": "E3OWOQ==", "metadata": {"region_config_id": "eu868"}},
            {"gatewayId": "0016c001f153a14d", "uplinkId": 17, "rssi": rssi - 20, "snr": snr - 8,
             "context": "AA=="},
        ],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                                                  "codeRate": "CR_4_5"}}},
    }  # fmt: skip
    if f_cnt == 0:
        del payload["fCnt"]  # the protobuf JSON mapping leaves a zero out
    return topic(dev_eui, "up"), json.dumps(payload).encode()


def join(dev_eui: str, ts_ms: int) -> Event:
    payload = {"deduplicationId": "c9dbe358-2578-4fb7-b295-66b44edc45a6", "time": rfc3339(ts_ms),
               "deviceInfo": device_info(dev_eui), "devAddr": "00189440"}  # fmt: skip
    return topic(dev_eui, "join"), json.dumps(payload).encode()


def status(dev_eui: str, ts_ms: int, battery: float, margin: int) -> Event:
    payload = {"time": rfc3339(ts_ms), "deviceInfo": device_info(dev_eui), "margin": margin,
               "externalPowerSource": False, "batteryLevelUnavailable": False,
               "batteryLevel": battery}  # fmt: skip
    return topic(dev_eui, "status"), json.dumps(payload).encode()


def ack(dev_eui: str, ts_ms: int, f_cnt_down: int) -> Event:
    payload = {"deduplicationId": "7b3d1c2e-0000-4000-8000-000000000001", "time": rfc3339(ts_ms),
               "deviceInfo": device_info(dev_eui), "queueItemId": "21b0bd0c-4d8b-4c7f-9f0f-4bd8ba3e5f2a",
               "acknowledged": True, "fCntDown": f_cnt_down}  # fmt: skip
    return topic(dev_eui, "ack"), json.dumps(payload).encode()


def txack(dev_eui: str, ts_ms: int, f_cnt_down: int) -> Event:
    payload = {"downlinkId": 3287, "time": rfc3339(ts_ms), "deviceInfo": device_info(dev_eui),
               "queueItemId": "21b0bd0c-4d8b-4c7f-9f0f-4bd8ba3e5f2a", "fCntDown": f_cnt_down,
               "gatewayId": "0016c001f153a14c", "txInfo": {"frequency": 868500000, "power": 14}}  # fmt: skip
    return topic(dev_eui, "txack"), json.dumps(payload).encode()


def log_event(dev_eui: str, ts_ms: int, level: str, code: str, description: str) -> Event:
    payload = {"time": rfc3339(ts_ms), "deviceInfo": device_info(dev_eui), "level": level, "code": code,
               "description": description, "context": {"deduplication_id": "x"}}  # fmt: skip
    return topic(dev_eui, "log"), json.dumps(payload).encode()


def city_sensors(devices: int, uplinks: int, start_ms: int) -> Iterator[Event]:
    """Each device joins, reports ``uplinks`` times (temperature, humidity) and its status once."""
    for n in range(devices):
        dev_eui = f"a840{n:012x}"
        yield join(dev_eui, start_ms)
        for f_cnt in range(uplinks):
            ts = start_ms + 1000 * (f_cnt + 1)
            yield up(dev_eui, f_cnt, {"temperature": 20 + n % 10 + f_cnt / 10, "humidity": 55 + n % 20}, ts)
        yield status(dev_eui, start_ms + 1000 * (uplinks + 1), 90.0 - n % 50, 7)


def publish(url: str, events: Iterable[Event], qos: int = 1, pause_s: float = 0.0) -> int:
    """Publish ``events`` to the broker at ``url``; returns how many were acknowledged."""
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chirpstack-sim-{time.monotonic_ns()}")
    client.max_inflight_messages_set(100)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    sent = 0
    try:
        infos = []
        for event_topic, payload in events:
            infos.append(client.publish(event_topic, payload, qos=qos))
            if pause_s:
                time.sleep(pause_s)
        for info in infos:
            info.wait_for_publish(10)
            sent += info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    return sent
