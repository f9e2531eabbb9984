"""CJ/T 188 codec: the frames of a tool tested against a real DN15 water meter
(python_cjt188, BSD: its request ``68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16``
and its 901F reply, both with DI 90 1F on the wire), round trips of every meter
type, and hostile replies ending in a clear DecodeError/FrameError."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from citylake.ingest.cjt188 import codec
from citylake.ingest.cjt188.adapter import Cjt188Source
from citylake.ingest.cjt188.codec import (
    CurrentData,
    DecodeError,
    MeterStatus,
    decode_current_data,
    decode_status,
    find_frame,
    parse_frame,
)
from citylake.ingest.cjt188.config import Cjt188SourceConfig
from citylake.ingest.meter_link import FrameError

REPO = Path(__file__).resolve().parents[2]
METER = "00000000000012"
PUBLISHED_REQUEST = bytes.fromhex("6810120000000000000103901f003d16")
PUBLISHED_REPLY = bytes.fromhex(
    "fefefe6810120000000000008116901f00100010002c100010002c0000000000000000ff6716"
)


def with_checksum(body: bytes) -> bytes:
    return body + bytes([codec.checksum(body), 0x16])


def test_published_request_and_reply() -> None:
    assert codec.read_request(0x10, METER, 0, "high_first", preamble=False) == PUBLISHED_REQUEST
    assert codec.read_request(0x10, METER, 0, "low_first", preamble=False)[11:13] == b"\x1f\x90"
    start, end = find_frame(PUBLISHED_REPLY) or (0, 0)
    decoded = decode_current_data(parse_frame(PUBLISHED_REPLY[start:end]), 0x10, METER, 0, "high_first")
    assert isinstance(decoded, CurrentData)
    assert [(q.metric, q.value, q.unit) for q in decoded.quantities] == [
        ("cumulative_flow", 1000.1, "m3"),
        ("settlement_day_flow", 1000.1, "m3"),
    ]
    assert decoded.meter_time is None  # this meter has no clock: zeros
    assert decoded.status == MeterStatus("open", False, 0x00, 0xFF)


@pytest.mark.parametrize("meter_type", [0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x30])
def test_every_meter_type_round_trips(meter_type: int) -> None:
    values = {"cumulative_flow": 123456.78, "settlement_day_flow": 0.01, "current_heat": 99.5,
              "flow_rate": 1.2345, "supply_temperature": 70.25, "working_hours": 12345}  # fmt: skip
    clock = bytes.fromhex("59590823122099")  # 9920-12-23 08:59:59: BCD, year high byte last
    data = codec.encode_current_data(meter_type, 7, values, (0x05, 0x42), clock)
    frame = parse_frame(codec.build_frame(meter_type, METER, codec.READ_REPLY, data))
    decoded = decode_current_data(frame, meter_type, METER, 7)
    assert isinstance(decoded, CurrentData)
    got = {q.metric: q.value for q in decoded.quantities}
    assert {m: got[m] for m in values if m in got} == pytest.approx(
        {m: v for m, v in values.items() if m in got}
    )
    assert decoded.meter_time == "9920-12-23T08:59:59"
    assert decoded.status == MeterStatus("closed", True, 0x05, 0x42)


def test_status_bits_and_unit_scaling() -> None:
    assert decode_status(0x03, 0).valve == "abnormal" and decode_status(0x03, 0).degraded
    assert decode_status(0x04, 0).battery_low and decode_status(0x04, 0).degraded
    assert not decode_status(0x01, 0xFF).degraded
    gj100 = codec.di_bytes(codec.DI_CURRENT, "low_first") + b"\x01" + bytes.fromhex("25010000") + b"\x13"
    reader = codec._Reader(gj100[3:])
    assert reader.with_unit("heat", 2) == codec.Quantity("heat", 125.0, "GJ")  # 1.25 x 100 GJ


def test_abnormal_reply_gives_the_status() -> None:
    frame = parse_frame(codec.build_frame(0x10, METER, codec.READ_ERROR_REPLY, bytes([9, 0x03, 0x10])))
    assert decode_current_data(frame, 0x10, METER, 9) == MeterStatus("abnormal", False, 0x03, 0x10)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (PUBLISHED_REPLY[:-2] + b"\x68\x16", "checksum 68, computed 67"),
        (PUBLISHED_REPLY[:-1] + b"\x15", "end byte 15, not 16"),
        (
            PUBLISHED_REPLY[3:13] + b"\x15" + PUBLISHED_REPLY[14:],
            "length byte says 21 data bytes, frame carries 22",
        ),
        (with_checksum(bytes.fromhex("68101a00000000000081") + b"\x00"), "address 1a000000000000 is not BCD"),
        (b"\x68\x10", "frame of 2 bytes; at least 13"),
    ],
)
def test_bad_frames_are_named(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_frame(frame)
    assert str(info.value) == message


def reply(
    data: bytes, meter_type: int = 0x10, control: int = codec.READ_REPLY, address: str = METER
) -> codec.Frame:
    return parse_frame(codec.build_frame(meter_type, address, control, data))


def test_replies_that_are_not_the_answer() -> None:
    good = codec.encode_current_data(0x10, 1, {"cumulative_flow": 1.0})
    cases = [
        (reply(good, address="00000000000013"), "reply from meter 00000000000013, asked 00000000000012"),
        (reply(good, meter_type=0x30), "reply from a meter of type 30, asked type 10"),
        (reply(good, control=0x84), "control code 84 is not a reply to a read"),
        (reply(good[:-1]), "901F reply of 21 data bytes, expected 22"),
        (reply(b"\x90\x1f" + good[2:]), "reply for DI 901F, asked 1F90"),
        (reply(good[:2] + b"\x02" + good[3:]), "reply with SER 02 to request SER 01"),
        (reply(good[:7] + b"\x7f" + good[8:]), "cumulative_flow: unknown unit code 7F"),
        (reply(good[:3] + b"\x1a\x00\x00\x00" + good[7:]), "value 1a000000 is not BCD"),
        (reply(good[:13] + b"\xab" + good[14:]), "meter time ab000000000000 is not BCD"),
        (reply(bytes([1, 0])[:1], control=codec.READ_ERROR_REPLY), "abnormal reply of 1 bytes"),
    ]
    for frame, message in cases:
        with pytest.raises(DecodeError) as info:
            decode_current_data(frame, 0x10, METER, 1)
        assert str(info.value).startswith(message), (message, str(info.value))


def test_oversized_length_raises_frame_error() -> None:
    with pytest.raises(FrameError, match="data length 200 over 100"):
        find_frame(bytes.fromhex("68101200000000000081c8"))


def test_sample_validates_and_entry_point_is_declared() -> None:
    data = yaml.safe_load((REPO / "ingest" / "cjt188" / "sample.yaml").read_text())
    source = Cjt188Source(Cjt188SourceConfig.model_validate(data))
    assert source.validate() == [] and len(source.targets()) == len(data["meters"])
    rows = source.known_devices(1_764_072_000_000)
    assert [r["type"] for r in rows] == ["cold_water_meter", "heat_meter", "hot_water_meter", "gas_meter"]
    adapters = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert adapters["citylake.adapters"]["cjt188"] == "citylake.ingest.cjt188.adapter:Cjt188Source"


def test_config_errors() -> None:
    base = {"name": "m", "type": "cjt188", "url": "tcp://127.0.0.1:8900"}
    with pytest.raises(ValueError, match="meter_type"):
        Cjt188SourceConfig.model_validate(
            {**base, "meters": [{"meter_address": METER, "meter_type": "electric"}]}
        )
    with pytest.raises(ValueError, match="meter_address"):
        Cjt188SourceConfig.model_validate({**base, "meters": [{"meter_address": "123", "meter_type": "gas"}]})
    twice = [{"meter_address": METER, "meter_type": "gas"}] * 2
    with pytest.raises(ValueError, match=f"meter {METER} twice"):
        Cjt188SourceConfig.model_validate({**base, "meters": twice})
