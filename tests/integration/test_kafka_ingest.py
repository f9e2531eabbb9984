"""Kafka adapter against a real Kafka 4.4 broker in KRaft mode, from the Maven
Central jars (tools/setup/kafka-jars.sh), started by the test on free ports,
through the real IngestRunner into landing: exact rows, rejects with reasons,
offsets committed only after landing, and a restarted consumer group that
goes on from the commit. The broker takes about a minute to boot on the
shared machine: one broker serves the module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from citylake.config import load_config
from citylake.ingest.kafka.adapter import KafkaSource
from citylake.ingest.kafka.config import KafkaSourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.kafka import KafkaBroker
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000
TOPIC = "city.telemetry"


@pytest.fixture(scope="module")
def kafka(kafka_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The session's broker (tests/conftest.py) with this file's topic."""
    broker = kafka_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)]).values():
        future.result(60)
    yield broker


def produce(broker: KafkaBroker, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 5_000_000})
    for key, value in messages:
        producer.produce(TOPIC, value=value, key=key)
    assert producer.flush(30) == 0


def committed(broker: KafkaBroker, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(TOPIC, p) for p in (0, 1)], timeout=10)
        return sum(max(o.offset, 0) for o in offsets)
    finally:
        consumer.close()


async def test_consumes_commits_after_landing_and_resumes_from_the_commit(
    kafka: KafkaBroker, city_config: Callable[..., Path]
) -> None:
    raw = {"name": "bus", "type": "kafka", "url": kafka.url, "topics": [TOPIC], "group_id": "citylake-test",
           "units": {"speed": "km/h"}, "max_message_bytes": 1024}  # fmt: skip
    path = city_config(sources=[raw])
    loaded = load_config(path)
    layout = DataLayout(loaded.config.data_dir)
    good = [
        (b"bus-1", orjson.dumps({"ts": TS, "speed": 31.5, "line": "K7"})),
        (b"bus-2", orjson.dumps([{"ts": TS, "speed": 12.0}, {"ts": TS + 1000, "speed": 14.0}])),
        (None, orjson.dumps({"ts": TS, "device_id": "bus-3", "speed": 0.0})),
    ]
    bad = [
        (b"bus-4", b"{broken", "invalid JSON"),
        (b"bus-4", orjson.dumps({"ts": TS, "pad": "x" * 2000}), "kafka message too large"),
        (None, orjson.dumps({"ts": TS, "speed": 3.0}), "no device_id"),
        (b"\xff\xfe", orjson.dumps({"ts": TS, "speed": 3.0}), "kafka key is not UTF-8"),
    ]
    produce(kafka, good + [(k, v) for k, v, _ in bad])
    source = KafkaSource(KafkaSourceConfig.model_validate(raw))
    runner = IngestRunner([source], layout, loaded.config.site)
    await runner.start()
    try:
        await wait_until(
            lambda: source.consumed >= 7, 60, state=lambda: (dict(source.counters()), source.last_error)
        )
        await wait_until(lambda: committed(kafka, "citylake-test") == 7, 30)
    finally:
        await runner.stop()
    readings = sorted(landed(layout, "readings"), key=lambda r: (r["device_id"], r["ts"], r["metric"]))
    assert [(r["device_id"], r["metric"], r["value"], r["text"], r["unit"]) for r in readings] == [
        ("bus-1", "line", None, "K7", None),
        ("bus-1", "speed", 31.5, None, "km/h"),
        ("bus-2", "speed", 12.0, None, "km/h"),
        ("bus-2", "speed", 14.0, None, "km/h"),
        ("bus-3", "speed", 0.0, None, "km/h"),
    ]
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert len(reasons) == 4
    for _, _, expected in bad:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert {d["device_id"] for d in landed(layout, "devices")} >= {"bus-1", "bus-2", "bus-3"}
    # The group goes on from its commit: only the new message lands.
    produce(kafka, [(b"bus-5", orjson.dumps({"ts": TS, "speed": 50.0}))])
    again = KafkaSource(KafkaSourceConfig.model_validate(raw))
    runner = IngestRunner([again], layout, loaded.config.site)
    await runner.start()
    try:
        await wait_until(lambda: committed(kafka, "citylake-test") == 8, 60)
    finally:
        await runner.stop()
    assert again.consumed == 1
    assert len(landed(layout, "readings")) == 6


async def test_simulator_produces_what_the_adapter_lands(
    kafka: KafkaBroker, city_config: Callable[..., Path]
) -> None:
    from citylake_devstack.simulators.bus import run_kafka_simulator

    raw = {"name": "sim", "type": "kafka", "url": kafka.url, "topics": ["sim.telemetry"], "group_id": "sim"}
    loaded = load_config(city_config(sources=[raw]))
    layout = DataLayout(loaded.config.data_dir)
    sent = await asyncio.to_thread(run_kafka_simulator, kafka.bootstrap, "sim.telemetry", 3, 4.0, 1.0)
    source = KafkaSource(KafkaSourceConfig.model_validate(raw))
    runner = IngestRunner([source], layout, loaded.config.site)
    await runner.start()
    try:
        await wait_until(lambda: committed_of(kafka, "sim", "sim.telemetry") == sent.messages, 60)
    finally:
        await runner.stop()
    rows = landed(layout, "readings")
    assert len(rows) == sent.readings and {r["device_id"] for r in rows} == {"bus-0", "bus-1", "bus-2"}


def committed_of(broker: KafkaBroker, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        return sum(max(o.offset, 0) for o in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()
