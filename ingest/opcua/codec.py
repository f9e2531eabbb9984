"""OPC UA values, status codes and timestamps to ``readings`` columns, and the
node-addressing syntax of the config. Pure: no I/O, no asyncua import, so the
config model can validate without loading the protocol stack."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

# The string forms OPC UA tools print (Part 6, 5.3.1.10): ns=<n>;i=|s=|g=|b=<id>.
NODE_ID = re.compile(r"^(ns=\d+;)?(i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=[A-Za-z0-9+/=]+)$")
# One browse-path element: <namespace index>:<browse name>.
_ELEMENT = re.compile(r"^(\d+):(.+)$")

Row = dict[str, object]


class UnsupportedValue(ValueError):
    """A value that cannot become a reading; the message is the ``rejected.reason``."""


def check_node_id(text: str) -> str:
    """``text`` if it is a node id in string form; ``ValueError`` naming the problem."""
    if not NODE_ID.match(text):
        raise ValueError(
            f"node_id {text!r}: expected ns=<index>;i=<number> or ns=<index>;s=<name> (or g=, b=)"
        )
    return text


def parse_browse_path(text: str) -> list[tuple[int, str]]:
    """``0:Objects/2:Pump1/2:Pressure`` as ``[(0, "Objects"), (2, "Pump1"), (2, "Pressure")]``.

    The first element is where browsing starts, usually ``0:Objects``."""
    parts = text.strip("/").split("/")
    path: list[tuple[int, str]] = []
    for part in parts:
        match = _ELEMENT.match(part)
        if match is None:
            raise ValueError(
                f"browse_path {text!r}: element {part!r} must be <namespace index>:<browse name>"
            )
        path.append((int(match.group(1)), match.group(2)))
    if len(path) < 2:
        raise ValueError(f"browse_path {text!r}: give at least a start and one child, e.g. 0:Objects/2:Pump1")
    return path


def quality_of(status_code: int) -> int:
    """``readings.quality`` from an OPC UA StatusCode: its two top bits are the
    severity (00 good, 01 uncertain, 10 bad; 11 is reserved and treated as bad)."""
    severity = (status_code >> 30) & 0b11
    return 0 if severity == 0 else 1 if severity == 1 else 2


def value_and_text(value: object) -> tuple[float | None, str | None]:
    """The ``value`` and ``text`` columns of one Variant value. Numbers and
    booleans are numbers; strings (and localized text, date-times) are text;
    ``None`` (a bad status without a value) is neither."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise UnsupportedValue(f"value {number} is not a finite number")
        return number, None
    if isinstance(value, str):
        return None, value
    if isinstance(value, datetime):
        return None, value.isoformat()
    text = getattr(value, "Text", None)  # LocalizedText, without importing asyncua
    if isinstance(text, str):
        return None, text
    raise UnsupportedValue(f"unsupported value type {type(value).__name__}")


def timestamp_ms(source: datetime | None, server: datetime | None, now_ms: int) -> int:
    """Event time: the device's SourceTimestamp, else the ServerTimestamp, else
    our clock. asyncua gives naive datetimes in UTC or aware ones; both are UTC."""
    for stamp in (source, server):
        if stamp is not None and stamp.year > 1601:  # 1601-01-01 is OPC UA's "no time"
            aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
            return int(aware.timestamp() * 1000)
    return now_ms


def reading(
    device_id: str,
    metric: str,
    unit: str | None,
    value: object,
    status_code: int,
    ts_ms: int,
) -> Row:
    """One ``readings`` row without the source, site and ingest time."""
    number, text = value_and_text(value)
    return {
        "device_id": device_id,
        "metric": metric,
        "ts": ts_ms,
        "value": number,
        "text": text,
        "unit": unit,
        "quality": quality_of(status_code),
    }
