"""ChirpStack v4 integration events (MQTT, JSON) ⇄ citylake rows. Pure: the clock is passed in.

ChirpStack publishes one JSON object per event on
``application/<application_id>/device/<dev_eui>/event/<type>``, in the
protobuf JSON mapping of its ``integration`` messages (camelCase keys):

- ``up``: ``deviceInfo``, ``time``, ``fCnt``, ``fPort``, ``data`` (base64),
  ``object`` (what the device profile's codec decoded), ``rxInfo[]`` (per
  gateway: ``gatewayId``, ``rssi``, ``snr``), ``txInfo``, ``dr``, ``devAddr``;
- ``join``: ``deviceInfo``, ``time``, ``devAddr``;
- ``status``: ``deviceInfo``, ``time``, ``margin``, ``externalPowerSource``,
  ``batteryLevelUnavailable``, ``batteryLevel`` (percent);
- ``ack``: ``queueItemId``, ``acknowledged``, ``fCntDown``; ``txack``:
  ``downlinkId``, ``queueItemId``, ``fCntDown``, ``gatewayId``;
- ``log``: ``level`` (INFO, WARNING, ERROR), ``code``, ``description``, ``context``.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EVENT_TYPES = frozenset({"up", "join", "status", "ack", "txack", "log"})
DEV_EUI = re.compile(r"^[0-9a-f]{16}$")
_FRACTION = re.compile(r"(\.\d{6})\d+")
MAX_OBJECT_FIELDS = 256
MAX_DEPTH = 4


class EventError(ValueError):
    """An event that cannot be stored; ``str()`` is the reject reason."""


@dataclass(frozen=True)
class EventTopic:
    application_id: str
    dev_eui: str
    event: str


def parse_topic(topic: str) -> EventTopic:
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "application" or parts[2] != "device" or parts[4] != "event":
        raise EventError(
            f"lorawan topic {topic[:120]!r} is not application/<id>/device/<devEui>/event/<type>"
        )
    dev_eui = parts[3].lower()
    if not DEV_EUI.fullmatch(dev_eui):
        raise EventError(f"lorawan devEui {parts[3][:40]!r} in the topic is not 16 hex digits")
    if parts[5] not in EVENT_TYPES:
        raise EventError(
            f"lorawan unknown event type {parts[5][:40]!r} (known: {', '.join(sorted(EVENT_TYPES))})"
        )
    return EventTopic(parts[1], dev_eui, parts[5])


def parse_time(value: object, now_ms: int) -> int:
    """RFC 3339 with up to nanoseconds (ChirpStack writes 9 digits); absent: now."""
    if value is None:
        return now_ms
    if not isinstance(value, str):
        raise EventError(f"lorawan time {value!r} is not a string")
    text = _FRACTION.sub(r"\1", value.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(f"lorawan time {value[:40]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise EventError(f"lorawan time {value[:40]!r} has no UTC offset")
    return int(parsed.timestamp() * 1000)


def flatten_object(obj: dict[str, Any]) -> list[tuple[str, float | None, str | None]]:
    """The decoded payload's fields as (metric, number, text): nested objects
    join their keys with ``_`` (``{"env": {"t": 1}}`` is ``env_t``), booleans are
    0/1, lists are text (JSON). At most ``MAX_OBJECT_FIELDS`` fields and
    ``MAX_DEPTH`` levels: a codec gone wrong is a reject, not a flood of metrics."""
    out: list[tuple[str, float | None, str | None]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if len(out) > MAX_OBJECT_FIELDS:
            raise EventError(f"lorawan object has more than {MAX_OBJECT_FIELDS} fields")
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise EventError(f"lorawan object nested deeper than {MAX_DEPTH} levels at {prefix!r}")
            for key, inner in value.items():
                walk(f"{prefix}_{key}" if prefix else str(key), inner, depth + 1)
        elif isinstance(value, int | float):  # bool is an int: 0/1
            out.append((prefix, float(value), None))
        elif isinstance(value, str):
            out.append((prefix, None, value[:1024]))
        elif value is None:
            return
        else:
            out.append((prefix, None, json.dumps(value)[:1024]))

    walk("", obj, 0)
    if len(out) > MAX_OBJECT_FIELDS:
        raise EventError(f"lorawan object has more than {MAX_OBJECT_FIELDS} fields")
    return out


@dataclass
class DecodedEvent:
    """What one event becomes."""

    dev_eui: str
    ts: int
    readings: list[tuple[str, float | None, str | None, str | None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # (kind, attributes)
    device: dict[str, object] | None = None  # what the event says about the device (devices row)
    f_cnt: int | None = None


def _device_info(payload: dict[str, Any], topic: EventTopic) -> dict[str, Any]:
    info = payload.get("deviceInfo")
    if not isinstance(info, dict):
        raise EventError("lorawan event has no deviceInfo object")
    said = str(info.get("devEui", "")).lower()
    if said != topic.dev_eui:
        raise EventError(f"lorawan deviceInfo.devEui {said[:40]!r} is not the topic's {topic.dev_eui}")
    return info


def describe(info: dict[str, Any]) -> dict[str, object]:
    """The ``devices`` facts ChirpStack's deviceInfo carries (tags bounded)."""
    raw_tags = info.get("tags")
    tags: dict[Any, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    return {
        "name": str(info.get("deviceName", ""))[:256] or None,
        "type": str(info.get("deviceProfileName", ""))[:128] or None,
        "application_id": info.get("applicationId"),
        "application_name": info.get("applicationName"),
        "tenant_id": info.get("tenantId"),
        "device_profile_id": info.get("deviceProfileId"),
        "tags": {str(k)[:64]: str(v)[:256] for k, v in list(tags.items())[:32]},
    }


def decode_event(
    topic: EventTopic, payload: bytes, now_ms: int, units: dict[str, str], link_metrics: bool = True
) -> DecodedEvent:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"lorawan {topic.event} payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventError(f"lorawan {topic.event} payload is not a JSON object")
    info = _device_info(data, topic)
    ts = parse_time(data.get("time"), now_ms)
    out = DecodedEvent(topic.dev_eui, ts, device=describe(info))
    if topic.event == "up":
        _up(data, out, units, link_metrics)
    elif topic.event == "join":
        out.events.append(("register", {"event": "join", "dev_addr": data.get("devAddr")}))
    elif topic.event == "status":
        _status(data, out)
    elif topic.event in ("ack", "txack"):
        keys = ("queueItemId", "acknowledged", "fCntDown", "gatewayId", "downlinkId")
        out.events.append(("status", {"event": topic.event, **{k: data[k] for k in keys if k in data}}))
    else:  # log
        level = str(data.get("level", "INFO"))
        kind = "alarm" if level == "ERROR" else "status"
        attrs = {
            "event": "log",
            "level": level,
            "code": data.get("code"),
            "description": str(data.get("description", ""))[:1024],
        }
        out.events.append((kind, attrs))
    return out


def _up(data: dict[str, Any], out: DecodedEvent, units: dict[str, str], link_metrics: bool) -> None:
    f_cnt = data.get("fCnt", 0)  # protobuf JSON omits a zero
    if not isinstance(f_cnt, int) or isinstance(f_cnt, bool) or not 0 <= f_cnt < 2**32:
        raise EventError(f"lorawan up fCnt {f_cnt!r} is not a 32-bit counter")
    out.f_cnt = f_cnt
    obj = data.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise EventError("lorawan up object is not a JSON object")
    for metric, number, text in flatten_object(obj or {}):
        out.readings.append((metric, number, text, units.get(metric)))
    rx = data.get("rxInfo") or []
    if not isinstance(rx, list):
        raise EventError("lorawan up rxInfo is not a list")
    if link_metrics and rx:
        best = max((g for g in rx if isinstance(g, dict) and isinstance(g.get("rssi"), int | float)),
                   key=lambda g: g["rssi"], default=None)  # fmt: skip
        if best is not None:
            out.readings.append(("lora_rssi", float(best["rssi"]), None, "dBm"))
            if isinstance(best.get("snr"), int | float):
                out.readings.append(("lora_snr", float(best["snr"]), None, "dB"))
    if not out.readings:
        raise EventError("lorawan up has no decoded object fields (is a codec set on the device profile?)")


def _status(data: dict[str, Any], out: DecodedEvent) -> None:
    attrs: dict[str, object] = {"event": "status"}
    margin = data.get("margin", 0)
    if isinstance(margin, int | float) and not isinstance(margin, bool):
        out.readings.append(("link_margin", float(margin), None, "dB"))
        attrs["margin"] = margin
    external = bool(data.get("externalPowerSource", False))
    attrs["external_power_source"] = external
    if not data.get("batteryLevelUnavailable", False) and not external:
        level = data.get("batteryLevel")
        if isinstance(level, int | float) and not isinstance(level, bool):
            out.readings.append(("battery_level", float(level), None, "%"))
            attrs["battery_level"] = level
    out.events.append(("status", attrs))
    assert out.device is not None
    out.device["status"] = {k: v for k, v in attrs.items() if k != "event"}


class FrameCounters:
    """The recent uplink frame counters of each device, to drop an uplink seen
    twice (ChirpStack publishes one event per deduplicated uplink; a second
    integration, a replay or a re-subscription can still hand us the same one).
    A ``join`` resets the device (its counter restarts at 0). Bounded: at most
    ``max_devices`` devices (least recently heard forgotten) and ``window``
    counters each."""

    def __init__(self, max_devices: int, window: int = 16) -> None:
        self.max_devices = max_devices
        self.window = window
        self._seen: OrderedDict[str, list[int]] = OrderedDict()
        self.evictions = 0

    def first_time(self, dev_eui: str, f_cnt: int) -> bool:
        recent = self._seen.get(dev_eui)
        if recent is None:
            self._seen[dev_eui] = [f_cnt]
            if len(self._seen) > self.max_devices:
                self._seen.popitem(last=False)
                self.evictions += 1
            return True
        self._seen.move_to_end(dev_eui)
        if f_cnt in recent:
            return False
        recent.append(f_cnt)
        if len(recent) > self.window:
            del recent[0]
        return True

    def joined(self, dev_eui: str) -> None:
        self._seen.pop(dev_eui, None)

    def __len__(self) -> int:
        return len(self._seen)
