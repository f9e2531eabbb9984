"""20-digit GB28181 ids: validation and decoding into registry columns."""

from __future__ import annotations

import pytest

from citylake.ingest.gb28181.device_id import InvalidDeviceId, is_device_id, parse_device_id


def test_decode_an_ipc() -> None:
    decoded = parse_device_id("34020000001320000001")
    assert decoded.columns() == {
        "device_id": "34020000001320000001",
        "civil_code": "34020000",
        "industry": "00",
        "type_code": "132",
        "type": "ipc",
        "network": "0",
        "serial": "000001",
    }
    assert decoded.network_name == "public_security_video"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("34020000001110000001", "dvr"),
        ("34020000001180000001", "nvr"),
        ("34020000001310000001", "camera"),
        ("34020000002000000001", "platform"),
        ("34020000002160000001", "virtual_org"),
        ("34020000001250000001", "front_end_device"),
        ("34020000003000000001", "central_user"),
        ("34020000009990000001", "type_999"),
    ],
)
def test_type_names(value: str, type_name: str) -> None:
    assert parse_device_id(value).type_name == type_name


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("3402000000132000001", "19 characters"),
        ("340200000013200000011", "21 characters"),
        ("3402000000132000000A", "not 20 decimal digits"),
        (
            "".join(chr(0xFF10 + int(c)) for c in "34020000001320000001"),
            "not 20 decimal digits",
        ),  # full-width digits: isdigit() but not ASCII
        ("", "0 characters"),
    ],
)
def test_invalid_ids(value: str, why: str) -> None:
    with pytest.raises(InvalidDeviceId, match=why):
        parse_device_id(value)
    assert not is_device_id(value)
