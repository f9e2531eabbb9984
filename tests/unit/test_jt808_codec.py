"""JT/T 808 codec against a maintained implementation's published frames,
escaping, both header versions, and hostile frames ending in a reason."""

from __future__ import annotations

import datetime as dt
import struct
import tomllib
from pathlib import Path

import pytest

from citylake.ingest.jt808 import messages as m
from citylake.ingest.jt808.codec import (
    FrameError,
    FrameSplitter,
    decode_frame,
    encode_message,
    escape,
    unescape,
)
from citylake.ingest.jt808.readings import alarm_names, location_readings
from citylake_devstack.simulators.jt808 import PUBLISHED_FRAMES, location_body

REPO = Path(__file__).resolve().parents[2]
PHONE_2019 = "00000000013912344329"


def content(frame: bytes) -> bytes:
    assert frame[0] == frame[-1] == 0x7E
    return frame[1:-1]


def test_published_2019_location() -> None:
    message = decode_frame(content(PUBLISHED_FRAMES["location_2019"]))
    header = message.header
    assert (header.message_id, header.version, header.phone, header.serial) == (0x0200, 1, PHONE_2019, 0)
    assert header.is_2019 and header.body_length == 38
    location = m.decode_location(message.body)
    assert (location.alarm, location.status) == (111, 22)
    # status 22 has bit 2 (south latitude) set: the sign comes from the status.
    assert (location.latitude, location.longitude) == (-31.234567, 121.987654)
    assert (location.altitude_m, location.speed_kmh, location.direction_deg) == (123, 6.6, 3)
    when = dt.datetime(2025, 1, 29, 22, 33, 44, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert location.ts_ms == int(when.timestamp() * 1000)
    assert location.extras == {0x01: 1.2, 0x02: 10.0}  # 12 x 1/10 km, 100 x 1/10 L


def test_published_2019_batch() -> None:
    message = decode_frame(content(PUBLISHED_FRAMES["batch_2019"]))
    kind, items = m.decode_batch(message.body)
    assert kind == 0 and len(items) == 2
    first, second = (m.decode_location(item) for item in items)
    assert (first.latitude, first.longitude, first.altitude_m, first.speed_kmh) == (
        31.000562,
        121.451372,
        666,
        3.3,
    )
    assert (second.latitude, second.direction_deg) == (31.000563, 90)


def test_our_replies_equal_the_published_ones() -> None:
    ok = encode_message(m.PLATFORM_REPLY, PHONE_2019, 0, m.platform_reply_body(111, 0x0200, 0), 1)
    assert ok == PUBLISHED_FRAMES["reply_8001_2019"]
    registered = encode_message(
        m.REGISTER_REPLY, PHONE_2019, 0, m.register_reply_body(111, 0, "ok..ok..ok"), 1
    )
    assert registered == PUBLISHED_FRAMES["reply_8100_2019"]


def test_published_2013_header() -> None:
    message = decode_frame(content(PUBLISHED_FRAMES["resend_8003_2013"]))
    assert message.header.version is None and message.header.phone == "013912344323"
    assert message.body == bytes.fromhex("006f0300020003 0004".replace(" ", ""))
    again = encode_message(0x8003, "013912344323", 0, message.body)
    assert again == PUBLISHED_FRAMES["resend_8003_2013"]


def test_escaping_round_trip() -> None:
    data = bytes([0x30, 0x7E, 0x08, 0x7D, 0x55, 0x7D, 0x02])
    assert escape(data) == bytes([0x30, 0x7D, 0x02, 0x08, 0x7D, 0x01, 0x55, 0x7D, 0x01, 0x02])
    assert unescape(escape(data)) == data
    # A body full of flag bytes survives the wire.
    frame = encode_message(0x0900, "13800000000", 7, b"\x7e\x7d" * 20)
    assert frame.count(b"\x7e") == 2
    assert decode_frame(content(frame)).body == b"\x7e\x7d" * 20


def test_splitter_byte_by_byte_and_shared_flags() -> None:
    one = PUBLISHED_FRAMES["location_2019"]
    two = PUBLISHED_FRAMES["reply_8001_2019"]
    splitter = FrameSplitter(2048)
    out: list[bytes | FrameError] = []
    for byte in one + two:
        out.extend(splitter.feed(bytes([byte])))
    assert out == [content(one), content(two)]
    # Frames sharing one flag between them.
    assert FrameSplitter(2048).feed(one + two[1:]) == [content(one), content(two)]


def test_splitter_bounds_a_frame_that_never_ends() -> None:
    splitter = FrameSplitter(100)
    out = splitter.feed(b"\x7e" + b"\x01" * 10_000)
    assert [str(e) for e in out] == ["frame too long: over max_frame_bytes 100"]
    assert len(splitter._buffer) == 0
    # The frame after the oversized one's end is found.
    good = PUBLISHED_FRAMES["reply_8001_2019"]
    assert splitter.feed(b"\x01\x7e" + good) == [content(good)]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (content(PUBLISHED_FRAMES["location_2019"])[:-1] + b"\x00", "check code mismatch"),
        (b"\x02\x00\x7d\x03" + b"\x00" * 12, "bad escape: 7d 03"),
        (b"\x02\x00\x00" + b"\x00" * 10 + b"\x7d", "bad escape: 7d at the end"),
        (b"\x00\x02\x00", "frame too short"),
    ],
)
def test_bad_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_frame(frame)


def _raw(header: bytes, body: bytes) -> bytes:
    data = header + body
    code = 0
    for byte in data:
        code ^= byte
    return escape(data + bytes([code]))


def test_length_mismatch_bcd_split_and_encryption() -> None:
    phone = bytes.fromhex("013912344323")
    with pytest.raises(FrameError, match="body length mismatch: properties say 5 bytes, frame has 3"):
        decode_frame(_raw(struct.pack(">HH", 0x0200, 5) + phone + b"\x00\x01", b"abc"))
    with pytest.raises(FrameError, match="bad BCD"):
        decode_frame(_raw(struct.pack(">HH", 0x0002, 0) + bytes.fromhex("0139123443ff") + b"\x00\x01", b""))
    with pytest.raises(FrameError, match="bad packet index: 3 of 2"):
        decode_frame(
            _raw(struct.pack(">HH", 0x0200, 0x2000) + phone + b"\x00\x01" + struct.pack(">HH", 2, 3), b"")
        )
    with pytest.raises(FrameError, match="encrypted body"):
        decode_frame(_raw(struct.pack(">HH", 0x0200, 0x0400) + phone + b"\x00\x01", b""))


def test_bad_bodies() -> None:
    with pytest.raises(FrameError, match="short location body"):
        m.decode_location(b"\x00" * 27)
    when = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    body = location_body(0, when)
    with pytest.raises(FrameError, match="bad extra item: 0x01 says 4 bytes"):
        m.decode_location(body[:30] + b"\x00")
    bad_time = body[:22] + bytes.fromhex("261399000000") + body[28:]
    with pytest.raises(FrameError, match="bad time"):
        m.decode_location(bad_time)
    off_globe = struct.pack(">IIII", 0, 0, 95_000_000, 0) + body[16:]
    with pytest.raises(FrameError, match="bad position"):
        m.decode_location(off_globe)
    with pytest.raises(FrameError, match="bad batch: item 2 of 2 missing"):
        m.decode_batch(struct.pack(">HBH", 2, 0, len(body)) + body)
    with pytest.raises(FrameError, match="short register body"):
        m.decode_registration(b"\x00" * 20, False)


def test_registration_2013_and_2019() -> None:
    body_2013 = (
        struct.pack(">HH", 32, 100)
        + b"MAKER"
        + b"MODEL".ljust(20, b"\x00")
        + b"T000001"
        + b"\x01"
        + "苏A12345".encode("gbk")
    )
    reg = m.decode_registration(body_2013, False)
    assert (reg.province, reg.city, reg.manufacturer, reg.model, reg.terminal_id) == (
        32,
        100,
        "MAKER",
        "MODEL",
        "T000001",
    )
    assert (reg.plate_color, reg.plate) == (1, "苏A12345")
    body_2019 = (
        struct.pack(">HH", 32, 100)
        + b"MAKER".ljust(11, b"\x00")
        + b"M".ljust(30, b"\x00")
        + b"T".ljust(30, b"\x00")
        + b"\x02"
        + b"X1"
    )
    assert m.decode_registration(body_2019, True).plate == "X1"


def test_location_readings_quality_and_units() -> None:
    location = m.decode_location(decode_frame(content(PUBLISHED_FRAMES["location_2019"])).body)
    rows = {r["metric"]: r for r in location_readings("13912344329", location, "fleet", "s", 0)}
    assert rows["latitude"]["value"] == -31.234567 and rows["latitude"]["unit"] == "deg"
    assert rows["speed"]["value"] == 6.6 and rows["speed"]["unit"] == "km/h"
    assert rows["mileage"]["value"] == 1.2 and rows["mileage"]["unit"] == "km"
    assert rows["fuel"]["unit"] == "L"
    # alarm 111 has bits 5 and 6 (GNSS antenna cut/short): the position is bad.
    assert rows["latitude"]["quality"] == 2 and rows["mileage"]["quality"] == 0
    assert alarm_names(111) == [
        "emergency",
        "overspeed",
        "fatigue_driving",
        "danger_warning",
        "gnss_antenna_cut",
        "gnss_antenna_short",
    ]


def test_entry_point_names_the_adapter() -> None:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "citylake.adapters"
    ]
    assert entry["jt808"] == "citylake.ingest.jt808.adapter:JT808Source"
