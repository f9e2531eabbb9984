"""MQTT source: paho-mqtt subscriber that acknowledges only durable readings.

paho runs its network loop in its own thread and calls ``on_message`` there;
the message is decoded in that thread and handed to the context with an ack
that sends the PUBACK once the runner has made the rows durable
(``manual_ack=True``). With ``clean_session: false`` and a fixed client id the
broker keeps unacknowledged QoS 1 messages across a crash and redelivers them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citylake.ingest.base import Ack, Row, SourceContext, SourceUnavailable, StreamingSource
from citylake.ingest.known_devices import KnownDevices
from citylake.ingest.mqtt import sparkplug
from citylake.ingest.mqtt.codec import DeviceLevels, JsonReadingsCodec, PayloadError, TopicTemplate
from citylake.ingest.mqtt.config import MqttSourceConfig
from citylake.schemas import table

log = logging.getLogger(__name__)
READINGS = table("readings")
DEVICE_EVENTS = table("device_events")


class MqttSource(StreamingSource):
    config_model = MqttSourceConfig

    def __init__(self, config: MqttSourceConfig) -> None:
        super().__init__(config)
        self.config: MqttSourceConfig = config
        parts = urlsplit(config.url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme in ("mqtts", "ssl")
        self.port = parts.port or (8883 if self.tls else 1883)
        self.routes = [
            (TopicTemplate(m.template), JsonReadingsCodec(m.timestamp_field, m.timestamp_unit, m.units))
            for m in config.topics
        ]
        self._client: mqtt.Client | None = None
        self._sparkplug = sparkplug.SparkplugDecoder(
            lambda: int(time.time() * 1000), config.sparkplug_max_aliases
        )
        self._ctx: SourceContext | None = None
        # Touched only from paho's network thread (on_message).
        self.known = KnownDevices(config.known_devices_max)
        self.connected = False
        self.subscribed = False
        self.backpressure_waits = 0

    def is_up(self) -> bool:
        return self.connected and self.subscribed

    def counters(self) -> Mapping[str, int]:
        counts = {"known_devices_evicted": self.known.evictions}
        if self.config.sparkplug_groups:
            counts.update(self._sparkplug.counters())
        return counts

    def _device_rows(
        self, device_ids: Sequence[str], ids: dict[str, str], topic: str, now_ms: int
    ) -> list[Row]:
        """``devices`` rows for the devices of one message that are new or
        whose topic levels changed since the row last landed. A device's
        levels are compared as the topic they came in (the first template that
        matches a topic always wins, so equal topics mean equal levels): one
        string hash per message, where building the levels cost about half the
        JSON decode; the row is built only for a change."""
        said = topic
        rows: list[Row] = []
        levels: DeviceLevels | None = None
        for device_id in device_ids:
            first_seen = self.known.observe(device_id, said, now_ms)
            if first_seen is not None:
                levels = levels or DeviceLevels(ids)
                rows.append(levels.row(device_id, first_seen, now_ms))
        return rows

    def validate(self) -> list[str]:
        problems = []
        for template, _ in self.routes:
            if "device_id" not in template.names:
                log.info("template %s has no {device_id}: payloads must carry one", template.template)
        if self.config.reconnect_max_s < self.config.reconnect_min_s:
            problems.append("reconnect_max_s must be >= reconnect_min_s")
        return problems

    def _subscriptions(self) -> list[str]:
        filters = [t.subscription for t, _ in self.routes]
        filters += [f"{sparkplug.NAMESPACE}/{group}/#" for group in self.config.sparkplug_groups]
        if self.config.shared_group:
            return [f"$share/{self.config.shared_group}/{f}" for f in filters]
        return filters

    def _new_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=self.config.clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        if self.tls:
            client.tls_set(ca_certs=self.config.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(int(max(1, self.config.reconnect_min_s)), int(self.config.reconnect_max_s))
        return client

    async def check(self) -> None:
        """Connect once and wait for the broker's CONNACK: catches a wrong
        address, TLS trouble and refused credentials alike."""
        client = self._new_client(f"citylake-check-{time.monotonic_ns()}")
        answer: list[object] = []
        connected = threading.Event()

        def on_connect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
            answer.append(reason)
            connected.set()

        client.on_connect = on_connect
        where = f"MQTT broker {self.host}:{self.port}"
        try:
            await asyncio.to_thread(client.connect, self.host, self.port, self.config.keepalive_s)
            client.loop_start()
            if not await asyncio.to_thread(connected.wait, 10):
                raise SourceUnavailable(f"{where}: no CONNACK within 10 s")
            if getattr(answer[0], "is_failure", False):
                raise SourceUnavailable(f"{where} refused the connection: {answer[0]}")
        except (OSError, ssl.SSLError) as exc:
            raise SourceUnavailable(f"{where}: {exc}") from exc
        finally:
            client.disconnect()
            client.loop_stop()

    async def start(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        client_id = self.config.client_id or f"citylake-{ctx.site}-{self.name}"
        client = self._new_client(client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        # connect_async + loop_start: a broker that is down at start is retried
        # with backoff instead of failing the whole ingest process.
        client.connect_async(self.host, self.port, self.config.keepalive_s)
        client.loop_start()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT %s: connect refused: %s", self.name, reason)
            return
        self.connected = True
        client.subscribe([(f, int(self.config.qos)) for f in self._subscriptions()])
        log.info("MQTT %s connected to %s:%d", self.name, self.host, self.port)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reasons: object, props: object
    ) -> None:
        failures = [r for r in reasons if getattr(r, "is_failure", False)]  # type: ignore[attr-defined]
        if failures:
            log.error(
                "MQTT %s: broker refused subscriptions %s: %s", self.name, self._subscriptions(), failures
            )
        self.subscribed = not failures

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        self.connected = False
        self.subscribed = False
        log.info("MQTT %s disconnected (%s); paho reconnects with backoff", self.name, reason)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        payload = bytes(message.payload)
        topic = message.topic
        ack: Ack | None = None
        input_id: str | None = None
        if message.qos > 0:
            mid, qos = message.mid, message.qos

            def ack() -> None:
                client.ack(mid, qos)

            # Identity of a QoS 1 delivery: a redelivery after our crash carries
            # the same packet id and bytes, with the DUP flag set.
            digest = hashlib.blake2b(payload, digest_size=8, key=topic.encode()[:64]).hexdigest()
            input_id = f"{mid}:{digest}"
            if message.dup and ctx.already_landed(input_id):
                ack()
                return
        self._wait_until_ready(ctx)
        raw = topic.encode() + b" " + payload
        if len(payload) > self.config.max_payload_bytes:
            limit = self.config.max_payload_bytes
            reason = f"payload of {len(payload)} bytes exceeds max_payload_bytes {limit} (topic {topic})"
            ctx.reject(raw, reason, ack, input_id)
            return
        self._route(ctx, topic, payload, raw, ack, input_id)

    def _route(
        self,
        ctx: SourceContext,
        topic: str,
        payload: bytes,
        raw: bytes,
        ack: Ack | None,
        input_id: str | None,
    ) -> None:
        """One delivery, acknowledged (``ack``) once what it yields is durable. The
        transport (connection, acknowledgement identity, redelivery, backpressure,
        size bound) is done above; a protocol on top of MQTT (LoRaWAN through
        ChirpStack) overrides this and ``_subscriptions``."""
        if self.config.sparkplug_groups and topic.startswith(sparkplug.NAMESPACE + "/"):
            self._on_sparkplug(ctx, topic, payload, raw, ack, input_id)
            return
        for template, codec in self.routes:
            ids = template.match(topic)
            if ids is None:
                continue
            try:
                decoded = codec.decode_columns(payload, ids)
            except PayloadError as exc:
                ctx.reject(raw, f"{exc} (topic {topic})", ack, input_id)
            else:
                now = int(time.time() * 1000)
                topic_id = ids.get("device_id")
                device_ids = [topic_id] if topic_id else list(dict.fromkeys(decoded.device_id))
                devices = self._device_rows(device_ids, ids, topic, now)
                if devices:
                    # The acknowledgement rides on the readings, handed over last.
                    ctx.describe_devices(devices, raw)
                columns = decoded.as_columns(self.name, ctx.site, now)
                ctx.emit_columns(READINGS, columns, len(decoded), raw, ack, input_id)
            return
        ctx.reject(raw, f"topic {topic} matches no configured template", ack, input_id)

    def _on_sparkplug(
        self,
        ctx: SourceContext,
        topic: str,
        payload: bytes,
        raw: bytes,
        ack: Ack | None,
        input_id: str | None,
    ) -> None:
        try:
            decoded = self._sparkplug.decode(topic, payload)
        except sparkplug.SparkplugError as exc:
            ctx.reject(raw, str(exc), ack, input_id)
            return
        now = int(time.time() * 1000)
        common = {"source": self.name, "site": ctx.site, "ingest_ts": now}
        # One acknowledgement per message: it rides on the last hand-over.
        parts: list[tuple[str, object]] = [("problem", p) for p in decoded.problems]
        where = sparkplug.parse_topic(topic)  # decode() accepted it
        if where.message_type in sparkplug.DEVICE_MESSAGES:
            key = (where.group_id, where.edge_node_id, where.device_id)
            first_seen = self.known.observe(where.citylake_device_id, key, now)
            if first_seen is not None:
                ctx.describe_devices([sparkplug.device_row(where, first_seen, now)], raw)
        if decoded.events:
            parts.append(("events", [{**e, **common} for e in decoded.events]))
        if decoded.readings:
            parts.append(("readings", [{**r, **common, "unit": None} for r in decoded.readings]))
        if not parts:
            if ack is not None:
                ctx.reject(raw, f"Sparkplug B {topic[:80]}: nothing to store", ack, input_id)
            return
        for index, (kind, item) in enumerate(parts):
            last = index == len(parts) - 1
            this_ack, this_id = (ack, input_id) if last else (None, None)
            if kind == "problem":
                ctx.reject(raw, f"Sparkplug B {item}", this_ack, this_id)
            else:
                spec = READINGS if kind == "readings" else DEVICE_EVENTS
                ctx.emit(spec, item, raw, this_ack, this_id)  # type: ignore[arg-type]

    def _wait_until_ready(self, ctx: SourceContext) -> None:
        """Backpressure: while the landing buffer is full, hold paho's network
        thread. It stops reading the socket, TCP fills, and the broker keeps the
        rest (unacknowledged QoS 1 messages stay in our session)."""
        if ctx.ready():
            return
        self.backpressure_waits += 1
        deadline = time.monotonic() + self.config.keepalive_s / 2
        while not ctx.ready() and time.monotonic() < deadline and self._client is not None:
            time.sleep(0.01)
