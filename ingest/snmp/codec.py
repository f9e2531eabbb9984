"""SNMP values (SMIv2 types, RFC 2578 / RFC 3416) to ``readings`` columns, and
notifications (SNMPv2-MIB, IF-MIB, UPS-MIB traps) to ``device_events`` kinds.
Pure: no I/O; it knows pysnmp's value classes only by their ASN.1 tags."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyasn1.type import univ
from pysnmp.proto import rfc1902, rfc1905

from citylake.schemas import EventKind, Quality

Row = dict[str, object]

# The varbind exceptions of RFC 3416 4.2.1: the agent answered, but has no value.
_EXCEPTIONS = {
    rfc1905.NoSuchObject.tagSet: "noSuchObject",
    rfc1905.NoSuchInstance.tagSet: "noSuchInstance",
    rfc1905.EndOfMibView.tagSet: "endOfMibView",
}
_INTEGERS = (
    rfc1902.Integer32.tagSet,
    rfc1902.Counter32.tagSet,
    rfc1902.Gauge32.tagSet,  # = Unsigned32
    rfc1902.Counter64.tagSet,
)


class SnmpValueError(ValueError):
    """A value that cannot become a reading; the message is ``rejected.reason``."""


@dataclass(frozen=True)
class Decoded:
    """The ``value``/``text`` columns of one varbind, or the exception it carried."""

    number: float | None
    text: str | None
    exception: str | None = None


def exception_of(value: object) -> str | None:
    """``noSuchObject``, ``noSuchInstance``, ``endOfMibView``, or ``None``."""
    tag = getattr(value, "tagSet", None)
    return _EXCEPTIONS.get(tag) if tag is not None else None


def octets_text(octets: bytes) -> str:
    """A DisplayString as text; binary octets (MAC addresses, BITS) as hex."""
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + octets.hex()
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text.rstrip("\x00")):
        return "0x" + octets.hex()
    return text.rstrip("\x00")


def decode(value: object, value_type: str = "auto", scale: float = 1.0, offset: float = 0.0) -> Decoded:
    """One varbind value. Integers, counters, gauges and TimeTicks (in seconds:
    RFC 2578 counts hundredths) are numbers scaled as configured; OCTET
    STRING, IpAddress and OBJECT IDENTIFIER are text, or a number when
    ``value_type`` is ``number``. Opaque and unknown types raise."""
    exception = exception_of(value)
    if exception is not None:
        return Decoded(None, None, exception)
    if getattr(value, "tagSet", None) == univ.Null.tagSet:
        return Decoded(None, None, "null")
    number, text = _raw_value(value)
    if value_type == "text":
        return Decoded(None, text if text is not None else _plain(number))
    if text is not None:
        if value_type != "number":
            return Decoded(None, text)
        try:
            number = float(text.strip())
        except ValueError:
            raise SnmpValueError(f"value {text[:64]!r} is not a number (value_type: number)") from None
    assert number is not None
    if not math.isfinite(number):
        raise SnmpValueError(f"value {number} is not a finite number")
    return Decoded(number * scale + offset, None)


def _raw_value(value: object) -> tuple[float | None, str | None]:
    """(number, text) of a value by its ASN.1 tag, before scaling."""
    tag = getattr(value, "tagSet", None)
    if tag in _INTEGERS or tag == univ.Integer.tagSet:
        return float(int(value)), None  # type: ignore[call-overload]
    if tag == rfc1902.TimeTicks.tagSet:
        return int(value) / 100.0, None  # type: ignore[call-overload]
    if tag == rfc1902.IpAddress.tagSet:
        return None, ".".join(str(b) for b in value.asOctets())  # type: ignore[attr-defined]
    if tag == univ.ObjectIdentifier.tagSet:
        return None, str(value)
    if tag in (rfc1902.OctetString.tagSet, rfc1902.Bits.tagSet):
        return None, octets_text(bytes(value.asOctets()))  # type: ignore[attr-defined]
    raise SnmpValueError(f"unsupported SNMP type {type(value).__name__}")


def _plain(number: float | None) -> str | None:
    if number is None:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def reading(device_id: str, metric: str, unit: str | None, decoded: Decoded | None, ts_ms: int) -> Row:
    """One ``readings`` row without source, site and ingest time; a varbind
    exception (or ``None``: no answer) is a bad row without a value."""
    bad = decoded is None or decoded.exception is not None
    return {
        "device_id": device_id,
        "ts": ts_ms,
        "metric": metric,
        "value": None if decoded is None else decoded.number,
        "text": None if decoded is None else decoded.text,
        "unit": unit,
        "quality": int(Quality.BAD if bad else Quality.GOOD),
    }


def column_index(column: str, oid: str) -> str | None:
    """The row index of ``oid`` under table column ``column`` ("2" of
    1.3.6.1.2.1.2.2.1.8.2 under ...1.8), or ``None`` if it is outside."""
    prefix = column + "."
    return oid[len(prefix) :] if oid.startswith(prefix) and len(oid) > len(prefix) else None


# -- notifications -------------------------------------------------------------

SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"  # snmpTrapOID.0, the second varbind of every v2 trap
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"  # sysUpTime.0, the first
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"  # IF-MIB ifIndex column

# What a trap tells the registry (SNMPv2-MIB snmpTraps, IF-MIB, UPS-MIB RFC 1628 upsTraps).
TRAPS: dict[str, tuple[str, EventKind]] = {
    "1.3.6.1.6.3.1.1.5.1": ("coldStart", EventKind.ONLINE),
    "1.3.6.1.6.3.1.1.5.2": ("warmStart", EventKind.ONLINE),
    "1.3.6.1.6.3.1.1.5.3": ("linkDown", EventKind.ALARM),
    "1.3.6.1.6.3.1.1.5.4": ("linkUp", EventKind.STATUS),
    "1.3.6.1.6.3.1.1.5.5": ("authenticationFailure", EventKind.ALARM),
    "1.3.6.1.2.1.33.2.1": ("upsTrapOnBattery", EventKind.ALARM),
    "1.3.6.1.2.1.33.2.2": ("upsTrapTestCompleted", EventKind.STATUS),
    "1.3.6.1.2.1.33.2.3": ("upsTrapAlarmEntryAdded", EventKind.ALARM),
    "1.3.6.1.2.1.33.2.4": ("upsTrapAlarmEntryRemoved", EventKind.STATUS),
}


@dataclass(frozen=True)
class Notification:
    """A decoded SNMPv2 trap or inform: what ``device_events`` records."""

    trap_oid: str
    trap: str
    kind: EventKind
    uptime_s: float | None
    variables: dict[str, str | float | None]


class NotificationError(ValueError):
    """A notification without the varbinds RFC 3416 4.2.6 requires."""


def notification(varbinds: list[tuple[str, object]], max_variables: int) -> Notification:
    """``varbinds`` (oid, value) of an SNMPv2-Trap-PDU: sysUpTime.0, snmpTrapOID.0,
    then the trap's objects (at most ``max_variables`` kept, by OID)."""
    if len(varbinds) < 2 or varbinds[1][0] != SNMP_TRAP_OID:
        raise NotificationError("notification without snmpTrapOID.0 as its second varbind (RFC 3416 4.2.6)")
    uptime_value = varbinds[0][1] if varbinds[0][0] == SYS_UPTIME else None
    uptime = None
    if uptime_value is not None and getattr(uptime_value, "tagSet", None) == rfc1902.TimeTicks.tagSet:
        uptime = int(uptime_value) / 100.0  # type: ignore[call-overload]
    trap_oid = str(varbinds[1][1])
    name, kind = TRAPS.get(trap_oid, (trap_oid, EventKind.STATUS))
    variables: dict[str, str | float | None] = {}
    for oid, value in varbinds[2:]:
        if len(variables) >= max_variables:
            break
        try:
            decoded = decode(value)
        except SnmpValueError:
            variables[oid] = None
            continue
        variables[oid] = decoded.number if decoded.number is not None else decoded.text
    return Notification(trap_oid, name, kind, uptime, variables)


def authoritative_engine_id(whole_message: bytes) -> str | None:
    """The sender's msgAuthoritativeEngineID (hex) of an SNMPv3 message: for a
    trap, the engine of the agent that sent it (RFC 3414 3.1.1), which is how
    a v3 trap's device is recognised. ``None`` if it is not a v3 message."""
    from pyasn1.codec.ber import decoder
    from pyasn1.error import PyAsn1Error
    from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
    from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters

    try:
        message, _ = decoder.decode(whole_message, asn1Spec=SNMPv3Message())
        params, _ = decoder.decode(bytes(message["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
    except PyAsn1Error:
        return None
    engine_id = bytes(params["msgAuthoritativeEngineId"])
    return engine_id.hex() if engine_id else None
