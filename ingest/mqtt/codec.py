"""MQTT topics and JSON payloads to ``readings`` rows. Pure: no I/O."""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal, cast

import orjson

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
RESERVED_KEYS = frozenset({"device_id", "quality", "unit"})
# A GB/T 2260 administrative code, as the query service's district filter
# takes it: 2 (province) to 12 (village) digits.
_CIVIL_CODE = re.compile(r"[0-9]{2,12}")
# Levels with a column of their own in `devices`; any other named level is an attribute.
DEVICE_LEVELS = frozenset({"device_id", "device_type", "district"})

Row = dict[str, object]
# Below this many items a payload goes the reading-by-reading way: the
# column-wise pass costs more than it saves on a single object.
_UNIFORM_MIN_ITEMS = 8
# bool is an int: True lands as 1.0, as in the reading-by-reading pass.
_NUMBER_TYPES = frozenset({float, int, bool})


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


def _typed_columns(
    columns: list[Sequence[object]], count: int
) -> tuple[list[Iterable[object]], list[Iterable[object]]] | None:
    """Each metric's ``value`` and ``text`` columns when it is all numbers or
    all strings; None for nulls (skipped readings) or other types."""
    values: list[Iterable[object]] = []
    texts: list[Iterable[object]] = []
    for column in columns:
        kinds = set(map(type, column))
        if kinds == {str}:
            values.append(itertools.repeat(None, count))
            texts.append(column)
        elif kinds <= _NUMBER_TYPES:
            try:
                numbers = cast("Sequence[float]", column)
                values.append(column if kinds == {float} else tuple(map(float, numbers)))
            except OverflowError:
                return None
            texts.append(itertools.repeat(None, count))
        else:
            return None
    return values, texts


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
        if len(objects) >= _UNIFORM_MIN_ITEMS:
            uniform = self._decode_uniform(objects, ids)
            if uniform is not None:
                return uniform
        return self._decode_each(objects, ids)

    def _decode_each(self, objects: list[object], ids: dict[str, str]) -> ReadingColumns:
        """Reading by reading: any shape, and the reasons for a bad one."""
        out = ReadingColumns()
        # One pass with the column appends bound once: the per-reading work
        # was most of a batched message's CPU (500k readings/s is the goal).
        device_append, ts_append = out.device_id.append, out.ts.append
        metric_append, value_append, text_append = out.metric.append, out.value.append, out.text.append
        unit_append, quality_append = out.unit.append, out.quality.append
        skip, units, field, unit = self._skip, self.units, self.timestamp_field, self.timestamp_unit
        topic_device = ids.get("device_id")
        for index, item in enumerate(objects):
            if not isinstance(item, dict):
                raise PayloadError(f"item {index}: expected a JSON object, got {type(item).__name__}")
            device_id = topic_device or item.get("device_id")
            if not isinstance(device_id, str) or not device_id:
                raise PayloadError("no device_id in the topic or the payload")
            ts = item.get(field)
            if ts.__class__ is not int or unit != "ms":
                ts = parse_timestamp(ts, unit, field)
            quality = item.get("quality", 0)
            added = 0
            for metric, raw in item.items():
                if metric in skip or raw is None:
                    continue
                kind = raw.__class__
                if kind is float:
                    value_append(raw)
                    text_append(None)
                elif kind is int:
                    value_append(float(raw))
                    text_append(None)
                elif kind is str:
                    value_append(None)
                    text_append(raw)
                elif kind is bool:
                    value_append(1.0 if raw else 0.0)
                    text_append(None)
                else:
                    # Validation refuses this reading alone; its neighbours land.
                    value_append(raw)
                    text_append(None)
                metric_append(metric)
                unit_append(units.get(metric) if units else None)
                device_append(device_id)
                ts_append(ts)
                quality_append(quality)
                added += 1
            if added == 0:
                raise PayloadError("no metrics in the payload")
        return out

    def _decode_uniform(self, objects: list[object], ids: dict[str, str]) -> ReadingColumns | None:
        """The gateway shape decoded column by column in C (itemgetter, map,
        zip): every item an object with the same keys, millisecond times,
        and each metric all numbers or all strings. None for anything else,
        which the reading-by-reading pass decodes (and names what is wrong);
        the readings and their order are the ones that pass yields."""
        if set(map(type, objects)) != {dict}:
            return None
        items: list[dict[str, object]] = objects  # type: ignore[assignment]
        keys = tuple(items[0])
        lengths = set(map(len, items))
        if lengths != {len(keys)} or len(keys) < 2 or self.timestamp_unit != "ms":
            return None
        metrics = tuple(k for k in keys if k not in self._skip)
        if not metrics:
            return None
        try:
            columns = dict(zip(keys, zip(*map(operator.itemgetter(*keys), items), strict=True), strict=True))
        except KeyError:  # an item with other keys
            return None
        count = len(items)
        ts = columns.get(self.timestamp_field)
        if ts is None or set(map(type, ts)) != {int}:
            return None
        topic_device = ids.get("device_id")
        devices: Sequence[object]
        if topic_device:
            devices = [topic_device] * count
        else:
            devices = columns.get("device_id") or ()
            if set(map(type, devices)) != {str} or "" in devices:
                return None
        typed = _typed_columns([columns[metric] for metric in metrics], count)
        if typed is None:
            return None
        values, texts = typed
        quality = columns.get("quality") or [0] * count
        width = len(metrics)
        out = ReadingColumns()
        chain = itertools.chain.from_iterable

        def per_reading(column: Sequence[object]) -> list[object]:
            # An item's value once for each of its metrics, item after item.
            return list(column) if width == 1 else list(chain(zip(*([column] * width), strict=True)))

        out.value = list(chain(zip(*values, strict=True))) if width > 1 else list(values[0])
        out.text = list(chain(zip(*texts, strict=True))) if width > 1 else list(texts[0])  # type: ignore[arg-type]
        out.metric = list(metrics) * count
        units = self.units
        out.unit = [units.get(m) for m in metrics] * count if units else [None] * (width * count)
        out.ts = per_reading(ts)  # type: ignore[assignment]
        out.device_id = per_reading(devices)  # type: ignore[assignment]
        out.quality = per_reading(quality)
        return out

    def decode(
        self, payload: bytes, ids: dict[str, str], source: str, site: str, ingest_ms: int
    ) -> list[Row]:
        """The same as rows (simple callers, tests)."""
        return self.decode_columns(payload, ids).as_rows(source, site, ingest_ms)
