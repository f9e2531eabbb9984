"""CoAP payloads to ``readings`` columns, by Content-Format (RFC 7252 12.3):
SenML JSON (110) and SenML CBOR (112) per RFC 8428, JSON (50) and CBOR (60)
in the shapes the MQTT and HTTP push adapters take, and text/plain (0) as one
number. Pure: no I/O."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Callable, Mapping

import cbor2
import orjson

from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError, ReadingColumns

TEXT_PLAIN, JSON, CBOR, SENML_JSON, SENML_CBOR = 0, 50, 60, 110, 112
FORMAT_NAMES = {
    TEXT_PLAIN: "text/plain",
    JSON: "application/json",
    CBOR: "application/cbor",
    SENML_JSON: "application/senml+json",
    SENML_CBOR: "application/senml+cbor",
}
# RFC 8428 Table 4: the integer labels of SenML CBOR.
_CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
                0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}  # fmt: skip
# A SenML time below 2**28 s is relative to now (RFC 8428 4.5.3).
_RELATIVE_LIMIT = 2**28


def _now_s() -> float:
    return time.time()


def cbor_loads(payload: bytes) -> object:
    """One CBOR data item and nothing after it (cbor2.loads ignores trailing
    bytes, which would let a truncated or spliced payload through)."""
    stream = io.BytesIO(payload)
    item = cbor2.CBORDecoder(stream).decode()
    if stream.tell() != len(payload):
        raise ValueError(f"{len(payload) - stream.tell()} bytes after the CBOR item")
    return item


class SenmlDecoder:
    """SenML packs (RFC 8428) to readings: base values resolved (4.6), the
    record's name as the metric, its unit, and its time (absolute, or
    relative to ``now``). The device is the configured or path one, else
    the base name without its trailing separator."""

    def __init__(self, max_records: int, now: Callable[[], float] = _now_s) -> None:
        self.max_records = max_records
        self.now = now

    def decode_json(self, payload: bytes, device_id: str | None) -> ReadingColumns:
        try:
            pack = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"invalid SenML JSON: {exc}") from None
        return self.decode_pack(pack, device_id)

    def decode_cbor(self, payload: bytes, device_id: str | None) -> ReadingColumns:
        try:
            pack = cbor_loads(payload)
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise PayloadError(f"invalid SenML CBOR: {exc}") from None
        if not isinstance(pack, list):
            raise PayloadError("SenML CBOR: expected an array of records")
        records = []
        for index, record in enumerate(pack):
            if not isinstance(record, dict):
                raise PayloadError(f"SenML record {index}: expected a map, got {type(record).__name__}")
            named: dict[str, object] = {}
            for label, value in record.items():
                name = _CBOR_LABELS.get(label) if isinstance(label, int) else label
                if not isinstance(name, str):
                    raise PayloadError(f"SenML record {index}: unknown label {label!r}")
                named[name] = value
            records.append(named)
        return self.decode_pack(records, device_id)

    def decode_pack(self, pack: object, device_id: str | None) -> ReadingColumns:
        if not isinstance(pack, list) or not pack:
            raise PayloadError("SenML: expected a non-empty array of records")
        if len(pack) > self.max_records:
            raise PayloadError(f"SenML pack of {len(pack)} records exceeds max_records {self.max_records}")
        out = ReadingColumns()
        base_name, base_time, base_unit, base_value = "", 0.0, None, 0.0
        now = self.now()
        for index, record in enumerate(pack):
            if not isinstance(record, dict):
                raise PayloadError(f"SenML record {index}: expected an object, got {type(record).__name__}")
            where = f"SenML record {index}"
            if "bn" in record:
                base_name = _text(record["bn"], where, "bn")
            if "bt" in record:
                base_time = _number(record["bt"], where, "bt")
            if "bu" in record:
                base_unit = _text(record["bu"], where, "bu")
            if "bv" in record:
                base_value = _number(record["bv"], where, "bv")
            name = base_name + (_text(record["n"], where, "n") if "n" in record else "")
            metric = _text(record["n"], where, "n") if record.get("n") else name
            if not metric:
                raise PayloadError(f"{where}: no name (n or bn)")
            device = device_id or base_name.rstrip(":/.")
            if not device:
                raise PayloadError(f"{where}: no device id in the path and no base name (bn)")
            stamp = base_time + (_number(record["t"], where, "t") if "t" in record else 0.0)
            if stamp < _RELATIVE_LIMIT:
                stamp += now
            value, text = self._value(record, base_value, where)
            out.device_id.append(device)
            out.metric.append(metric)
            out.ts.append(round(stamp * 1000))
            out.value.append(value)
            out.text.append(text)
            unit = record.get("u", base_unit)
            out.unit.append(_text(unit, where, "u") if unit is not None else None)
            out.quality.append(0)
        return out

    @staticmethod
    def _value(
        record: Mapping[str, object], base_value: float, where: str
    ) -> tuple[float | None, str | None]:
        present = [key for key in ("v", "vs", "vb", "vd", "s") if key in record]
        if len(present) != 1:
            raise PayloadError(f"{where}: expected exactly one of v, vs, vb, vd, s; got {present or 'none'}")
        key = present[0]
        raw = record[key]
        if key in ("v", "s"):
            return base_value + _number(raw, where, key), None
        if key == "vb":
            if not isinstance(raw, bool):
                raise PayloadError(f"{where}: vb must be a boolean")
            return (1.0 if raw else 0.0), None
        if key == "vd":  # data: base64url in JSON (RFC 8428 4.3), bytes in CBOR
            if isinstance(raw, bytes):
                return None, base64.urlsafe_b64encode(raw).decode().rstrip("=")
            return None, _text(raw, where, "vd")
        return None, _text(raw, where, "vs")


def _number(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where}: {key} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise PayloadError(f"{where}: {key} is not finite")
    return number


def _text(value: object, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where}: {key} must be a string, got {type(value).__name__}")
    return value


class CoapPayloadCodec:
    """One decoder per Content-Format; ``decode`` raises ``PayloadError`` with
    the ``rejected.reason``."""

    def __init__(self, json_codec: JsonReadingsCodec, senml: SenmlDecoder, now_ms: Callable[[], int]) -> None:
        self.json = json_codec
        self.senml = senml
        self.now_ms = now_ms

    def decode(
        self, content_format: int | None, payload: bytes, device_id: str | None, metric: str | None
    ) -> ReadingColumns:
        ids = {"device_id": device_id} if device_id else {}
        if content_format == SENML_JSON:
            return self.senml.decode_json(payload, device_id)
        if content_format == SENML_CBOR:
            return self.senml.decode_cbor(payload, device_id)
        if content_format == JSON:
            return self.json.decode_columns(payload, ids)
        if content_format == CBOR:
            try:
                document = cbor_loads(payload)
                as_json = orjson.dumps(document)
            except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise PayloadError(f"invalid CBOR: {exc}") from None
            return self.json.decode_columns(as_json, ids)
        if content_format in (TEXT_PLAIN, None):
            return self._plain(payload, device_id, metric)
        raise PayloadError(f"unsupported Content-Format {content_format}")

    def _plain(self, payload: bytes, device_id: str | None, metric: str | None) -> ReadingColumns:
        if not device_id or not metric:
            raise PayloadError("text/plain needs the device_id and metric from the config")
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PayloadError("text/plain payload is not UTF-8") from None
        out = ReadingColumns()
        try:
            number: float | None = float(text)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):
            raise PayloadError(f"text/plain value {text[:40]!r} is not finite")
        out.device_id.append(device_id)
        out.metric.append(metric)
        out.ts.append(self.now_ms())
        out.value.append(number)
        out.text.append(None if number is not None else text[:1024])
        out.unit.append(None)
        out.quality.append(0)
        return out
