"""DL/T 645-2007 codec: frames as the standard and a maintained implementation
write them, and hostile replies ending in a clear DecodeError/FrameError.

Frame facts: ``68 AA AA AA AA AA AA 68 13 00 DF 16`` (read address, broadcast)
is the standard's own example; the others were produced by the ``dlt645``
package 3.2.0's ``DLT645Protocol.build_frame`` (PyPI), an independent
implementation: the bytes carry over, its code does not."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from citylake.ingest.base import PollingSource
from citylake.ingest.dlt645 import codec
from citylake.ingest.dlt645.adapter import Dlt645Source
from citylake.ingest.dlt645.codec import (
    DATA_ITEMS,
    DecodeError,
    decode_bcd,
    decode_read_reply,
    encode_bcd,
    find_frame,
    parse_frame,
)
from citylake.ingest.dlt645.config import Dlt645SourceConfig
from citylake.ingest.meter_link import FrameError

REPO = Path(__file__).resolve().parents[2]
METER = "000012345678"
READ_ADDRESS = bytes.fromhex("fefefefe68aaaaaaaaaaaa681300df16")
READ_VOLTAGE_A = bytes.fromhex("fefefefe6878563412000068110433343435c916")
REPLY_VOLTAGE_A = bytes.fromhex("fefefefe68785634120000689106333434354756e816")  # 231.4 V
REPLY_ENERGY = bytes.fromhex("fefefefe68785634120000689108333333339a785634e516")  # 12345.67 kWh
ERROR_NO_DATA = bytes.fromhex("fefefefe6878563412000068d10135eb16")


def with_checksum(body: bytes) -> bytes:
    return body + bytes([codec.checksum(body), 0x16])


VOLTAGE_A = DATA_ITEMS[0x02010100]
ENERGY = DATA_ITEMS[0x00000000]


def test_requests_byte_for_byte() -> None:
    assert codec.read_address_request() == READ_ADDRESS
    assert codec.read_request(METER, 0x02010100) == READ_VOLTAGE_A
    assert codec.read_request(METER, 0x02010100, preamble=False) == READ_VOLTAGE_A[4:]


def test_replies_decode_to_values_and_round_trip() -> None:
    assert decode_read_reply(parse_frame(REPLY_VOLTAGE_A), METER, VOLTAGE_A).value == pytest.approx(231.4)
    assert decode_read_reply(parse_frame(REPLY_ENERGY), METER, ENERGY).value == pytest.approx(12345.67)
    assert codec.read_reply(METER, VOLTAGE_A, 231.4) == REPLY_VOLTAGE_A
    assert codec.read_reply(METER, ENERGY, 12345.67) == REPLY_ENERGY
    error = decode_read_reply(parse_frame(ERROR_NO_DATA), METER, VOLTAGE_A)
    assert (error.value, error.error) == (None, 0x02)
    assert codec.error_text(0x02) == "error 0x02 (no requested data)"
    assert codec.error_reply(METER, 0x02) == ERROR_NO_DATA


@pytest.mark.parametrize(
    ("raw", "decimals", "signed", "value"),
    [
        (bytes.fromhex("255180"), 3, True, -5.125),
        (bytes.fromhex("255100"), 3, True, 5.125),
        (bytes.fromhex("5309"), 3, True, 0.953),
        (bytes.fromhex("9849"), 2, False, 49.98),
        (bytes.fromhex("67452301"), 2, True, 12345.67),
    ],
)
def test_bcd_with_sign_bit(raw: bytes, decimals: int, signed: bool, value: float) -> None:
    assert decode_bcd(raw, decimals, signed) == pytest.approx(value)
    assert encode_bcd(value, len(raw), decimals, signed) == raw


def test_every_data_item_round_trips_its_largest_value() -> None:
    for item in DATA_ITEMS.values():
        top = (10 ** (2 * item.length - (1 if item.signed else 0)) - 1) / 10**item.decimals
        for value in (top, -top) if item.signed else (top,):
            frame = parse_frame(codec.read_reply(METER, item, value))
            assert decode_read_reply(frame, METER, item).value == pytest.approx(value)


def test_find_frame_cuts_preamble_noise_and_partial_frames() -> None:
    stream = b"\x00\x13" + REPLY_VOLTAGE_A + b"\xfe"
    start, end = find_frame(stream) or (0, 0)
    assert stream[start:end] == REPLY_VOLTAGE_A[4:]
    assert find_frame(REPLY_VOLTAGE_A[:-1]) is None
    assert find_frame(b"\xfe\xfe") is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (REPLY_VOLTAGE_A[:-2] + bytes([REPLY_VOLTAGE_A[-2] ^ 1, 0x16]), "checksum e9, computed e8"),
        (REPLY_VOLTAGE_A[:-1] + b"\x17", "end byte 17, not 16"),
        (
            REPLY_VOLTAGE_A[:13] + b"\x07" + REPLY_VOLTAGE_A[14:],
            "length byte says 7 data bytes, frame carries 6",
        ),
        (with_checksum(b"\x68\x7a" + REPLY_VOLTAGE_A[6:-2]), "address 7a5634120000 is not BCD"),
        (b"\x68\x00\x00", "frame of 3 bytes; at least 12"),
    ],
)
def test_bad_frames_are_named(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_frame(frame)
    assert str(info.value).lower() == message.lower()


def test_replies_that_are_not_the_answer() -> None:
    other_meter = codec.read_reply("000012345679", VOLTAGE_A, 230.0)
    with pytest.raises(DecodeError, match="reply from meter 000012345679, asked 000012345678"):
        decode_read_reply(parse_frame(other_meter), METER, VOLTAGE_A)
    with pytest.raises(DecodeError, match=r"reply for DI 00 00 00 00, asked 02 01 01 00"):
        decode_read_reply(parse_frame(REPLY_ENERGY), METER, VOLTAGE_A)
    unknown_command = codec.build_frame(METER, 0x94, b"")
    with pytest.raises(DecodeError, match="control code 94 is not a reply to a read"):
        decode_read_reply(parse_frame(unknown_command), METER, VOLTAGE_A)
    short = codec.build_frame(METER, codec.READ_REPLY, (0x02010100).to_bytes(4, "little") + b"\x14")
    with pytest.raises(DecodeError, match="value of 1 bytes, expected 2"):
        decode_read_reply(parse_frame(short), METER, VOLTAGE_A)
    not_bcd = codec.build_frame(METER, codec.READ_REPLY, (0x02010100).to_bytes(4, "little") + b"\x1f\x23")
    with pytest.raises(DecodeError, match="not BCD"):
        decode_read_reply(parse_frame(not_bcd), METER, VOLTAGE_A)


def test_oversized_and_misaligned_headers_raise_frame_error() -> None:
    with pytest.raises(FrameError, match="data length 201 over the standard's 200"):
        find_frame(bytes.fromhex("687856341200006891") + bytes([201]))
    with pytest.raises(FrameError, match="no second start byte 68"):
        find_frame(bytes.fromhex("68785634120000009100"))


def test_sample_validates_and_entry_point_is_declared() -> None:
    data = yaml.safe_load((REPO / "ingest" / "dlt645" / "sample.yaml").read_text())
    source = Dlt645Source(Dlt645SourceConfig.model_validate(data))
    assert isinstance(source, PollingSource)
    assert source.validate() == []
    assert len(source.targets()) == len(data["meters"])
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "citylake.adapters"
    ]
    assert entry["dlt645"] == "citylake.ingest.dlt645.adapter:Dlt645Source"


def test_config_errors_name_the_problem() -> None:
    base = {"name": "m", "type": "dlt645", "url": "tcp://127.0.0.1:8899"}
    with pytest.raises(ValueError, match="unknown data item 'voltage_x'"):
        Dlt645SourceConfig.model_validate(
            {**base, "meters": [{"meter_address": METER}], "data_items": ["voltage_x"]}
        )
    with pytest.raises(ValueError, match="meter_address"):
        Dlt645SourceConfig.model_validate({**base, "meters": [{"meter_address": "12345"}]})
    with pytest.raises(ValueError, match=f"meter {METER} twice"):
        Dlt645SourceConfig.model_validate({**base, "meters": [{"meter_address": METER}] * 2})
    with pytest.raises(ValueError, match="scheme must be tcp://"):
        Dlt645SourceConfig.model_validate({**base, "url": "udp://x:1", "meters": [{"meter_address": METER}]})
    config = Dlt645SourceConfig.model_validate(
        {**base, "url": "serial:///dev/ttyUSB0", "meters": [{"meter_address": METER}]}
    )
    assert config.endpoint_of(config.meters[0]).key == "serial:///dev/ttyUSB0?2400-8E1"


def test_read_address_reply() -> None:
    from citylake_devstack.simulators.dlt645 import Dlt645Meters

    sim = Dlt645Meters({METER: {"voltage_a": 230.0}}, set())
    reply = sim.respond(READ_ADDRESS[4:])
    assert reply is not None
    assert codec.decode_address_reply(parse_frame(reply)) == METER
    with pytest.raises(DecodeError, match="is not a reply to read address"):
        codec.decode_address_reply(parse_frame(REPLY_VOLTAGE_A))
    lying = codec.build_frame(METER, codec.READ_ADDRESS_REPLY, codec.encode_address("000012345679"))
    with pytest.raises(DecodeError, match="names 000012345679 in its data, 000012345678 in its header"):
        codec.decode_address_reply(parse_frame(lying))
