"""What the platform's findings become: ``device_events``, ``devices`` and
``readings`` rows, and the raw input a reject keeps. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson

from citylake.ingest.gb28181.registry import Event
from citylake.schemas import table

READINGS = table("readings")
DEVICE_EVENTS = table("device_events")
DEVICES = table("devices")
POSITION_UNITS = {"longitude": "deg", "latitude": "deg", "speed": "km/h", "direction": "deg", "altitude": "m"}
_ONLINE = {"on", "online", "ok"}
_OFFLINE = {"off", "offline"}
_AUTHORIZATION = re.compile(rb"(?im)^((?:proxy-)?authorization[ \t]*:)[^\r\n]*")


def redact(raw: bytes) -> bytes:
    """``raw`` without the values of its Authorization headers: rejects are
    readable through /v1/sql, and a digest response there invites offline
    cracking of the password."""
    if b"uthorization" not in raw and b"UTHORIZATION" not in raw:
        return raw
    return _AUTHORIZATION.sub(rb"\1 <redacted>", raw)


def normalize_status(value: str | None) -> str | None:
    """Catalog Status values (ON, OFF, ONLINE, OK, ...) as online/offline."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _ONLINE:
        return "online"
    if lowered in _OFFLINE:
        return "offline"
    return lowered


def event_rows(events: Sequence[Event], source: str, site: str, ingest_ts: int) -> list[dict[str, object]]:
    return [
        {
            "device_id": e.device_id,
            "ts": e.ts,
            "kind": e.kind,
            "attributes": orjson.dumps(e.attributes, option=orjson.OPT_SORT_KEYS).decode(),
            "source": source,
            "site": site,
            "ingest_ts": ingest_ts,
        }
        for e in events
    ]


def position_rows(
    device_id: str, ts: int, values: Mapping[str, float | None], source: str, site: str, ingest_ts: int
) -> list[dict[str, object]]:
    """One reading per MobilePosition value the device gave."""
    return [
        {
            "device_id": device_id,
            "ts": ts,
            "metric": metric,
            "value": value,
            "unit": POSITION_UNITS[metric],
            "quality": 0,
            "source": source,
            "site": site,
            "ingest_ts": ingest_ts,
        }
        for metric, value in values.items()
        if value is not None
    ]
