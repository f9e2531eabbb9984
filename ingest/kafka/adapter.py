"""Kafka source: a confluent-kafka (librdkafka) consumer in a consumer group.

Offsets are committed only after the landing commit: each message's ack
(called by the runner once its rows, or its reject row, are durable) records
the next offset of its partition; the consumer thread commits those and
nothing else (``enable.auto.commit`` is off). A crash before the commit
redelivers from the last committed offset, and ``<topic>:<partition>:<offset>``
is the input id, so what was landed before the crash is not landed twice.

Backpressure: while the landing buffer is full the consumer pauses its
assigned partitions (the broker keeps the data) and resumes them when there
is room. Bad messages (too large, not the JSON shapes, invalid rows, no
device id) land in ``rejected`` with the reason and their offsets are
committed like any other, so one bad message never blocks a partition.

The consumer runs in its own thread (librdkafka's calls block); the
``SourceContext`` is thread-safe, as for paho.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from citylake.config import SourceConfig
from citylake.ingest.base import Row, SourceContext, SourceUnavailable, StreamingSource, config_as
from citylake.ingest.configured_devices import configured_device_row
from citylake.ingest.kafka.config import KafkaSourceConfig, bootstrap_servers
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError
from citylake.schemas import table, validate_row

log = logging.getLogger(__name__)
READINGS = table("readings")
_RAW_LIMIT = 4096


def _now_ms() -> int:
    return int(time.time() * 1000)


class KafkaSource(StreamingSource):
    config_model = KafkaSourceConfig

    def __init__(self, config: KafkaSourceConfig) -> None:
        super().__init__(config)
        self.config: KafkaSourceConfig = config
        self.codec = JsonReadingsCodec(config.timestamp_field, config.timestamp_unit, config.units)
        self.bootstrap = bootstrap_servers(config.url)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._landed: dict[tuple[str, int], int] = {}  # next offset to commit, per partition
        self._seen = KnownDevices(config.max_devices)
        self.consumed = 0
        self.committed = 0
        self.duplicates = 0
        self.pauses = 0
        self.assigned: list[tuple[str, int]] = []
        self.last_error: str | None = None

    def _settings(self) -> dict[str, object]:
        cfg = self.config
        settings: dict[str, object] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": cfg.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": cfg.auto_offset_reset,
            "client.id": f"citylake-{self.name}",
            "message.max.bytes": max(cfg.max_message_bytes, 1_000_000) + 1024,
        }
        if cfg.url.startswith("kafka+ssl"):
            settings["security.protocol"] = "SASL_SSL" if cfg.sasl_mechanism else "SSL"
        elif cfg.sasl_mechanism:
            settings["security.protocol"] = "SASL_PLAINTEXT"
        if cfg.sasl_mechanism:
            settings.update({"sasl.mechanism": cfg.sasl_mechanism, "sasl.username": cfg.username,
                             "sasl.password": cfg.password})  # fmt: skip
        return settings

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        cfg = config_as(config, KafkaSourceConfig)
        return [
            configured_device_row(d, "kafka", meta, {"topics": cfg.topics, "source": cfg.name}, now_ms)
            for d, meta in cfg.devices.items()
        ]

    def is_up(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.last_error is None

    def counters(self) -> Mapping[str, int]:
        return {
            "consumed": self.consumed,
            "committed": self.committed,
            "redelivered_duplicates": self.duplicates,
            "pauses": self.pauses,
            "devices_evicted": self._seen.evictions,
        }

    async def check(self) -> None:
        import asyncio

        def probe() -> None:
            consumer = Consumer({**self._settings(), "group.id": f"{self.config.group_id}-check"})
            try:
                metadata = consumer.list_topics(timeout=10)
            except KafkaException as exc:
                raise SourceUnavailable(f"Kafka {self.bootstrap}: {exc}") from exc
            finally:
                consumer.close()
            missing = [t for t in self.config.topics if t not in metadata.topics]
            if missing:
                raise SourceUnavailable(f"Kafka {self.bootstrap}: no topic {', '.join(missing)}")

        await asyncio.to_thread(probe)

    async def start(self, ctx: SourceContext) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(ctx,), name=f"kafka:{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        import asyncio

        thread, self._thread = self._thread, None
        if thread is None:
            return
        # The runner's final flush has acked what it landed; the thread commits
        # that on its way out.
        self._stopping.set()
        await asyncio.to_thread(thread.join, 30)

    # -- the consumer thread ----------------------------------------------------

    def _run(self, ctx: SourceContext) -> None:
        consumer = Consumer(self._settings())

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self.assigned = [(p.topic, p.partition) for p in partitions]

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._commit(c)  # what is landed stays ours; the rest goes to the next owner
            self.assigned = []

        consumer.subscribe(list(self.config.topics), on_assign=on_assign, on_revoke=on_revoke)
        paused = False
        try:
            while not self._stopping.is_set():
                if not ctx.ready():
                    if not paused and self.assigned:
                        consumer.pause([TopicPartition(t, p) for t, p in self.assigned])
                        paused = True
                        self.pauses += 1
                elif paused:
                    consumer.resume([TopicPartition(t, p) for t, p in self.assigned])
                    paused = False
                messages = consumer.consume(num_messages=self.config.batch_size, timeout=0.2)
                for message in messages:
                    self._deliver(ctx, message)
                self._commit(consumer)
            self._commit(consumer)
        finally:
            consumer.close()

    def _commit(self, consumer: Consumer) -> None:
        with self._lock:
            landed, self._landed = self._landed, {}
        if not landed:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in landed.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            self.committed += len(offsets)
        except KafkaException as exc:
            # Lost the partition meanwhile: its next owner starts at the last commit,
            # and the input ids keep what we landed from landing twice.
            log.info("Kafka %s: commit failed (%s)", self.name, exc)

    def _ack_for(self, topic: str, partition: int, offset: int) -> Callable[[], None]:
        def ack() -> None:
            with self._lock:
                key = (topic, partition)
                if offset + 1 > self._landed.get(key, -1):
                    self._landed[key] = offset + 1

        return ack

    def _deliver(self, ctx: SourceContext, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self.last_error = str(error)
                log.warning("Kafka %s: %s", self.name, error)
            return
        self.last_error = None
        self.consumed += 1
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        value = message.value() or b""
        key = message.key()
        raw = f"{topic}/{partition}@{offset} ".encode() + value[:_RAW_LIMIT]
        input_id = f"{topic}:{partition}:{offset}"
        ack = self._ack_for(topic, partition, offset)
        if ctx.already_landed(input_id):
            self.duplicates += 1
            ack()
            return
        where = f"({topic} partition {partition} offset {offset})"
        if len(value) > self.config.max_message_bytes:
            limit = self.config.max_message_bytes
            reason = f"kafka message too large: {len(value)} bytes, max_message_bytes {limit}"
            ctx.reject(raw, f"{reason} {where}", ack, input_id)
            return
        ids: dict[str, str] = {}
        if key and self.config.device_id_from_key:
            try:
                ids["device_id"] = key.decode("utf-8")
            except UnicodeDecodeError:
                ctx.reject(raw, f"kafka key is not UTF-8 {where}", ack, input_id)
                return
        try:
            decoded = self.codec.decode_columns(value, ids)
            columns = decoded.as_columns(ctx.source, ctx.site, _now_ms())
            for index in range(len(decoded)):
                problem = validate_row(READINGS, {name: v[index] for name, v in columns.items()})
                if problem is not None:
                    raise PayloadError(problem)
        except PayloadError as exc:
            ctx.reject(raw, f"{exc} {where}", ack, input_id)
            return
        self._describe(ctx, decoded.device_id, raw)
        ctx.emit_columns(READINGS, columns, len(decoded), raw, ack, input_id)

    def _describe(self, ctx: SourceContext, device_ids: Sequence[str], raw: bytes) -> None:
        now = _now_ms()
        rows: list[Row] = []
        for device_id in dict.fromkeys(device_ids):
            first = self._seen.observe(device_id, None, now)
            if first is not None:
                row = dict(configured_device_row(device_id, "kafka", self.config.devices.get(device_id),
                                                 {"source": self.name}, first))  # fmt: skip
                row["last_seen"] = now
                rows.append(row)
        if rows:
            ctx.describe_devices(rows, raw)
