"""MQTT ingest throughput: readings landed per second by one citylake ingest
process, against mosquitto_sub (C) draining the same stream to /dev/null.

Both consumers drain an identical backlog the broker queued for their
persistent session, so the publisher's speed is out of the measurement.

    .venv/bin/python bench/bench_mqtt.py [--messages N] [--qos 0|1] [--batch K]

``--batch K`` puts K readings in each message (a JSON array), the shape
gateways send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citylake.ingest.mqtt.adapter import MqttSource
from citylake.ingest.mqtt.config import MqttSourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import start_mosquitto

TOPIC_TEMPLATE = "bench/{district}/{device_id}/telemetry"
T0 = 1_764_072_000_000


def create_session(port: int, client_id: str, qos: int) -> None:
    """Subscribe once and leave: the broker now queues for this session."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe("bench/+/+/telemetry", qos)
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def publish_backlog(port: int, messages: int, qos: int, batch: int, devices: int = 1000) -> None:
    lines_by_topic: dict[str, list[str]] = {}
    for i in range(messages):
        device = f"dev-{i % devices:05d}"
        ts = T0 + i
        if batch == 1:
            payload = json.dumps({"ts": ts, "v": float(i % 1000), "t": 21.5})
        else:
            payload = json.dumps([{"ts": T0 + i * batch + k, "v": float(k)} for k in range(batch)])
        lines_by_topic.setdefault(f"bench/d{i % 5}/{device}/telemetry", []).append(payload)
    # One mosquitto_pub per topic would be slow; devices share 5 publishers by district.
    by_district: dict[str, list[tuple[str, str]]] = {}
    for topic, payloads in lines_by_topic.items():
        by_district.setdefault(topic.split("/")[1], []).extend((topic, p) for p in payloads)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(10_000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, p, qos=qos) for items in by_district.values() for t, p in items]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def drain_with_mosquitto_sub(port: int, messages: int, qos: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i", "bench-sub", "-q", str(qos),
         "-t", "bench/+/+/telemetry", "-C", str(messages)],
        stdout=subprocess.DEVNULL, check=True, timeout=600,
    )  # fmt: skip
    return time.perf_counter() - started


async def drain_with_citylake(port: int, data_dir: Path, messages: int, qos: int) -> tuple[float, int]:
    config = MqttSourceConfig(
        name="bench", type="mqtt", url=f"mqtt://127.0.0.1:{port}", qos=qos, client_id="bench-citylake",
        topics=[{"template": TOPIC_TEMPLATE}],
    )  # fmt: skip
    runner = IngestRunner([MqttSource(config)], DataLayout(data_dir), "bench")
    # start() warms pyarrow up (a one-time import of about a second) and then
    # asks paho to connect; the clock starts there.
    await runner.start()
    started = time.perf_counter()
    received = runner.metrics.received.labels("bench")
    while received._value.get() < messages:  # noqa: ASYNC110 - polls a Prometheus counter
        await asyncio.sleep(0.01)
    await runner.buffer.flush()
    elapsed = time.perf_counter() - started
    landed = int(runner.metrics.landed_rows.labels("readings")._value.get())
    await runner.stop()
    return elapsed, landed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp) / "mosquitto", queue_qos0=True)
        try:
            conf = Path(tmp) / "mosquitto" / "mosquitto.conf"
            assert conf.exists()
            create_session(broker.port, "bench-sub", args.qos)
            create_session(broker.port, "bench-citylake", args.qos)
            publish_backlog(broker.port, args.messages, args.qos, args.batch)
            baseline = drain_with_mosquitto_sub(broker.port, args.messages, args.qos)
            ours, landed = asyncio.run(
                drain_with_citylake(broker.port, Path(tmp) / "data", args.messages, args.qos)
            )
        finally:
            broker.process.stop()
    readings_per_message = args.batch if args.batch > 1 else 2
    print(f"messages {args.messages}, QoS {args.qos}, {readings_per_message} readings per message")
    print(f"mosquitto_sub -> /dev/null        {args.messages / baseline:12,.0f} msg/s")
    rates = f"{args.messages / ours:12,.0f} msg/s   {landed / ours:12,.0f} readings/s"
    print(f"citylake ingest -> landing        {rates}")
    print(f"landed readings                   {landed}")
    print(f"ratio citylake / mosquitto_sub    {baseline / ours:.2f}")


if __name__ == "__main__":
    main()
