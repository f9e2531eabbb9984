"""HJ 212-2017 codec: the standard's own frame, framing over a byte stream,
packets -> readings, and hostile input ending in a reason."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from citylake.ingest.hj212.codec import (
    FrameError,
    FrameSplitter,
    crc16,
    data_ack,
    decode_frame,
    decode_segment,
    encode_packet,
)
from citylake.ingest.hj212.pollutants import POLLUTANTS
from citylake.ingest.hj212.readings import decode_packet, parse_data_time
from citylake_devstack.simulators.hj212 import STANDARD_FRAMES

REPO = Path(__file__).resolve().parents[2]
CHINA = dt.timezone(dt.timedelta(hours=8))
MN = "888888800000010000000001"


def test_crc_of_the_standards_example_frame() -> None:
    frame = STANDARD_FRAMES["rtd_interval"]
    data = frame[6:-6]
    assert len(data) == int(frame[2:6]) == 101
    # 0x1C80 is printed in HJ 212-2017 with this frame.
    assert crc16(data) == 0x1C80
    # Modbus's CRC-16 (XOR into the low byte) gives another value: the variant matters.
    register = 0xFFFF
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ 0xA001 if register & 1 else register >> 1
    assert register != 0x1C80


def test_the_standards_frame_decodes() -> None:
    packet = decode_frame(STANDARD_FRAMES["rtd_interval"])
    assert packet.qn == "20160801085857223"
    assert (packet.st, packet.cn, packet.pw) == ("32", "1062", "100000")
    assert packet.mn == "010000A8900016F000169DC0"
    assert packet.flag == 5 and packet.wants_ack and packet.version == 1
    assert packet.cp_value("RtdInterval") == "30"


def test_round_trip_and_data_ack() -> None:
    cp = "DataTime=20261201083000;a34004-Rtd=35.2,a34004-Flag=N;a21026-Rtd=12.50,a21026-Flag=M"
    frame = encode_packet("20261201083000123", "22", "2011", "123456", MN, 5, cp)
    assert frame.startswith(b"##") and frame.endswith(b"\r\n")
    packet = decode_frame(frame)
    assert packet.groups == [
        {"DataTime": "20261201083000"},
        {"a34004-Rtd": "35.2", "a34004-Flag": "N"},
        {"a21026-Rtd": "12.50", "a21026-Flag": "M"},
    ]
    answer = decode_frame(data_ack(packet))
    assert (answer.qn, answer.st, answer.cn, answer.mn, answer.pw) == (packet.qn, "91", "9014", MN, "123456")
    assert answer.flag == 4 and not answer.wants_ack  # 2017 version, no answer to the answer
    assert answer.groups == []


def test_splitter_reassembles_byte_by_byte_and_back_to_back() -> None:
    one = STANDARD_FRAMES["rtd_interval"]
    two = encode_packet(None, "22", "2011", "1", MN, 4, "DataTime=20261201083000;a01001-Rtd=21.4")
    splitter = FrameSplitter(4096)
    out: list[bytes | FrameError] = []
    for byte in one + two:
        out.extend(splitter.feed(bytes([byte])))
    assert out == [one, two]
    assert FrameSplitter(4096).feed(one + two + one) == [one, two, one]


def test_lowercase_crc_is_taken() -> None:
    frame = STANDARD_FRAMES["rtd_interval"].replace(b"1C80", b"1c80")
    assert decode_frame(frame).cn == "1062"


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"hello\r\n" + STANDARD_FRAMES["rtd_interval"], "garbage before ##"),
        (b"##01x1QN=1", "bad data length"),
        (b"##9999" + b"x" * 20, "frame too long"),
        (STANDARD_FRAMES["rtd_interval"][:-2] + b"\n\n", "bad frame end"),
    ],
)
def test_splitter_reports_and_resynchronises(stream: bytes, reason: str) -> None:
    good = STANDARD_FRAMES["rtd_interval"]
    out = FrameSplitter(4096).feed(stream + good)
    errors = [item for item in out if isinstance(item, FrameError)]
    assert errors and str(errors[0]).startswith(reason)
    assert out[-1] == good  # the next frame is found again


def test_splitter_holds_at_most_one_frame() -> None:
    splitter = FrameSplitter(128)
    out = splitter.feed(b"x" * 100_000)
    assert [str(e) for e in out if isinstance(e, FrameError)] == [
        "garbage outside frames: 100000 bytes with no ##"
    ]
    assert len(splitter._buffer) == 0


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (STANDARD_FRAMES["rtd_interval"].replace(b"1C80", b"1C81"), "CRC mismatch: frame says 1C81"),
        (STANDARD_FRAMES["rtd_interval"].replace(b"1C80", b"ZZZZ"), "bad CRC"),
        (STANDARD_FRAMES["rtd_interval"].replace(b"ST=32", b"ST=3X"), "CRC mismatch"),
    ],
)
def test_bad_frames_are_refused_with_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_frame(frame)


def test_non_ascii_segment_is_refused() -> None:
    data = "QN=20261201083000123;ST=22;CN=2011;PW=1;MN=AB;Flag=4;CP=&&DataTime=20261201083000;x=é&&"
    raw = data.encode("utf-8")
    frame = b"##%04d%s%04X\r\n" % (len(raw), raw, crc16(raw))
    with pytest.raises(FrameError, match="not ASCII"):
        decode_frame(frame)


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("ST=22;CN=2011;MN=A;Flag=4", "no CP"),
        ("ST=22;CN=2011;MN=A;CP=&&DataTime=1", "bad CP"),
        ("ST=22;CN=2011;CP=&&&&", "incomplete header: no MN"),
        ("QN=123;ST=22;CN=2011;MN=A;CP=&&&&", "bad QN"),
        ("ST=2;CN=2011;MN=A;CP=&&&&", "bad ST"),
        ("ST=22;CN=20x1;MN=A;CP=&&&&", "bad CN"),
        ("ST=22;CN=2011;MN=" + "A" * 25 + ";CP=&&&&", "bad MN"),
        ("ST=22;CN=2011;MN=A;Flag=999;CP=&&&&", "bad Flag"),
        ("ST=22;CN=2011;MN=A;junk;CP=&&&&", "bad header"),
        ("ST=22;CN=2011;MN=A;CP=&&DataTime=20261201083000;novalue&&", "bad CP"),
    ],
)
def test_bad_segments_are_refused_with_reason(segment: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_segment(segment)


def _decode(
    cn: str, cp: str
) -> tuple[list[dict[str, object]], list[tuple[str, int, dict[str, object]]], list[str]]:
    packet = decode_segment(f"QN=20261201083000123;ST=22;CN={cn};PW=1;MN={MN};Flag=5;CP=&&{cp}&&")
    decoded = decode_packet(packet, POLLUTANTS, CHINA, "eco", "site-1", 1)
    return decoded.readings, decoded.events, decoded.problems


def test_realtime_values_units_and_quality() -> None:
    readings, events, problems = _decode(
        "2011",
        "DataTime=20261201083000;a34004-Rtd=35.2,a34004-Flag=N;a21026-Rtd=12.5,a21026-ZsRtd=14.0,"
        "a21026-Flag=C;w01018-Rtd=80,w01018-Flag=T;a01001-Rtd=21.4,a01001-Flag=D;zz999-Rtd=1",
    )
    ts = int(dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC).timestamp() * 1000)  # 08:30 at UTC+8
    got = {(r["metric"], r["value"], r["unit"], r["quality"]) for r in readings}
    assert got == {
        ("pm25", 35.2, "ug/m3", 0),
        ("so2", 12.5, "mg/m3", 1),
        ("so2_zs", 14.0, "mg/m3", 1),
        ("cod", 80.0, "mg/L", 0),
        ("temperature", 21.4, "degC", 2),
        ("zz999", 1.0, None, 0),  # an unknown code keeps its data under its code
    }
    assert {r["ts"] for r in readings} == {ts}
    assert {r["device_id"] for r in readings} == {MN}
    assert problems == []
    assert events == [
        ("alarm", ts, {"code": "w01018", "metric": "cod", "flag": "T", "meaning": "over_limit", "Rtd": "80"})
    ]


def test_interval_data_names_the_interval() -> None:
    for cn, interval in (("2051", "1m"), ("2061", "1h"), ("2031", "1d")):
        readings, _, _ = _decode(
            cn,
            "DataTime=20261201080000;w01018-Avg=40.1,w01018-Min=30,w01018-Max=50,w01018-Cou=1.25,w01018-Flag=N",
        )
        got = {r["metric"]: (r["value"], r["unit"]) for r in readings}
        assert got == {
            f"cod_{interval}_avg": (40.1, "mg/L"),
            f"cod_{interval}_min": (30.0, "mg/L"),
            f"cod_{interval}_max": (50.0, "mg/L"),
            f"cod_{interval}_cou": (1.25, "kg"),
        }


def test_bad_fields_are_problems_and_neighbours_land() -> None:
    readings, _, problems = _decode(
        "2011",
        "DataTime=20261201083000;a34004-Rtd=abc;a21026-Rtd=nan;a01001-Rtd=21,a01001-Flag=Q;a01002-Avg=3",
    )
    assert [(r["metric"], r["quality"]) for r in readings] == [("temperature", 1)]
    assert [p.split(":")[0] for p in problems] == [
        "not a number",
        "not a finite number",
        "unknown data flag",
        "unexpected field",
    ]


def test_reply_commands_are_status_events() -> None:
    readings, events, _ = _decode("9011", "QnRtn=1")
    assert readings == []
    assert events[0][0] == "status" and events[0][2]["QnRtn"] == "1"


@pytest.mark.parametrize("text", ["2026120108300", "20261301083000", "2026120108300x"])
def test_bad_data_time(text: str) -> None:
    with pytest.raises(ValueError, match="bad DataTime"):
        parse_data_time(text, CHINA)
    with pytest.raises(ValueError, match="bad DataTime"):
        _decode("2011", f"DataTime={text};a34004-Rtd=1")


def test_no_data_time() -> None:
    with pytest.raises(ValueError, match="no DataTime"):
        _decode("2011", "a34004-Rtd=1")


def test_entry_point_names_the_adapter() -> None:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "citylake.adapters"
    ]
    assert entry["hj212"] == "citylake.ingest.hj212.adapter:HJ212Source"
