"""LoRaWAN source: ChirpStack v4's MQTT integration events, over ``ingest/mqtt``'s transport.

``LorawanSource`` is an ``MqttSource``: connection, TLS, credentials,
persistent session, QoS 1 acknowledgement after commit, redelivery
detection, backpressure and the payload bound are the MQTT adapter's. It
subscribes to ``application/<id>/device/+/event/+`` and routes each event
(codec.py): ``up`` → readings (the decoded ``object``'s fields, and the best
gateway's RSSI/SNR), ``join`` → a ``register`` device event, ``status`` →
``battery_level``/``link_margin`` readings, a ``status`` event and the
device's attributes, ``ack``/``txack`` → ``status`` events, ``log`` → ``alarm``
(level ERROR) or ``status``. An uplink whose frame counter was just seen is
dropped (acknowledged, counted as ``duplicate_uplinks``).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping

from citylake.ingest.base import Ack, Row, SourceContext
from citylake.ingest.lorawan.codec import DecodedEvent, EventError, FrameCounters, decode_event, parse_topic
from citylake.ingest.lorawan.config import LorawanSourceConfig
from citylake.ingest.mqtt.adapter import DEVICE_EVENTS, READINGS, MqttSource


class LorawanSource(MqttSource):
    config_model = LorawanSourceConfig

    def __init__(self, config: LorawanSourceConfig) -> None:
        super().__init__(config)
        self.config: LorawanSourceConfig = config
        self.frame_counters = FrameCounters(config.known_devices_max, config.fcnt_window)
        self.duplicate_uplinks = 0
        # The last status event of each device, bounded like ``known``: every
        # devices row carries it, so an event without one does not erase it.
        self._status: OrderedDict[str, object] = OrderedDict()

    def validate(self) -> list[str]:
        if self.config.reconnect_max_s < self.config.reconnect_min_s:
            return ["reconnect_max_s must be >= reconnect_min_s"]
        return []

    def counters(self) -> Mapping[str, int]:
        return {
            "known_devices_evicted": self.known.evictions,
            "frame_counters_evicted": self.frame_counters.evictions,
            "duplicate_uplinks": self.duplicate_uplinks,
        }

    def _subscriptions(self) -> list[str]:
        filters = [f"application/{app}/device/+/event/+" for app in self.config.application_ids]
        if self.config.shared_group:
            return [f"$share/{self.config.shared_group}/{f}" for f in filters]
        return filters

    def _route(
        self,
        ctx: SourceContext,
        topic: str,
        payload: bytes,
        raw: bytes,
        ack: Ack | None,
        input_id: str | None,
    ) -> None:
        now = int(time.time() * 1000)
        try:
            where = parse_topic(topic)
            decoded = decode_event(where, payload, now, self.config.units, self.config.link_metrics)
        except EventError as exc:
            ctx.reject(raw, str(exc), ack, input_id)
            return
        if where.event == "join":
            self.frame_counters.joined(where.dev_eui)
        if decoded.f_cnt is not None and not self.frame_counters.first_time(where.dev_eui, decoded.f_cnt):
            self.duplicate_uplinks += 1
            if ack is not None:
                ack()  # nothing to land: the first delivery carried it
            return
        self._describe(ctx, decoded, raw, now)
        common = {"device_id": decoded.dev_eui, "ts": decoded.ts, "source": self.name, "site": ctx.site}
        events: list[Row] = [
            {
                **common,
                "kind": kind,
                "attributes": json.dumps(attrs, sort_keys=True, default=str),
                "ingest_ts": now,
            }
            for kind, attrs in decoded.events
        ]
        readings: list[Row] = [
            {
                **common,
                "metric": metric,
                "value": number,
                "text": text,
                "unit": unit,
                "quality": 0,
                "ingest_ts": now,
            }
            for metric, number, text, unit in decoded.readings
        ]
        # One acknowledgement per message: it rides on the last hand-over.
        if events:
            last = not readings
            ctx.emit(DEVICE_EVENTS, events, raw, ack if last else None, input_id if last else None)
        if readings:
            ctx.emit(READINGS, readings, raw, ack, input_id)

    def _describe(self, ctx: SourceContext, decoded: DecodedEvent, raw: bytes, now: int) -> None:
        """A ``devices`` row on first sight and when what ChirpStack says of the device changes."""
        facts = dict(decoded.device or {})
        if "status" in facts:
            self._status[decoded.dev_eui] = facts["status"]
            if len(self._status) > self.config.known_devices_max:
                self._status.popitem(last=False)
        elif decoded.dev_eui in self._status:
            facts["status"] = self._status[decoded.dev_eui]
        said = json.dumps(facts, sort_keys=True, default=str)
        first_seen = self.known.observe(decoded.dev_eui, said, now)
        if first_seen is None:
            return
        attributes = {k: v for k, v in facts.items() if k not in ("name", "type") and v not in (None, {})}
        row: Row = {
            "device_id": decoded.dev_eui,
            "name": facts.get("name"),
            "type": facts.get("type"),
            "protocol": "lorawan",
            "attributes": json.dumps(attributes, sort_keys=True, default=str),
            "first_seen": first_seen,
            "last_seen": now,
        }
        ctx.describe_devices([row], raw)
