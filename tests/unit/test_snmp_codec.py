"""SNMP values and notifications to rows. The trap frame is built byte by byte
from the BER rules (X.690) for the PDU layout of RFC 3416 4.2.6 and decoded
by pysnmp's own message decoder, as the receiver does."""

from __future__ import annotations

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto import api, rfc1902, rfc1905

from citylake.ingest.snmp.codec import (
    NotificationError,
    SnmpValueError,
    authoritative_engine_id,
    column_index,
    decode,
    notification,
    octets_text,
    reading,
)


def tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 128  # short-form length is enough here
    return bytes([tag, len(body)]) + body


def oid(text: str) -> bytes:
    arcs = [int(a) for a in text.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        rest = arc
        chunk = [rest & 0x7F]
        rest >>= 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def varbind(name: str, value: bytes) -> bytes:
    return tlv(0x30, oid(name) + value)


# SNMPv2c Trap: version 1 (v2c), community "public", SNMPv2-Trap-PDU [7] with
# sysUpTime.0 = TimeTicks 4242, snmpTrapOID.0 = linkDown, ifIndex.2 = 2,
# ifDescr.2 = "eth0" (the varbinds IF-MIB's linkDown NOTIFICATION-TYPE names).
LINK_DOWN_V2C = tlv(
    0x30,
    tlv(0x02, b"\x01")
    + tlv(0x04, b"public")
    + tlv(
        0xA7,
        tlv(0x02, b"\x2a")  # request-id 42
        + tlv(0x02, b"\x00")
        + tlv(0x02, b"\x00")
        + tlv(
            0x30,
            varbind("1.3.6.1.2.1.1.3.0", tlv(0x43, b"\x10\x92"))
            + varbind("1.3.6.1.6.3.1.1.4.1.0", oid("1.3.6.1.6.3.1.1.5.3"))
            + varbind("1.3.6.1.2.1.2.2.1.1.2", tlv(0x02, b"\x02"))
            + varbind("1.3.6.1.2.1.2.2.1.2.2", tlv(0x04, b"eth0")),
        ),
    ),
)


def decoded_varbinds(frame: bytes) -> list[tuple[str, object]]:
    version = int(api.decodeMessageVersion(frame))
    module = api.PROTOCOL_MODULES[version]
    message, rest = decoder.decode(frame, asn1Spec=module.Message())
    assert rest == b""
    assert bytes(module.apiMessage.get_community(message)) == b"public"
    pdu = module.apiMessage.get_pdu(message)
    return [(str(name), value) for name, value in module.apiPDU.get_varbinds(pdu)]


def test_link_down_trap_frame_becomes_an_alarm_with_its_interface() -> None:
    note = notification(decoded_varbinds(LINK_DOWN_V2C), max_variables=10)
    assert note.trap == "linkDown" and note.kind == "alarm"
    assert note.trap_oid == "1.3.6.1.6.3.1.1.5.3"
    assert note.uptime_s == 42.42
    assert note.variables == {"1.3.6.1.2.1.2.2.1.1.2": 2.0, "1.3.6.1.2.1.2.2.1.2.2": "eth0"}


def test_notification_keeps_at_most_max_variables() -> None:
    varbinds = decoded_varbinds(LINK_DOWN_V2C)
    assert len(notification(varbinds, max_variables=1).variables) == 1


def test_notification_without_snmp_trap_oid_is_refused() -> None:
    varbinds = decoded_varbinds(LINK_DOWN_V2C)
    with pytest.raises(NotificationError, match=r"snmpTrapOID\.0"):
        notification([varbinds[0], varbinds[2]], 10)
    with pytest.raises(NotificationError):
        notification([], 10)


def test_unknown_trap_is_a_status_event_named_by_its_oid() -> None:
    varbinds = decoded_varbinds(LINK_DOWN_V2C)
    varbinds[1] = (varbinds[1][0], rfc1902.ObjectName("1.3.6.1.4.1.2011.5.25.1"))
    note = notification(varbinds, 10)
    assert note.kind == "status" and note.trap == "1.3.6.1.4.1.2011.5.25.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (rfc1902.Integer32(-40), -40.0),
        (rfc1902.Gauge32(4294967295), 4294967295.0),
        (rfc1902.Counter32(123456), 123456.0),
        (rfc1902.Counter64(18446744073709551615), float(18446744073709551615)),
        (rfc1902.TimeTicks(360000), 3600.0),  # hundredths of a second (RFC 2578 7.1.8)
    ],
)
def test_numbers(value: object, expected: float) -> None:
    assert decode(value).number == expected


def test_scale_offset_and_text_types() -> None:
    assert decode(rfc1902.Integer32(231), scale=0.1, offset=1).number == pytest.approx(24.1)
    assert decode(rfc1902.OctetString(b"UPS-3000")).text == "UPS-3000"
    assert decode(rfc1902.IpAddress("10.20.0.7")).text == "10.20.0.7"
    assert decode(rfc1902.ObjectName("1.3.6.1.4.1.318")).text == "1.3.6.1.4.1.318"
    # A MAC address is binary: hex, never mojibake.
    assert decode(rfc1902.OctetString(b"\x00\x1b\x21\x3a\x4f\x5e")).text == "0x001b213a4f5e"
    assert octets_text(b"\xff\xfe") == "0xfffe"


def test_value_type_number_and_text() -> None:
    assert decode(rfc1902.OctetString(b" 230.5 "), "number").number == 230.5
    with pytest.raises(SnmpValueError, match="not a number"):
        decode(rfc1902.OctetString(b"on battery"), "number")
    assert decode(rfc1902.Integer32(3), "text").text == "3"


def test_varbind_exceptions_are_bad_rows_not_values() -> None:
    for value, name in [
        (rfc1905.NoSuchObject(""), "noSuchObject"),
        (rfc1905.NoSuchInstance(""), "noSuchInstance"),
        (rfc1905.EndOfMibView(""), "endOfMibView"),
    ]:
        decoded = decode(value)
        assert decoded.exception == name
        row = reading("ups-1", "battery_charge", "%", decoded, 1000)
        assert row["quality"] == 2 and row["value"] is None and row["unit"] == "%"
    assert reading("ups-1", "m", None, None, 1000)["quality"] == 2  # no answer at all


def test_opaque_is_rejected_with_its_type() -> None:
    with pytest.raises(SnmpValueError, match="Opaque"):
        decode(rfc1902.Opaque(b"\x9f\x78\x04\x42\xf6\x00\x00"))


def test_column_index() -> None:
    assert column_index("1.3.6.1.2.1.2.2.1.8", "1.3.6.1.2.1.2.2.1.8.12") == "12"
    assert column_index("1.3.6.1.2.1.2.2.1.8", "1.3.6.1.2.1.2.2.1.80.1") is None
    assert column_index("1.3.6.1.2.1.2.2.1.8", "1.3.6.1.2.1.2.2.1.8") is None


def test_authoritative_engine_id_only_of_v3_messages() -> None:
    assert authoritative_engine_id(LINK_DOWN_V2C) is None
    assert authoritative_engine_id(b"garbage") is None
