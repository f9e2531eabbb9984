"""MQTT adapter against a real mosquitto: rows land, bad input is kept aside,
and nothing unflushed is acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citylake.ingest.base import StreamingSource
from citylake.ingest.runner import FlushPolicy
from citylake_devstack import Mosquitto
from tests.conftest import mqtt_source
from tests.landing_rows import landed, make_runner
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000


def publisher(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


async def test_readings_and_hostile_input(mosquitto: Mosquitto, city_config: Callable[..., Path]) -> None:
    runner, layout = make_runner(
        city_config(sources=[mqtt_source(mosquitto.url, max_payload_bytes=300 * 1024)])
    )
    await runner.start()
    source = runner.sources[0]
    await wait_until(source.is_up, 20)
    client = publisher(mosquitto)
    good = "city/haidian/air/air-1/telemetry"
    publish(client, good, orjson.dumps({"ts": TS, "pm25": 35.5, "temperature": -2}))
    publish(client, good, b"{broken json")
    publish(client, good, b"\xff\xfe\xfa not utf-8")
    publish(client, good, orjson.dumps({"ts": "noon", "pm25": 1}))
    publish(client, good, orjson.dumps({"pm25": 1}))
    publish(client, good, orjson.dumps({"ts": TS, "pm25": {"v": 1}, "humidity": 40, "state": "open"}))
    publish(client, good, b"[" + b"1," * (160 * 1024) + b"1]")  # ~320 KiB
    # An empty id level matches the broker's + filter but not the template.
    publish(client, "city/haidian/air//telemetry", orjson.dumps({"ts": TS, "x": 1}))
    publish(
        client,
        "city/chaoyang/noise/noise-2/telemetry",
        orjson.dumps([{"ts": TS, "db": 61}, {"ts": TS + 1000, "db": 63}]),
    )
    await wait_until(
        lambda: len(landed(layout, "rejected")) >= 7 and len(landed(layout, "readings")) >= 6, 20
    )
    await runner.stop()
    client.disconnect()

    readings = {
        (r["device_id"], r["metric"], r["ts"].timestamp() * 1000): r for r in landed(layout, "readings")
    }
    assert readings[("air-1", "pm25", TS)]["value"] == 35.5
    assert readings[("air-1", "pm25", TS)]["unit"] == "ug/m3"
    assert readings[("air-1", "temperature", TS)]["value"] == -2.0
    assert readings[("air-1", "humidity", TS)]["value"] == 40.0  # its nested neighbour is rejected alone
    assert readings[("air-1", "state", TS)]["text"] == "open"
    assert readings[("noise-2", "db", TS + 1000)]["value"] == 63.0
    assert {r["source"] for r in readings.values()} == {"sensors"}
    assert {r["site"] for r in readings.values()} == {"test-site"}
    assert len(readings) == 6

    reasons = sorted(r["reason"] for r in landed(layout, "rejected"))
    expected = [
        "invalid JSON",
        "invalid JSON",
        "missing timestamp field 'ts'",
        "payload of",
        "readings.value: expected a number, got dict",
        "timestamp 'ts' must be a number of ms",
        "topic city/haidian/air//telemetry matches no configured template",
    ]
    assert len(reasons) == len(expected)
    for reason, prefix in zip(sorted(reasons), sorted(expected), strict=True):
        assert reason.startswith(prefix), (reason, prefix)
    assert runner.metrics.rejected.labels("sensors", "invalid JSON")._value.get() == 2


async def test_unflushed_messages_are_not_acknowledged_and_come_back(
    mosquitto: Mosquitto, city_config: Callable[..., Path]
) -> None:
    config = city_config(sources=[mqtt_source(mosquitto.url, client_id="citylake-durable")])
    never = FlushPolicy(max_age_s=3600, max_rows=10**9, max_bytes=10**12)
    first, layout = make_runner(config, never)
    await first.start()
    await wait_until(first.sources[0].is_up, 20)
    client = publisher(mosquitto)
    for i in range(20):
        publish(client, f"city/d/air/air-{i}/telemetry", orjson.dumps({"ts": TS + i, "pm25": float(i)}))
    await wait_until(lambda: first.metrics.received.labels("sensors")._value.get() == 20, 20)
    # A crash before the landing write: the source lets go without the runner
    # flushing, so no PUBACK was ever sent for these 20 messages.
    source = first.sources[0]
    assert isinstance(source, StreamingSource)
    await source.stop()
    assert landed(layout, "readings") == []

    second, _ = make_runner(config)
    await second.start()
    await wait_until(lambda: len(landed(layout, "readings")) == 20, 20)
    await second.stop()
    client.disconnect()
    assert sorted(r["value"] for r in landed(layout, "readings")) == [float(i) for i in range(20)]


async def test_crash_between_commit_and_ack_does_not_duplicate(
    mosquitto: Mosquitto, city_config: Callable[..., Path]
) -> None:
    """The narrow window a random kill -9 rarely hits: the flush is committed
    but the PUBACKs never leave. The broker redelivers (DUP); the next process
    recognises the inputs from the commit record and acknowledges them only."""
    config = city_config(sources=[mqtt_source(mosquitto.url, client_id="citylake-window")])
    never = FlushPolicy(max_age_s=3600, max_rows=10**9, max_bytes=10**12)
    first, layout = make_runner(config, never)
    await first.start()
    await wait_until(first.sources[0].is_up, 20)
    client = publisher(mosquitto)
    for i in range(25):
        publish(client, f"city/d/air/air-{i}/telemetry", orjson.dumps({"ts": TS + i, "pm25": float(i)}))
    await wait_until(lambda: first.metrics.received.labels("sensors")._value.get() == 25, 20)
    batches, _acks_never_sent, inputs = first.buffer._take()
    first.writer.commit(batches, inputs)
    source = first.sources[0]
    assert isinstance(source, StreamingSource)
    await source.stop()  # the crash: committed, not acknowledged
    assert len(landed(layout, "readings")) == 25

    second, _ = make_runner(config)
    await second.start()
    await wait_until(lambda: second.metrics.duplicates.labels("sensors")._value.get() == 25, 20)
    publish(client, "city/d/air/air-99/telemetry", orjson.dumps({"ts": TS + 99, "pm25": 99.0}))
    await wait_until(lambda: len(landed(layout, "readings")) == 26, 20)
    await second.stop()
    client.disconnect()
    values = sorted(r["value"] for r in landed(layout, "readings"))
    assert values == [*(float(i) for i in range(25)), 99.0]

    # Acknowledged this time: a third process gets nothing more.
    third, _ = make_runner(config)
    await third.start()
    await asyncio.sleep(1.0)
    await third.stop()
    assert third.metrics.received.labels("sensors")._value.get() == 0
