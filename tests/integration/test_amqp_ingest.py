"""AMQP adapter against Debian's RabbitMQ, started by the test as a plain
process on free ports (its own node name, cookie, epmd port, Mnesia and log
folders), through the real IngestRunner into landing: exact rows, ack only
after the landing commit, bad messages dead-lettered with their reason, and
redelivered messages landed once. The broker takes tens of seconds to boot
on a loaded 2-core machine (35 s to over 120 s measured), so one broker
serves the whole module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aio_pika
import orjson
import pytest

from citylake.config import load_config
from citylake.ingest.amqp.adapter import AmqpSource
from citylake.ingest.amqp.config import AmqpSourceConfig
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.rabbitmq import RabbitMq
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000


@pytest.fixture
def rabbitmq(rabbitmq_broker: RabbitMq) -> RabbitMq:
    """The session's broker (tests/conftest.py); each test declares exchanges
    and queues with a suffix of its own."""
    return rabbitmq_broker


async def setup_platform(url: str, suffix: str) -> tuple[aio_pika.abc.AbstractRobustConnection, str, str]:
    """What an existing platform has: a topic exchange, a durable queue, a DLX."""
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"city-{suffix}", aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(f"bad-{suffix}", aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(f"bad-{suffix}", durable=True)
    await dead.bind(f"bad-{suffix}")
    queue = await channel.declare_queue(f"telemetry-{suffix}", durable=True)
    # Bound by the platform already: messages published before citylake starts are kept.
    await queue.bind(exchange, "city.*.*.*.telemetry")
    return connection, f"city-{suffix}", f"telemetry-{suffix}"


async def publish(
    connection: aio_pika.abc.AbstractConnection, exchange: str, key: str, body: bytes, mid: str
) -> None:
    channel = await connection.channel()
    target = await channel.get_exchange(exchange)
    await target.publish(
        aio_pika.Message(body, message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), key
    )
    await channel.close()


def amqp_source(url: str, suffix: str, **extra: object) -> dict[str, object]:
    return {
        "name": "platform",
        "type": "amqp",
        "url": url,
        "prefetch": 50,
        "units": {"level": "m"},
        "dead_letter_exchange": f"bad-{suffix}",
        "max_message_bytes": 2048,
        "queues": [{
            "queue": f"telemetry-{suffix}",
            "bindings": [{"exchange": f"city-{suffix}", "routing_key": "city.*.*.*.telemetry"}],
            "routing_key_template": "city.{district}.{device_type}.{device_id}.telemetry",
        }],
        **extra,
    }  # fmt: skip


async def queue_depths(connection: aio_pika.abc.AbstractConnection, *names: str) -> list[int]:
    channel = await connection.channel()
    depths = []
    for name in names:
        queue = await channel.declare_queue(name, passive=True)
        depths.append(int(queue.declaration_result.message_count or 0))
    await channel.close()
    return depths


async def test_consumes_acks_after_commit_and_dead_letters_bad_messages(
    rabbitmq: RabbitMq, city_config: Callable[..., Path]
) -> None:
    connection, exchange, queue = await setup_platform(rabbitmq.url, "a")
    raw = amqp_source(rabbitmq.url, "a")
    path = city_config(sources=[raw])
    loaded = load_config(path)
    layout = DataLayout(loaded.config.data_dir)
    source = AmqpSource(AmqpSourceConfig.model_validate(raw))
    # A long flush age: deliveries wait in the buffer, unacked, for the commit.
    runner = IngestRunner([source], layout, loaded.config.site, FlushPolicy(max_age_s=2.0))
    try:
        await publish(connection, exchange, "city.320106.well.well-1.telemetry",
                      orjson.dumps({"ts": TS, "level": 2.5, "state": "ok"}), "m1")  # fmt: skip
        batch = orjson.dumps([{"ts": TS, "level": 1.0}, {"ts": TS + 1000, "level": 1.5}])
        await publish(connection, exchange, "city.gulou.well.well-2.telemetry", batch, "m2")
        bad = [
            (b"{not json", "invalid JSON"),
            (orjson.dumps({"ts": TS, "level": 1.0, "pad": "x" * 3000}), "amqp message too large"),
            (orjson.dumps({"level": 1.0}), "missing timestamp field 'ts'"),
        ]
        for index, (body, _) in enumerate(bad):
            await publish(connection, exchange, "city.gulou.well.well-3.telemetry", body, f"bad-{index}")
        await runner.start()
        await wait_until(
            lambda: source.delivered >= 5, 15, state=lambda: (dict(source.counters()), source.last_error)
        )
        assert source.acked == 0 and landed(layout, "readings") == []  # nothing acked before the commit
        assert await queue_depths(connection, queue) == [0]  # all 5 are with us, unacked
        await wait_until(
            lambda: source.acked == 2 and source.dead_lettered == 3,
            20,
            state=lambda: (dict(source.counters()), landed(layout, "rejected")),
        )
        assert {r["device_id"] for r in landed(layout, "readings")} == {"well-1", "well-2"}
    finally:
        await runner.stop()
    readings = sorted(landed(layout, "readings"), key=lambda r: (r["device_id"], r["ts"], r["metric"]))
    assert [(r["device_id"], r["metric"], r["value"], r["text"], r["unit"]) for r in readings] == [
        ("well-1", "level", 2.5, None, "m"),
        ("well-1", "state", None, "ok", None),
        ("well-2", "level", 1.0, None, "m"),
        ("well-2", "level", 1.5, None, "m"),
    ]
    reasons = sorted(r["reason"] for r in landed(layout, "rejected"))
    for _, expected in bad:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert devices["well-1"]["civil_code"] == "320106" and devices["well-1"]["type"] == "well"
    assert devices["well-2"]["district"] == "gulou" and devices["well-2"]["protocol"] == "amqp"
    # The dead-letter queue holds the three, each with the reason it was refused.
    channel = await connection.channel()
    dead = await channel.declare_queue("bad-a", passive=True)
    headers = []
    for _ in range(3):
        message = await dead.get(timeout=5)
        assert message is not None
        headers.append(str((message.headers or {})["x-citylake-reason"]))
        await message.ack()
    assert sorted(headers) == reasons
    assert await queue_depths(connection, queue) == [0]
    await connection.close()


async def test_unacked_deliveries_come_again_and_land_once(
    rabbitmq: RabbitMq, city_config: Callable[..., Path]
) -> None:
    connection, exchange, queue = await setup_platform(rabbitmq.url, "b")
    raw = amqp_source(rabbitmq.url, "b")
    path = city_config(sources=[raw])
    loaded = load_config(path)
    layout = DataLayout(loaded.config.data_dir)
    for index in range(20):
        body = orjson.dumps({"ts": TS + index, "level": float(index)})
        await publish(connection, exchange, "city.gulou.well.well-9.telemetry", body, f"r{index}")
    first = AmqpSource(AmqpSourceConfig.model_validate(raw))
    runner = IngestRunner([first], layout, loaded.config.site)
    await runner.start()
    await wait_until(lambda: first.acked >= 20, 15)
    await runner.stop()
    # The same ten are delivered again (as after a crash between commit and ack).
    for index in range(10):
        body = orjson.dumps({"ts": TS + index, "level": float(index)})
        await publish(connection, exchange, "city.gulou.well.well-9.telemetry", body, f"r{index}")
    second = AmqpSource(AmqpSourceConfig.model_validate(raw))
    runner = IngestRunner([second], layout, loaded.config.site)
    await runner.start()
    await wait_until(lambda: second.redelivered_duplicates >= 10, 15)
    await runner.stop()
    values = sorted(r["value"] for r in landed(layout, "readings"))
    assert values == [float(i) for i in range(20)]
    assert await queue_depths(connection, queue) == [0]
    await connection.close()


async def test_simulator_publishes_what_the_adapter_lands(
    rabbitmq: RabbitMq, city_config: Callable[..., Path]
) -> None:
    from citylake_devstack.simulators.bus import run_amqp_simulator

    connection, exchange, _ = await setup_platform(rabbitmq.url, "c")
    raw = amqp_source(rabbitmq.url, "c")
    loaded = load_config(city_config(sources=[raw]))
    layout = DataLayout(loaded.config.data_dir)
    sent = await asyncio.to_thread(run_amqp_simulator, rabbitmq.url, exchange, 3, 4.0, 1.0)
    source = AmqpSource(AmqpSourceConfig.model_validate(raw))
    runner = IngestRunner([source], layout, loaded.config.site)
    await runner.start()
    try:
        await wait_until(lambda: source.acked >= sent.messages, 15)
    finally:
        await runner.stop()
    rows = landed(layout, "readings")
    assert len(rows) == sent.readings and {r["device_id"] for r in rows} == {"well-0", "well-1", "well-2"}
    await connection.close()
