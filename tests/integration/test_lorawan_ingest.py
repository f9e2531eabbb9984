"""LoRaWAN through ChirpStack v4's MQTT integration: a real mosquitto, the
simulator publishing events in ChirpStack's documented JSON shapes with QoS 1,
and the real LorawanSource (ingest/mqtt's transport) through the real runner
into landing: object fields as readings with units, join/status/ack/txack/log
as device events, status as device attributes, a repeated uplink dropped,
hostile events rejected with reasons."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from citylake.ingest.lorawan.adapter import LorawanSource
from citylake.ingest.lorawan.config import LorawanSourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import Mosquitto
from citylake_devstack.simulators import lorawan as chirpstack
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

A, B = "a840000000000001", "a840000000000002"


async def test_chirpstack_events_through_mosquitto(mosquitto: Mosquitto, tmp_path: Path) -> None:
    source = {
        "name": "lora", "type": "lorawan", "url": mosquitto.url, "qos": 1, "client_id": "citylake-lora-test",
        "units": {"temperature": "Cel", "humidity": "%"}, "max_payload_bytes": 4096,
    }  # fmt: skip
    layout = DataLayout(tmp_path / "data")
    # Built directly: the entry point line in pyproject.toml registers on the next install.
    lora = LorawanSource(LorawanSourceConfig.model_validate(source))
    runner = IngestRunner([lora], layout, "test-site")
    await runner.start()
    await wait_until(lora.is_up, 10)

    t0 = (int(time.time()) - 60) * 1000
    events = [
        chirpstack.join(A, t0),
        chirpstack.up(A, 0, {"temperature": 21.5, "humidity": 40, "door": {"open": True}}, t0 + 1000),
        chirpstack.up(A, 1, {"temperature": 21.75, "humidity": 41, "door": {"open": False}}, t0 + 2000),
        chirpstack.up(
            A, 1, {"temperature": 21.75, "humidity": 41, "door": {"open": False}}, t0 + 2000
        ),  # again
        chirpstack.status(A, t0 + 3000, 87.5, 7),
        chirpstack.ack(A, t0 + 4000, 3),
        chirpstack.txack(A, t0 + 4000, 3),
        chirpstack.log_event(A, t0 + 5000, "ERROR", "UPLINK_CODEC", "codec error: unexpected end of input"),
        chirpstack.up(B, 7, {"temperature": -3.0}, t0 + 1000, rssi=-110, snr=-12.5),
        # Hostile: not JSON, another device's payload under A's topic, an unknown
        # event type, an uplink with nothing decoded, an oversized payload.
        (chirpstack.topic(A, "up"), b"\xff{not json"),
        (chirpstack.topic(A, "up"), chirpstack.up(B, 8, {"temperature": 1.0}, t0)[1]),
        (chirpstack.topic(A, "location"), b"{}"),
        (
            chirpstack.topic(B, "up"),
            json.dumps({"deviceInfo": chirpstack.device_info(B), "fCnt": 9}).encode(),
        ),
        (chirpstack.topic(B, "up"), b"{" + b" " * 5000 + b"}"),
    ]
    assert chirpstack.publish(mosquitto.url, events) == len(events)

    def enough() -> bool:
        return (
            len(landed(layout, "rejected")) >= 5
            and any(r["device_id"] == B for r in landed(layout, "readings"))
            and len(landed(layout, "device_events")) >= 5
        )

    await wait_until(enough, 20)
    await runner.stop()

    rows = landed(layout, "readings")
    a = sorted((r for r in rows if r["device_id"] == A), key=lambda r: (r["ts"], r["metric"]))
    got = [(int(r["ts"].timestamp() * 1000) - t0, r["metric"], r["value"], r["unit"]) for r in a]
    assert got == [
        (1000, "door_open", 1.0, None),
        (1000, "humidity", 40.0, "%"),
        (1000, "lora_rssi", -57.0, "dBm"),
        (1000, "lora_snr", 9.5, "dB"),
        (1000, "temperature", 21.5, "Cel"),
        (2000, "door_open", 0.0, None),
        (2000, "humidity", 41.0, "%"),
        (2000, "lora_rssi", -57.0, "dBm"),
        (2000, "lora_snr", 9.5, "dB"),
        (2000, "temperature", 21.75, "Cel"),
        (3000, "battery_level", 87.5, "%"),
        (3000, "link_margin", 7.0, "dB"),
    ]  # fmt: skip  (the repeated fCnt 1 landed once)
    b = {r["metric"]: r["value"] for r in rows if r["device_id"] == B}
    assert b == {"temperature": -3.0, "lora_rssi": -110.0, "lora_snr": -12.5}
    assert {(r["source"], r["site"], r["quality"]) for r in rows} == {("lora", "test-site", 0)}
    assert lora.counters()["duplicate_uplinks"] == 1

    events_landed = sorted(landed(layout, "device_events"), key=lambda e: e["ts"])
    kinds = [(e["device_id"], e["kind"], json.loads(e["attributes"]).get("event")) for e in events_landed]
    assert kinds == [
        (A, "register", "join"), (A, "status", "status"), (A, "status", "ack"), (A, "status", "txack"),
        (A, "alarm", "log"),
    ]  # fmt: skip
    alarm = json.loads(events_landed[-1]["attributes"])
    assert (alarm["code"], alarm["level"]) == ("UPLINK_CODEC", "ERROR")
    assert events_landed[0]["ts"] == datetime.fromtimestamp(t0 / 1000, UTC)

    devices = [d for d in landed(layout, "devices") if d["device_id"] == A]
    assert (devices[0]["name"], devices[0]["type"], devices[0]["protocol"]) == (
        "sensor-0001", "Environment sensor", "lorawan",
    )  # fmt: skip
    attributes = json.loads(devices[-1]["attributes"])
    assert attributes["status"] == {"margin": 7, "external_power_source": False, "battery_level": 87.5}
    assert attributes["application_id"] == chirpstack.APPLICATION_ID and attributes["tags"] == {
        "district": "gulou"
    }
    assert len(devices) == 2  # first sight, then the status changed what ChirpStack says of it

    reasons = sorted(r["reason"] for r in landed(layout, "rejected"))
    assert any(r.startswith("lorawan up payload is not JSON") for r in reasons)
    assert f"lorawan deviceInfo.devEui '{B}' is not the topic's {A}" in reasons
    assert any(r.startswith("lorawan unknown event type 'location'") for r in reasons)
    assert "lorawan up has no decoded object fields (is a codec set on the device profile?)" in reasons
    assert any(r.startswith("payload of 5002 bytes exceeds max_payload_bytes 4096") for r in reasons)
