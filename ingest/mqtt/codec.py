"""MQTT topics and JSON payloads to ``readings`` rows. Pure: no I/O."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

import orjson

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
RESERVED_KEYS = frozenset({"device_id", "quality", "unit"})
# A GB/T 2260 administrative code, as the query service's district filter
# takes it: 2 (province) to 12 (village) digits.
_CIVIL_CODE = re.compile(r"[0-9]{2,12}")
# Levels with a column of their own in `devices`; any other named level is an attribute.
DEVICE_LEVELS = frozenset({"device_id", "device_type", "district"})

Row = dict[str, object]


class PayloadError(ValueError):
    """A payload that yields no rows; the message is the ``rejected.reason``."""


class TopicTemplate:
    """``city/{district}/{device_type}/{device_id}/telemetry``: placeholders are
    whole topic levels; the subscription filter has ``+`` in their place."""

    def __init__(self, template: str) -> None:
        if not template or template.startswith("/") or "#" in template or "+" in template:
            raise ValueError(f"topic template {template!r}: use {{name}} levels instead of + and #")
        self.template = template
        self.levels = template.split("/")
        self.names: list[str | None] = []
        for level in self.levels:
            match = _PLACEHOLDER.match(level)
            if match is None and ("{" in level or "}" in level):
                raise ValueError(f"topic template {template!r}: level {level!r} must be a whole {{name}}")
            self.names.append(match.group(1) if match else None)
        placeholders = [n for n in self.names if n]
        if len(set(placeholders)) != len(placeholders):
            raise ValueError(f"topic template {template!r}: a placeholder is used twice")
        self.subscription = "/".join(
            "+" if n else lvl for n, lvl in zip(self.names, self.levels, strict=True)
        )

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholder values of ``topic``, or ``None`` if it does not fit."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        values: dict[str, str] = {}
        for part, level, name in zip(parts, self.levels, self.names, strict=True):
            if name is None:
                if part != level:
                    return None
            elif not part:
                return None
            else:
                values[name] = part
        return values


class DeviceLevels:
    """What the named levels of a topic say about its device: ``{device_type}``
    is its type; ``{district}`` its civil code when it is a GB/T 2260 code
    (digits), else its district (the place name); any other level lands in
    ``attributes`` (JSON)."""

    __slots__ = ("attributes", "civil_code", "district", "type")

    def __init__(self, levels: dict[str, str]) -> None:
        self.type = levels.get("device_type")
        place = levels.get("district")
        is_code = place is not None and _CIVIL_CODE.fullmatch(place) is not None
        self.civil_code = place if is_code else None
        self.district = None if is_code else place
        extra = {k: v for k, v in levels.items() if k not in DEVICE_LEVELS}
        self.attributes = orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else None

    def row(self, device_id: str, first_seen: int, last_seen: int) -> Row:
        """The ``devices`` row of ``device_id`` as these levels describe it."""
        return {
            "device_id": device_id,
            "type": self.type,
            "protocol": "mqtt",
            "civil_code": self.civil_code,
            "district": self.district,
            "attributes": self.attributes,
            "first_seen": first_seen,
            "last_seen": last_seen,
        }


def parse_timestamp(value: object, unit: Literal["ms", "s", "iso8601"], field: str) -> int:
    """Event time as epoch milliseconds."""
    if value is None:
        raise PayloadError(f"missing timestamp field {field!r}")
    if unit == "iso8601":
        if not isinstance(value, str):
            raise PayloadError(f"timestamp {field!r} must be an ISO 8601 string, got {type(value).__name__}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PayloadError(f"timestamp {field!r}={value[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise PayloadError(f"timestamp {field!r}={value[:40]!r} has no UTC offset")
        return int(parsed.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"timestamp {field!r} must be a number of {unit}, got {type(value).__name__}")
    return int(value * 1000) if unit == "s" else int(value)


class ReadingColumns:
    """Decoded readings as columns: the fast path into the batcher (no dict per
    reading). ``source``, ``site`` and ``ingest_ts`` are the same for a whole
    payload and are filled by ``as_columns``."""

    __slots__ = ("device_id", "metric", "quality", "text", "ts", "unit", "value")

    def __init__(self) -> None:
        self.device_id: list[str] = []
        self.ts: list[int] = []
        self.metric: list[str] = []
        self.value: list[object] = []
        self.text: list[str | None] = []
        self.unit: list[str | None] = []
        self.quality: list[object] = []

    def __len__(self) -> int:
        return len(self.ts)

    def as_columns(self, source: str, site: str, ingest_ms: int) -> dict[str, list[object]]:
        n = len(self.ts)
        return {
            "device_id": self.device_id,  # type: ignore[dict-item]
            "ts": self.ts,  # type: ignore[dict-item]
            "metric": self.metric,  # type: ignore[dict-item]
            "value": self.value,
            "text": self.text,  # type: ignore[dict-item]
            "unit": self.unit,  # type: ignore[dict-item]
            "quality": self.quality,
            "source": [source] * n,
            "site": [site] * n,
            "ingest_ts": [ingest_ms] * n,
        }

    def as_rows(self, source: str, site: str, ingest_ms: int) -> list[Row]:
        columns = self.as_columns(source, site, ingest_ms)
        return [{name: values[i] for name, values in columns.items()} for i in range(len(self))]


class JsonReadingsCodec:
    """One JSON object (``{"ts": ..., "<metric>": <value>, ...}``) or an array
    of them, to one reading per metric."""

    def __init__(
        self,
        timestamp_field: str = "ts",
        timestamp_unit: Literal["ms", "s", "iso8601"] = "ms",
        units: dict[str, str] | None = None,
    ) -> None:
        self.timestamp_field = timestamp_field
        self.timestamp_unit = timestamp_unit
        self.units = units or {}
        self._skip = RESERVED_KEYS | {timestamp_field}

    def decode_columns(self, payload: bytes, ids: dict[str, str]) -> ReadingColumns:
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None
        objects = document if isinstance(document, list) else [document]
        out = ReadingColumns()
        for index, item in enumerate(objects):
            if not isinstance(item, dict):
                raise PayloadError(f"item {index}: expected a JSON object, got {type(item).__name__}")
            self._append(item, ids, out)
        return out

    def decode(
        self, payload: bytes, ids: dict[str, str], source: str, site: str, ingest_ms: int
    ) -> list[Row]:
        """The same as rows (simple callers, tests)."""
        return self.decode_columns(payload, ids).as_rows(source, site, ingest_ms)

    def _append(self, item: dict[str, object], ids: dict[str, str], out: ReadingColumns) -> None:
        device_id = ids.get("device_id") or item.get("device_id")
        if not isinstance(device_id, str) or not device_id:
            raise PayloadError("no device_id in the topic or the payload")
        ts = parse_timestamp(item.get(self.timestamp_field), self.timestamp_unit, self.timestamp_field)
        quality = item.get("quality", 0)
        skip, units = self._skip, self.units
        before = len(out)
        for metric, raw in item.items():
            if metric in skip or raw is None:
                continue
            if raw.__class__ is float or (raw.__class__ is int):
                out.value.append(float(raw))
                out.text.append(None)
            elif isinstance(raw, str):
                out.value.append(None)
                out.text.append(raw)
            elif isinstance(raw, bool):
                out.value.append(1.0 if raw else 0.0)
                out.text.append(None)
            else:
                # Validation refuses this reading alone; its neighbours land.
                out.value.append(raw)
                out.text.append(None)
            out.metric.append(metric)
            out.unit.append(units.get(metric))
        added = len(out.metric) - before
        if added == 0:
            raise PayloadError("no metrics in the payload")
        out.device_id.extend([device_id] * added)
        out.ts.extend([ts] * added)
        out.quality.extend([quality] * added)
