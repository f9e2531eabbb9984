"""Wired M-Bus (EN 13757-2/-3) requests and replies ⇄ values.

Our part is the link layer (EN 13757-2): the REQ_UD2 short frame
``10 C A CS 16`` (C ``5B``/``7B``: the frame count bit toggles on every new
request), cutting replies out of the byte stream (single ``E5``, short
``10 .. 16``, long ``68 L L 68 C A CI ... CS 16``), and the checks that a
reply answers our request. The application layer (EN 13757-3: fixed header,
DIF/DIFE/VIF/VIFE records, units and scaling) is decoded by ``pymeterbus``
(``meterbus``); this module maps its records onto readings: VIF type →
metric and unit, function/storage/tariff/subunit → a metric suffix, the
status byte → quality, the header → device attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import meterbus
from meterbus.exceptions import MBusError, MBusFrameCRCError, MbusFrameLengthError

from citylake.ingest.meter_link import FrameError
from citylake.schemas import Quality

ACK = 0xE5
SHORT_START, LONG_START, END = 0x10, 0x68, 0x16
REQ_UD2, REQ_UD2_FCB, SND_NKE = 0x5B, 0x7B, 0x40
RSP_UD_MASK, RSP_UD = 0xCF, 0x08  # RSP_UD with the ACD and DFC bits masked out
VARIABLE_DATA_CI = frozenset({0x72, 0x76})
MAX_PRIMARY_ADDRESS = 250  # 251..255 are reserved or broadcast

# EN 13757-3 medium codes (the header's 8th byte).
MEDIA = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat", 0x05: "steam",
    0x06: "warm_water", 0x07: "water", 0x08: "heat_cost_allocator", 0x09: "compressed_air",
    0x0A: "cooling_outlet", 0x0B: "cooling_inlet", 0x0C: "heat_inlet", 0x0D: "heat_cooling",
    0x0E: "bus_system", 0x0F: "unknown", 0x15: "hot_water", 0x16: "cold_water", 0x17: "dual_water",
    0x18: "pressure", 0x19: "ad_converter",
}  # fmt: skip
# pymeterbus MeasureUnit name -> readings.unit (UCUM-like, as the other adapters write them).
UNITS: dict[str, str | None] = {
    "KWH": "kWh", "WH": "Wh", "J": "J", "M3": "m3", "L": "L", "KG": "kg", "W": "W", "J_H": "J/h",
    "M3_H": "m3/h", "M3_MIN": "m3/min", "M3_S": "m3/s", "KG_H": "kg/h", "C": "Cel", "K": "K",
    "BAR": "bar", "SECONDS": "s", "MINUTES": "min", "HOURS": "h", "DAYS": "d", "V": "V", "A": "A",
    "PERCENT": "%", "DBM": "dBm", "HCA": None, "NONE": None, "CURRENCY": None, "BAUD": "Bd",
    "BIT_TIMES": None, "DATE": None, "TIME": None, "DATE_TIME": None, "DATE_TIME_S": None,
}  # fmt: skip
# VIF types whose names carry their unit: the metric names the quantity only.
METRIC_RENAMES = {
    "energy_wh": "energy", "energy_j": "energy", "power_w": "power", "power_j_h": "power",
    "mass_flow": "mass_flow", "volume_flow_ext": "volume_flow", "volume_flow_ext_s": "volume_flow",
}  # fmt: skip
FUNCTION_SUFFIX = {"MAXIMUM_VALUE": "_max", "MINIMUM_VALUE": "_min", "ERROR_STATE_VALUE": "_error"}
MAX_RECORDS = 64


class DecodeError(ValueError):
    """A reply that is complete but wrong; ``str()`` says what."""


def short_frame(control: int, address: int) -> bytes:
    if not 0 <= address <= 255:
        raise ValueError(f"M-Bus address {address}: expected 0..255")
    return bytes([SHORT_START, control, address, (control + address) & 0xFF, END])


def req_ud2(address: int, fcb: bool) -> bytes:
    """Ask meter ``address`` for its data; ``fcb`` alternates between new requests."""
    return short_frame(REQ_UD2_FCB if fcb else REQ_UD2, address)


def find_frame(buffer: bytes) -> tuple[int, int] | None:
    """The span of the first complete frame (a ``meter_link.FrameFinder``)."""
    if not buffer:
        return None
    first = buffer[0]
    if first == ACK:
        return (0, 1)
    if first == SHORT_START:
        return (0, 5) if len(buffer) >= 5 else None
    if first != LONG_START:
        raise FrameError(f"start byte {first:02X} is none of E5, 10, 68")
    if len(buffer) < 4:
        return None
    if buffer[1] != buffer[2] or buffer[3] != LONG_START:
        raise FrameError(f"long frame header {buffer[:4].hex()}: the two L fields differ or no second 68")
    if buffer[1] < 3:
        raise FrameError(f"L field {buffer[1]} below 3 (C, A and CI)")
    end = buffer[1] + 6
    return (0, end) if len(buffer) >= end else None


@dataclass(frozen=True)
class Record:
    metric: str
    value: float | None
    text: str | None
    unit: str | None
    error_state: bool


@dataclass(frozen=True)
class Readout:
    """One RSP_UD: who sent it and what it holds."""

    identification: str  # the 8-digit identification number (the meter's secondary id)
    manufacturer: str  # the three-letter FLAG id, e.g. "PAD"
    version: int
    medium: str
    access_number: int
    status: int
    secondary_address: str  # identification, manufacturer code, version and medium, as M-Bus tools print it
    records: tuple[Record, ...]

    @property
    def quality(self) -> Quality:
        return status_quality(self.status)

    def attributes(self) -> dict[str, object]:
        return {
            "identification": self.identification,
            "manufacturer": self.manufacturer,
            "version": self.version,
            "medium": self.medium,
            "secondary_address": self.secondary_address,
        }


def status_quality(status: int) -> Quality:
    """EN 13757-3 status byte: bits 0-1 application (01 busy, 10 error, 11 abnormal),
    bit 2 power low, bit 3 permanent error, bit 4 temporary error. A permanent
    error makes the values bad; the others, uncertain."""
    if status & 0x08:
        return Quality.BAD
    if status & 0x17:
        return Quality.UNCERTAIN
    return Quality.GOOD


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _record(raw: Any, seen: dict[str, int]) -> Record:
    info = raw.interpreted
    vif_type = str(info["type"]).removeprefix("VIFUnit.").lower()
    metric = METRIC_RENAMES.get(vif_type, vif_type)
    function = str(info.get("function", "")).removeprefix("FunctionType.")
    metric += FUNCTION_SUFFIX.get(function, "")
    for key, tag in (("storage_number", "s"), ("tariff", "t"), ("device", "u")):
        if int(info.get(key) or 0):
            metric += f"_{tag}{int(info[key])}"
    seen[metric] = seen.get(metric, 0) + 1
    if seen[metric] > 1:  # the same quantity twice in one telegram: keep both
        metric += f"_{seen[metric]}"
    unit_name = str(info.get("unit", "")).removeprefix("MeasureUnit.")
    unit = UNITS.get(unit_name)
    value = info.get("value")
    error_state = function == "ERROR_STATE_VALUE"
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return Record(metric, None, _text(value), unit, error_state)
    return Record(metric, float(value), None, unit, error_state)


# What pymeterbus raises for malformed telegrams: its own errors, and Python's
# for some truncated or inconsistent records (found by the corruption test in
# tests/unit/test_mbus_codec.py). Each is a bad frame, never a crash.
DECODER_FAILURES = (MBusError, ValueError, IndexError, KeyError, TypeError, AttributeError, ArithmeticError)


def decode_rsp_ud(frame: bytes, address: int) -> Readout:
    """The reply to ``req_ud2(address)``: a long frame with variable data."""
    if frame[:1] != bytes([LONG_START]):
        raise DecodeError(f"reply is not a long frame (starts {frame[:1].hex() or 'empty'})")
    try:
        return _decode(frame, address)
    except MBusFrameCRCError as exc:
        raise DecodeError(f"checksum {exc.expected:02X}, computed {exc.computed:02X}") from None
    except MbusFrameLengthError as exc:
        raise DecodeError(f"length {exc.length} does not match the L field") from None
    except DecodeError:
        raise
    except DECODER_FAILURES as exc:
        detail = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise DecodeError(f"pymeterbus cannot decode it: {detail}") from None


def _decode(frame: bytes, address: int) -> Readout:
    telegram = meterbus.load(frame)
    header = telegram.header
    c_field, a_field = header.cField.parts[0], header.aField.parts[0]
    if c_field & RSP_UD_MASK != RSP_UD:
        raise DecodeError(f"C field {c_field:02X} is not RSP_UD (08)")
    if a_field != address:
        raise DecodeError(f"reply from primary address {a_field}, asked {address}")
    body = telegram.body.bodyHeader
    ci = body.ci_field.parts[0]
    if ci not in VARIABLE_DATA_CI:
        raise DecodeError(f"CI field {ci:02X} is not variable data (72 or 76)")
    records = telegram.records
    if len(records) > MAX_RECORDS:
        raise DecodeError(f"{len(records)} records; at most {MAX_RECORDS}")
    seen: dict[str, int] = {}
    decoded = tuple(_record(r, seen) for r in records)
    info = body.interpreted
    medium = int(str(info["medium"]), 16)
    return Readout(
        identification=_identification(body.id_nr),
        manufacturer=str(info["manufacturer"]),
        version=int(str(info["version"]), 16),
        medium=MEDIA.get(medium, f"reserved_{medium:02x}"),
        access_number=int(info["access_no"]),
        status=int(str(info["status"]), 16),
        secondary_address=str(telegram.secondary_address),
        records=decoded,
    )


def _identification(id_nr: list[int]) -> str:
    """pymeterbus gives the identification's bytes most significant first: BCD digits."""
    return "".join(f"{b:02x}" for b in id_nr)
