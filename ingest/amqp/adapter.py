"""AMQP 0-9-1 source: an aio-pika consumer of configured queues (RabbitMQ,
the queues existing city platforms already fill).

Acknowledgement after commit: each delivery is acked only when the runner
calls its ``ack``, i.e. after its rows are durable in landing; a crash before
that leaves the delivery unacked and the broker redelivers it. The
message-id (when the publisher set one) is the input id, so a redelivery of
a message that was landed before the crash is acked again and not landed
twice. ``prefetch`` bounds the deliveries in flight: the backpressure
window; while the landing buffer is full the consumer waits before handing
a delivery over, so the window fills and the broker stops sending.

Bad messages (too large, not the JSON shapes, invalid rows, ids missing)
land in ``rejected`` with the reason; once that is durable the delivery is
published to ``dead_letter_exchange`` with an ``x-citylake-reason`` header
and acked, or, without one, rejected without requeue (the queue's own
dead-letter exchange, if the broker has one, then takes it).

aio-pika's robust connection reconnects with its interval and restores the
channel, QoS and consumers; the first connection is retried here with
doubling backoff so a broker that is down at start does not end ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from citylake.config import SourceConfig
from citylake.ingest.amqp.codec import RoutingKeyTemplate
from citylake.ingest.amqp.config import AmqpQueue, AmqpSourceConfig
from citylake.ingest.backoff import Backoff
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row, without_credentials
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.mqtt.codec import DeviceLevels, JsonReadingsCodec, PayloadError
from citylake.schemas import table, validate_row

log = logging.getLogger(__name__)
READINGS = table("readings")
_RAW_LIMIT = 4096


def _now_ms() -> int:
    return int(time.time() * 1000)


class AmqpSource(StreamingSource):
    config_model = AmqpSourceConfig

    def __init__(self, config: AmqpSourceConfig) -> None:
        super().__init__(config)
        self.config: AmqpSourceConfig = config
        self.codec = JsonReadingsCodec(config.timestamp_field, config.timestamp_unit, config.units)
        self.templates = {
            q.queue: RoutingKeyTemplate(q.routing_key_template)
            for q in config.queues
            if q.routing_key_template
        }
        self._connection: AbstractRobustConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._seen = KnownDevices(config.max_devices)
        self.endpoint = without_credentials(config.url)
        self.delivered = 0
        self.acked = 0
        self.dead_lettered = 0
        self.redelivered_duplicates = 0
        self.last_error: str | None = None

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, AmqpSourceConfig)
        return [
            configured_device_row(
                d, "amqp", meta, {"broker": without_credentials(cfg.url), "source": cfg.name}, now_ms
            )
            for d, meta in cfg.devices.items()
        ]

    def is_up(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed

    def counters(self) -> Mapping[str, int]:
        return {
            "delivered": self.delivered,
            "acked": self.acked,
            "dead_lettered": self.dead_lettered,
            "redelivered_duplicates": self.redelivered_duplicates,
            "devices_evicted": self._seen.evictions,
        }

    async def check(self) -> None:
        try:
            connection = await asyncio.wait_for(aio_pika.connect(self.config.url), 10)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise SourceUnavailable(f"AMQP broker {self.endpoint}: {type(exc).__name__}: {exc}") from exc
        try:
            channel = await connection.channel()
            for queue in self.config.queues:
                if not queue.declare:
                    try:
                        await channel.get_queue(queue.queue, ensure=True)
                    except aio_pika.exceptions.ChannelClosed as exc:
                        raise SourceUnavailable(
                            f"AMQP broker {self.endpoint}: queue {queue.queue!r} does not exist ({exc}); "
                            "create it or set declare: true"
                        ) from exc
        finally:
            await connection.close()

    async def start(self, ctx: SourceContext) -> None:
        self._task = asyncio.create_task(self._run(ctx), name=f"amqp:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Acks of rows the runner's final flush made durable run before we close.
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def _run(self, ctx: SourceContext) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while self._connection is None:
            try:
                self._connection = await self._consume(ctx)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                self.last_error = f"AMQP broker {self.endpoint}: {type(exc).__name__}: {exc}"
                log.warning("%s; retrying in %.1f s", self.last_error, backoff.delay_s)
                await backoff.sleep()
        await asyncio.Event().wait()  # consuming continues in aio-pika's tasks until stop()

    async def _consume(self, ctx: SourceContext) -> AbstractRobustConnection:
        cfg = self.config
        connection = await aio_pika.connect_robust(cfg.url, reconnect_interval=cfg.reconnect_min_s)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=cfg.prefetch)
            dead_letter = (
                await channel.get_exchange(cfg.dead_letter_exchange) if cfg.dead_letter_exchange else None
            )
            for queue_config in cfg.queues:
                queue: AbstractQueue
                if queue_config.declare:
                    queue = await channel.declare_queue(queue_config.queue, durable=True)
                else:
                    queue = await channel.get_queue(queue_config.queue, ensure=True)
                for binding in queue_config.bindings:
                    await queue.bind(binding.exchange, binding.routing_key)

                async def on_message(message: AbstractIncomingMessage, q: AmqpQueue = queue_config) -> None:
                    await self._deliver(ctx, q, message, dead_letter)

                await queue.consume(on_message, no_ack=False)
        except BaseException:
            await connection.close()
            raise
        self.last_error = None
        log.info(
            "AMQP %s consuming %s from %s", self.name, ", ".join(q.queue for q in cfg.queues), self.endpoint
        )
        return connection

    # -- deliveries -----------------------------------------------------------

    def _later(self, action: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        """An ack the runner may call from its flush thread: it schedules
        ``action`` on this loop."""
        loop = asyncio.get_running_loop()

        def run() -> None:
            task = loop.create_task(action())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        def ack() -> None:
            loop.call_soon_threadsafe(run)

        return ack

    async def _deliver(
        self, ctx: SourceContext, queue: AmqpQueue, message: AbstractIncomingMessage, dead_letter: object
    ) -> None:
        self.delivered += 1
        body = message.body
        key = message.routing_key or ""
        raw = f"{queue.queue} {key} ".encode() + body[:_RAW_LIMIT]
        input_id = f"{queue.queue}:{message.message_id}" if message.message_id else None
        if input_id is not None and ctx.already_landed(input_id):
            self.redelivered_duplicates += 1
            await self._ack(message)
            return
        # Hold the delivery while landing is full: the prefetch window fills and
        # the broker waits. ready() is a plain check with no event to wait on.
        while not ctx.ready():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        where = f"(queue {queue.queue}, routing key {key[:128]})"
        if len(body) > self.config.max_message_bytes:
            limit = self.config.max_message_bytes
            reason = f"amqp message too large: {len(body)} bytes, max_message_bytes {limit} {where}"
            self._bad(ctx, message, raw, reason, input_id, dead_letter)
            return
        ids: dict[str, str] = {}
        template = self.templates.get(queue.queue)
        if template is not None:
            matched = template.match(key)
            if matched is None:
                reason = f"amqp routing key does not fit {template.template} {where}"
                self._bad(ctx, message, raw, reason, input_id, dead_letter)
                return
            ids = matched
        if queue.device_id is not None:
            ids["device_id"] = queue.device_id
        try:
            decoded = self.codec.decode_columns(body, ids)
            columns = decoded.as_columns(ctx.source, ctx.site, _now_ms())
            for index in range(len(decoded)):
                problem = validate_row(READINGS, {name: values[index] for name, values in columns.items()})
                if problem is not None:
                    raise PayloadError(problem)
        except PayloadError as exc:
            self._bad(ctx, message, raw, f"{exc} {where}", input_id, dead_letter)
            return
        self._describe(ctx, decoded.device_id, ids, raw)
        ctx.emit_columns(
            READINGS, columns, len(decoded), raw, self._later(lambda: self._ack(message)), input_id
        )

    async def _ack(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
            self.acked += 1
        except Exception as exc:  # the channel closed since: the broker redelivers; the input id dedupes
            log.info("AMQP %s: ack failed (%s); the delivery will come again", self.name, exc)

    def _bad(
        self,
        ctx: SourceContext,
        message: AbstractIncomingMessage,
        raw: bytes,
        reason: str,
        input_id: str | None,
        dead_letter: object,
    ) -> None:
        async def settle() -> None:
            try:
                if isinstance(dead_letter, aio_pika.abc.AbstractExchange):
                    headers = dict(message.headers or {})
                    headers["x-citylake-reason"] = reason[:1024]
                    copy = aio_pika.Message(
                        message.body, headers=headers, content_type=message.content_type,
                        message_id=message.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    )  # fmt: skip
                    await dead_letter.publish(copy, routing_key=message.routing_key or "")
                    self.dead_lettered += 1
                    await message.ack()
                else:
                    await message.reject(requeue=False)
            except Exception as exc:
                log.info(
                    "AMQP %s: settling a rejected delivery failed (%s); it will come again", self.name, exc
                )

        ctx.reject(raw, reason, self._later(settle), input_id)

    def _describe(
        self, ctx: SourceContext, device_ids: Sequence[str], ids: dict[str, str], raw: bytes
    ) -> None:
        now = _now_ms()
        levels = DeviceLevels(ids)
        rows: list[Row] = []
        for device_id in dict.fromkeys(device_ids):
            first = self._seen.observe(device_id, (levels.type, levels.district, levels.civil_code), now)
            if first is None:
                continue
            row = dict(levels.row(device_id, first, now))
            row["protocol"] = "amqp"
            rows.append(row)
        if rows:
            ctx.describe_devices(rows, raw)
