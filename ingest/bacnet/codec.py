"""BACnet values, units, status flags and BACnet/IP frames to ``readings``
columns. Pure: no I/O and no bacpypes3 import, so the config model validates
without the protocol stack and every rule here is unit-tested on plain values.

BACnet names things with the hyphenated identifiers of ASHRAE 135's ASN.1
(``analog-input``, ``degrees-celsius``, ``out-of-service``); bacpypes3 prints
them the same way, so the adapter hands this module ``str()`` of its types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

Row = dict[str, object]

# The object types whose present-value is a reading, and how it reads:
# analog: REAL; binary: BACnetBinaryPV (inactive 0, active 1); multi-state:
# Unsigned state number 1..N (ASHRAE 135 clauses 12.2-12.20).
ANALOG = frozenset({"analog-input", "analog-output", "analog-value"})
BINARY = frozenset({"binary-input", "binary-output", "binary-value"})
MULTISTATE = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})
OBJECT_TYPES = ANALOG | BINARY | MULTISTATE
MAX_INSTANCE = 4_194_302  # 22 bits; 4194303 means "any instance" in Who-Is and is no object
_OBJECT_ID = re.compile(r"^([a-z-]+)[,:](\d+)$")

# BACnetEngineeringUnits identifiers to the unit strings the other adapters
# land (SI symbols, as MQTT payloads and Modbus profiles spell them). A unit
# not listed keeps its BACnet identifier: longer, but nothing is lost.
UNIT_SYMBOLS: dict[str, str] = {
    "degrees-celsius": "degC",
    "degrees-fahrenheit": "degF",
    "degrees-kelvin": "K",
    "percent": "%",
    "percent-relative-humidity": "%RH",
    "parts-per-million": "ppm",
    "watts": "W",
    "kilowatts": "kW",
    "megawatts": "MW",
    "watt-hours": "Wh",
    "kilowatt-hours": "kWh",
    "megawatt-hours": "MWh",
    "volts": "V",
    "kilovolts": "kV",
    "millivolts": "mV",
    "amperes": "A",
    "milliamperes": "mA",
    "volt-amperes": "VA",
    "kilovolt-amperes": "kVA",
    "kilovolt-amperes-reactive": "kvar",
    "power-factor": "PF",
    "hertz": "Hz",
    "pascals": "Pa",
    "kilopascals": "kPa",
    "bars": "bar",
    "cubic-meters": "m3",
    "cubic-meters-per-hour": "m3/h",
    "cubic-meters-per-second": "m3/s",
    "liters": "L",
    "liters-per-second": "L/s",
    "liters-per-minute": "L/min",
    "meters-per-second": "m/s",
    "luxes": "lx",
    "seconds": "s",
    "minutes": "min",
    "hours": "h",
    "revolutions-per-minute": "rpm",
    "no-units": "",
}

# BACnetStatusFlags bit order (ASHRAE 135 clause 21): in-alarm, fault,
# overridden, out-of-service.
STATUS_FLAGS = ("in-alarm", "fault", "overridden", "out-of-service")

# BACnet/IP (Annex J): BVLC type 0x81, a function, a 16-bit length that counts
# the whole datagram. The largest NPDU on BACnet/IP is 1497 octets (Annex J.2).
BVLC_TYPE = 0x81
BVLC_FUNCTIONS = {
    0x00: "BVLC-Result",
    0x01: "Write-Broadcast-Distribution-Table",
    0x02: "Read-Broadcast-Distribution-Table",
    0x03: "Read-Broadcast-Distribution-Table-Ack",
    0x04: "Forwarded-NPDU",
    0x05: "Register-Foreign-Device",
    0x06: "Read-Foreign-Device-Table",
    0x07: "Read-Foreign-Device-Table-Ack",
    0x08: "Delete-Foreign-Device-Table-Entry",
    0x09: "Distribute-Broadcast-To-Network",
    0x0A: "Original-Unicast-NPDU",
    0x0B: "Original-Broadcast-NPDU",
    0x0C: "Secure-BVLL",
}
MAX_DATAGRAM = 1497 + 4 + 6  # NPDU, BVLC header, and the B/IP address a Forwarded-NPDU carries


class UnsupportedValue(ValueError):
    """A value that cannot become a reading; the message is the ``rejected.reason``."""


def parse_object_id(text: str) -> tuple[str, int]:
    """``analog-input,1`` (or ``analog-input:1``) as ``("analog-input", 1)``;
    ``ValueError`` naming the problem for anything this source cannot read."""
    match = _OBJECT_ID.match(text.strip())
    if match is None:
        raise ValueError(f"object {text!r}: expected <object-type>,<instance>, e.g. analog-input,1")
    object_type, instance = match.group(1), int(match.group(2))
    if object_type not in OBJECT_TYPES:
        known = ", ".join(sorted(OBJECT_TYPES))
        raise ValueError(f"object {text!r}: type {object_type!r} has no readable present-value; use {known}")
    if instance > MAX_INSTANCE:
        raise ValueError(f"object {text!r}: instance {instance} is above {MAX_INSTANCE}")
    return object_type, instance


def unit_symbol(engineering_units: str | None) -> str | None:
    """``readings.unit`` from a BACnetEngineeringUnits identifier (None: none read)."""
    if engineering_units is None:
        return None
    symbol = UNIT_SYMBOLS.get(engineering_units, engineering_units)
    return symbol or None


def flags_set(status_flags: Sequence[int]) -> list[str]:
    """The names of the status flags that are set; ``UnsupportedValue`` for a
    bit string that is not the four BACnetStatusFlags bits."""
    if len(status_flags) != len(STATUS_FLAGS) or any(bit not in (0, 1) for bit in status_flags):
        raise UnsupportedValue(f"status-flags {list(status_flags)!r} is not 4 bits")
    return [name for name, bit in zip(STATUS_FLAGS, status_flags, strict=True) if bit]


def quality_of(flags: Sequence[str], reliability: str | None = None) -> int:
    """``readings.quality`` (0 good, 1 uncertain, 2 bad) from status flags and reliability.

    fault (or a reliability other than no-fault-detected) means the device
    itself says the value is not to be trusted: bad. out-of-service means the
    value is decoupled from the physical input (an operator or a test wrote
    it) and overridden means a local hand switch holds it: both uncertain.
    in-alarm says the value is outside its limits, which is a valid
    measurement: good (the adapter lands the alarm as a device event)."""
    if "fault" in flags or (reliability is not None and reliability != "no-fault-detected"):
        return 2
    if "out-of-service" in flags or "overridden" in flags:
        return 1
    return 0


def present_value(object_type: str, value: object) -> float:
    """``readings.value`` of one present-value, checked against its object type."""
    if object_type in ANALOG:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnsupportedValue(f"{object_type} present-value {value!r} is not a REAL")
        number = float(value)
        if not math.isfinite(number):
            raise UnsupportedValue(f"{object_type} present-value {number} is not a finite number")
        # A BACnet REAL is 32 bits: land 19.13 as sent, not its widening 19.1299991607666.
        return float(str(np.float32(number)))
    if object_type in BINARY:
        # bacpypes3's BinaryPV is an int subclass whose str() is its identifier.
        name = str(value)
        if name in ("inactive", "active"):
            return 1.0 if name == "active" else 0.0
        raise UnsupportedValue(f"{object_type} present-value {value!r} is neither inactive nor active")
    if object_type in MULTISTATE:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UnsupportedValue(f"{object_type} present-value {value!r} is not a state number >= 1")
        return float(value)
    raise UnsupportedValue(f"object type {object_type!r} has no readable present-value")


def reading(
    device_id: str,
    metric: str,
    object_type: str,
    value: object,
    unit: str | None,
    flags: Sequence[str],
    reliability: str | None,
    ts_ms: int,
) -> Row:
    """One ``readings`` row without the source, site and ingest time."""
    return {
        "device_id": device_id,
        "metric": metric,
        "ts": ts_ms,
        "value": present_value(object_type, value),
        "text": None,
        "unit": unit,
        "quality": quality_of(flags, reliability),
    }


def bvll_problem(datagram: bytes) -> str | None:
    """Why a UDP datagram is not a BACnet/IP frame worth decoding, or None.

    Checked before bacpypes3 sees the datagram so that every malformed frame
    is counted as a reject with a reason (the library would drop it with a
    log line only)."""
    if len(datagram) > MAX_DATAGRAM:
        return f"oversized BACnet/IP datagram: {len(datagram)} octets, at most {MAX_DATAGRAM}"
    if len(datagram) < 4:
        return f"truncated BVLC header: {len(datagram)} octets, need 4"
    if datagram[0] != BVLC_TYPE:
        return f"BVLC type {datagram[0]:#04x} is not BACnet/IP (0x81)"
    if datagram[1] not in BVLC_FUNCTIONS:
        return f"unknown BVLC function {datagram[1]:#04x}"
    declared = int.from_bytes(datagram[2:4], "big")
    if declared != len(datagram):
        return f"BVLC length {declared} does not match the datagram's {len(datagram)} octets"
    return None
