"""``citylake simulate amqp`` and ``citylake simulate kafka``: vehicles and
wells publishing JSON telemetry (the MQTT/HTTP push shapes) to a real
broker, as an existing city platform would: AMQP to a topic exchange with
routing keys ``city.<district>.<type>.<device_id>.telemetry``, Kafka to a
topic keyed by device id. Each message has a stable id (AMQP message-id)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import orjson


@dataclass
class BusSimulation:
    messages: int = 0
    readings: int = 0


def reading(device: int, now_ms: int) -> dict[str, object]:
    phase = now_ms / 60_000 + device
    return {
        "ts": now_ms,
        "speed": round(30 + 15 * math.sin(phase), 2),
        "level": round(2 + math.cos(phase), 3),
    }


async def _amqp(url: str, exchange: str, devices: int, rate: float, duration_s: float) -> BusSimulation:
    import aio_pika

    result = BusSimulation()
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            for device in range(devices):
                now = int(time.time() * 1000)
                body = orjson.dumps(reading(device, now))
                message = aio_pika.Message(body, message_id=f"sim-{device}-{now}",
                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT)  # fmt: skip
                await target.publish(message, f"city.gulou.well.well-{device}.telemetry")
                result.messages += 1
                result.readings += 2
            await asyncio.sleep(1 / rate if rate > 0 else duration_s)
    finally:
        await connection.close()
    return result


def run_amqp_simulator(
    url: str, exchange: str, devices: int, rate: float, duration_s: float
) -> BusSimulation:
    return asyncio.run(_amqp(url, exchange, devices, rate, duration_s))


def run_kafka_simulator(
    bootstrap: str, topic: str, devices: int, rate: float, duration_s: float
) -> BusSimulation:
    from confluent_kafka import Producer

    result = BusSimulation()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        for device in range(devices):
            now = int(time.time() * 1000)
            producer.produce(topic, value=orjson.dumps(reading(device, now)), key=f"bus-{device}".encode())
            result.messages += 1
            result.readings += 2
        producer.poll(0)
        time.sleep(1 / rate if rate > 0 else duration_s)
    if producer.flush(30) != 0:
        raise RuntimeError(f"Kafka {bootstrap}: messages still unacknowledged after 30 s")
    return result
