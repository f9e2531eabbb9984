"""IEC 60870-5-104 measurands, quality descriptors and APDU framing to
``readings`` columns. Pure: no I/O and no c104 import, so the config model
validates without the protocol stack and every rule here is unit-tested on
the octets IEC 60870-5-101/104 define.

c104 (lib60870 underneath) does the protocol; the adapter hands this module
the type name, the plain value and the quality descriptor's octet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Row = dict[str, object]

# Monitoring types this source reads (IEC 60870-5-101 7.2.1.1, type ids):
# single point, double point, normalized, scaled and short float measurands,
# without and with CP56Time2a time tag.
TYPE_IDS: dict[str, int] = {
    "M_SP_NA_1": 1,
    "M_DP_NA_1": 3,
    "M_ME_NA_1": 9,
    "M_ME_NB_1": 11,
    "M_ME_NC_1": 13,
    "M_SP_TB_1": 30,
    "M_DP_TB_1": 31,
    "M_ME_TD_1": 34,
    "M_ME_TE_1": 35,
    "M_ME_TF_1": 36,
}
TYPE_NAMES = {number: name for name, number in TYPE_IDS.items()}
SINGLE_POINT = frozenset({"M_SP_NA_1", "M_SP_TB_1"})
DOUBLE_POINT = frozenset({"M_DP_NA_1", "M_DP_TB_1"})
NORMALIZED = frozenset({"M_ME_NA_1", "M_ME_TD_1"})
SCALED = frozenset({"M_ME_NB_1", "M_ME_TE_1"})
SHORT_FLOAT = frozenset({"M_ME_NC_1", "M_ME_TF_1"})
MAX_IOA = 0xFFFFFF  # three octets in 104

# Quality descriptor bits (IEC 60870-5-101 7.2.6.3): OV overflow (measurands),
# EI elapsed time invalid (protection events), BL blocked, SB substituted, NT
# not topical, IV invalid.
QUALITY_BITS = {"OV": 0x01, "EI": 0x08, "BL": 0x10, "SB": 0x20, "NT": 0x40, "IV": 0x80}

# Double point information (IEC 60870-5-101 7.2.6.2): 0 intermediate, 1 off,
# 2 on, 3 indeterminate.
DPI_NAMES = ("intermediate", "off", "on", "indeterminate")

# APCI (IEC 60870-5-104 5.1): start 0x68, length of the rest (4..253).
START = 0x68
MAX_APDU_LENGTH = 253


class UnsupportedValue(ValueError):
    """A value that cannot become a reading; the message is the ``rejected.reason``."""


def quality_flags(descriptor: int) -> list[str]:
    """Names of the quality bits set in one descriptor octet."""
    return [name for name, bit in QUALITY_BITS.items() if descriptor & bit]


def quality_of(descriptor: int) -> int:
    """``readings.quality``: IV (the RTU says the value is wrong) is bad; NT
    (not updated), SB (set by an operator), BL (frozen by blocking) and OV
    (beyond the measurand's range) leave a value that is uncertain."""
    if descriptor & QUALITY_BITS["IV"]:
        return 2
    if descriptor & (QUALITY_BITS["NT"] | QUALITY_BITS["SB"] | QUALITY_BITS["BL"] | QUALITY_BITS["OV"]):
        return 1
    return 0


def measurand(type_name: str, value: object, scale: float = 1.0, offset: float = 0.0) -> float:
    """``readings.value`` of one information object: engineering value of a
    scaled or normalized measurand (``raw * scale + offset``), a short float as
    sent, a single point 0/1, a double point's DPI (0..3)."""
    if type_name in SINGLE_POINT:
        if not isinstance(value, bool | int) or int(value) not in (0, 1):
            raise UnsupportedValue(f"{type_name} value {value!r} is not a single point (0/1)")
        return float(int(value))
    if type_name in DOUBLE_POINT:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
            raise UnsupportedValue(f"{type_name} value {value!r} is not a double point state 0..3")
        return float(value)
    if type_name in SCALED:
        if isinstance(value, bool) or not isinstance(value, int) or not -32768 <= value <= 32767:
            raise UnsupportedValue(f"{type_name} value {value!r} is not a 16-bit scaled value")
        return value * scale + offset
    if type_name in NORMALIZED or type_name in SHORT_FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnsupportedValue(f"{type_name} value {value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise UnsupportedValue(f"{type_name} value {number} is not a finite number")
        if type_name in NORMALIZED:
            if not -1.0 <= number < 1.0:
                raise UnsupportedValue(f"{type_name} value {number} is outside the normalized range [-1, 1)")
            return number * scale + offset
        return float32_value(number)
    raise UnsupportedValue(f"type {type_name!r} is not a monitoring type this source reads")


def float32_value(number: float) -> float:
    """A 32-bit float as the shortest decimal that reads back as the same
    float32: 50.01 as sent, not its float64 widening 50.0099983215332."""
    return float(str(np.float32(number)))


@dataclass(frozen=True)
class Apdu:
    """What the APCI and the ASDU header of one frame say."""

    format: str  # "I", "S" or "U"
    type_id: int | None = None
    count: int | None = None  # number of information objects (VSQ)
    cot: int | None = None
    negative: bool = False
    test: bool = False
    common_address: int | None = None
    first_ioa: int | None = None


def parse_apdu(frame: bytes) -> Apdu:
    """One APDU as received: ``UnsupportedValue`` naming what is wrong with it."""
    if len(frame) < 6:
        raise UnsupportedValue(f"truncated APDU: {len(frame)} octets, need at least 6")
    if frame[0] != START:
        raise UnsupportedValue(f"APDU start {frame[0]:#04x} is not 0x68")
    length = frame[1]
    if length > MAX_APDU_LENGTH:
        raise UnsupportedValue(f"oversized APDU: length {length}, at most {MAX_APDU_LENGTH}")
    if length != len(frame) - 2:
        raise UnsupportedValue(f"APDU length {length} does not match the frame's {len(frame) - 2} octets")
    control = frame[2]
    if control & 0x01 == 0:
        return _parse_asdu(frame)
    if control & 0x03 == 0x01:
        return Apdu("S")
    if length != 4:
        raise UnsupportedValue(f"U-format APDU of length {length}; U frames are 4 octets")
    if control not in (0x07, 0x0B, 0x13, 0x23, 0x43, 0x83):
        raise UnsupportedValue(f"unknown U-format function {control:#04x}")
    return Apdu("U")


def _parse_asdu(frame: bytes) -> Apdu:
    asdu = frame[6:]
    if len(asdu) < 9:  # type, VSQ, COT x2, CA x2, IOA x3
        raise UnsupportedValue(f"truncated ASDU: {len(asdu)} octets, need at least 9")
    return Apdu(
        "I",
        type_id=asdu[0],
        count=asdu[1] & 0x7F,
        cot=asdu[2] & 0x3F,
        negative=bool(asdu[2] & 0x40),
        test=bool(asdu[2] & 0x80),
        common_address=int.from_bytes(asdu[4:6], "little"),
        first_ioa=int.from_bytes(asdu[6:9], "little"),
    )


def reading(
    device_id: str,
    metric: str,
    type_name: str,
    value: object,
    descriptor: int,
    unit: str | None,
    ts_ms: int,
    scale: float = 1.0,
    offset: float = 0.0,
) -> Row:
    """One ``readings`` row without the source, site and ingest time."""
    return {
        "device_id": device_id,
        "metric": metric,
        "ts": ts_ms,
        "value": measurand(type_name, value, scale, offset),
        "text": None,
        "unit": unit,
        "quality": quality_of(descriptor),
    }
