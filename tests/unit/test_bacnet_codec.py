"""BACnet codec: present-values by object type, engineering units, status
flags and reliability as quality, and the BACnet/IP frame screen on frames
encoded as ASHRAE 135 Annex J and clause 20 define them (the same frames
bacpypes3 decodes), with their hostile variants."""

from __future__ import annotations

import math

import pytest
from bacpypes3.apdu import APDU, IAmRequest, WhoIsRequest
from bacpypes3.basetypes import BinaryPV, EngineeringUnits
from bacpypes3.pdu import PDU

from citylake.ingest.bacnet.codec import (
    MAX_DATAGRAM,
    UNIT_SYMBOLS,
    UnsupportedValue,
    bvll_problem,
    flags_set,
    parse_object_id,
    present_value,
    quality_of,
    reading,
    unit_symbol,
)

# Who-Is, global broadcast: BVLC Original-Broadcast-NPDU (0x81 0x0B, length
# 12), NPDU version 1 with DNET 0xFFFF, DLEN 0, hop count 255, then the
# unconfirmed-request PDU (0x10) with service choice who-is (8).
WHO_IS_GLOBAL = bytes.fromhex("810b000c0120ffff00ff1008")
# I-Am from device 1001: device object id (type 8, instance 1001 = 0x020003E9),
# max APDU 1476, segmentation no-segmentation (3), vendor 15; local broadcast.
I_AM_1001 = bytes.fromhex("810b00140100" + "1000" + "c4020003e9" + "2205c4" + "9103" + "210f")


def test_published_frames_pass_the_screen_and_decode_as_the_standard_says() -> None:
    assert bvll_problem(WHO_IS_GLOBAL) is None
    assert bvll_problem(I_AM_1001) is None
    who_is = WhoIsRequest.decode(APDU.decode(PDU(WHO_IS_GLOBAL[10:])))
    assert who_is.deviceInstanceRangeLowLimit is None
    i_am = IAmRequest.decode(APDU.decode(PDU(I_AM_1001[6:])))
    assert tuple(i_am.iAmDeviceIdentifier) == (8, 1001) or str(i_am.iAmDeviceIdentifier) == "device,1001"
    assert (int(i_am.maxAPDULengthAccepted), str(i_am.segmentationSupported), int(i_am.vendorID)) == (
        1476,
        "no-segmentation",
        15,
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "truncated BVLC header: 0 octets"),
        (b"\x81\x0b\x00", "truncated BVLC header: 3 octets"),
        (b"\x82" + I_AM_1001[1:], "BVLC type 0x82 is not BACnet/IP"),
        (b"\x81\x0d" + I_AM_1001[2:], "unknown BVLC function 0x0d"),
        (I_AM_1001[:-1], "BVLC length 20 does not match the datagram's 19 octets"),
        (I_AM_1001 + b"\x00", "BVLC length 20 does not match the datagram's 21 octets"),
        (b"\x81\x0a\xff\xff" + bytes(65531), "oversized BACnet/IP datagram: 65535 octets"),
    ],
)
def test_hostile_frames_are_named(frame: bytes, reason: str) -> None:
    problem = bvll_problem(frame)
    assert problem is not None and problem.startswith(reason)


def test_largest_legal_frame_passes() -> None:
    frame = b"\x81\x0a" + MAX_DATAGRAM.to_bytes(2, "big") + bytes(MAX_DATAGRAM - 4)
    assert bvll_problem(frame) is None


def test_object_ids() -> None:
    assert parse_object_id("analog-input,1") == ("analog-input", 1)
    assert parse_object_id("multi-state-value:4194302") == ("multi-state-value", 4194302)
    for bad in ("analog-input", "analog-input,-1", "analogInput,1", "schedule,1", "analog-input,4194303"):
        with pytest.raises(ValueError, match="object"):
            parse_object_id(bad)


def test_every_mapped_unit_is_a_bacnet_engineering_unit() -> None:
    # The table's keys must be ASHRAE 135's identifiers, as bacpypes3 prints them.
    for name in UNIT_SYMBOLS:
        assert str(EngineeringUnits(name)) == name
    assert unit_symbol(str(EngineeringUnits("degreesCelsius"))) == "degC"
    assert unit_symbol("kilowatt-hours") == "kWh"
    assert unit_symbol("no-units") is None
    assert unit_symbol(None) is None
    # Not in the table: the identifier itself, so nothing is lost.
    assert unit_symbol("grams-per-cubic-meter") == "grams-per-cubic-meter"


def test_status_flags_and_reliability_to_quality() -> None:
    assert flags_set([0, 0, 0, 0]) == []
    assert flags_set([1, 0, 0, 1]) == ["in-alarm", "out-of-service"]
    assert quality_of([]) == 0
    assert quality_of(["in-alarm"]) == 0
    assert quality_of(["overridden"]) == 1
    assert quality_of(["out-of-service"]) == 1
    assert quality_of(["fault"]) == 2
    assert quality_of(["out-of-service", "fault"]) == 2
    assert quality_of([], "no-fault-detected") == 0
    assert quality_of([], "over-range") == 2
    for bad in ([0, 0, 0], [0, 0, 0, 0, 0], [0, 2, 0, 0]):
        with pytest.raises(UnsupportedValue, match="is not 4 bits"):
            flags_set(bad)


def test_present_values_by_object_type() -> None:
    assert present_value("analog-input", 21.5) == 21.5
    assert present_value("analog-value", 3) == 3.0
    assert present_value("binary-input", BinaryPV("active")) == 1.0
    assert present_value("binary-output", BinaryPV("inactive")) == 0.0
    assert present_value("multi-state-value", 3) == 3.0


@pytest.mark.parametrize(
    ("object_type", "value", "reason"),
    [
        ("analog-input", math.nan, "not a finite number"),
        ("analog-input", math.inf, "not a finite number"),
        ("analog-input", "21.5", "is not a REAL"),
        ("analog-input", True, "is not a REAL"),
        ("binary-input", 7, "neither inactive nor active"),
        ("multi-state-input", 0, "not a state number"),
        ("multi-state-input", 2.5, "not a state number"),
        ("schedule", 1, "no readable present-value"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(object_type: str, value: object, reason: str) -> None:
    with pytest.raises(UnsupportedValue, match=reason):
        present_value(object_type, value)


def test_reading_row() -> None:
    row = reading("ahu-1", "supply_temp", "analog-input", 23.5, "degC", ["out-of-service"], None, 1000)
    assert row == {
        "device_id": "ahu-1",
        "metric": "supply_temp",
        "ts": 1000,
        "value": 23.5,
        "text": None,
        "unit": "degC",
        "quality": 1,
    }
