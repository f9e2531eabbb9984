"""M-Bus codec: EN 13757-3's published example telegram decoded through
pymeterbus into readings, REQ_UD2 frames, and hostile replies (bad checksum,
wrong lengths, another meter, not RSP_UD, random corruption) ending in a
DecodeError or FrameError, never another exception."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest
import yaml

from citylake.ingest.mbus.adapter import MbusSource
from citylake.ingest.mbus.codec import (
    DecodeError,
    Record,
    decode_rsp_ud,
    find_frame,
    req_ud2,
    status_quality,
)
from citylake.ingest.mbus.config import MbusSourceConfig
from citylake.ingest.meter_link import FrameError
from citylake.schemas import Quality
from citylake_devstack.simulators.mbus import EN13757_EXAMPLE, build_telegram, long_frame

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = bytes.fromhex(EN13757_EXAMPLE)


def test_published_example_telegram() -> None:
    readout = decode_rsp_ud(EXAMPLE, 2)
    assert (readout.identification, readout.manufacturer, readout.version, readout.medium) == (
        "12345678", "PAD", 1, "water",
    )  # fmt: skip
    assert (readout.access_number, readout.status, readout.secondary_address) == (0x55, 0, "1234567824400107")
    assert readout.records == (
        Record("volume", 12.565, None, "m3", False),
        Record("volume_flow_max_s5", 0.113, None, "m3/h", False),
        Record("energy_t2_u1", 218370.0, None, "Wh", False),
    )


def test_req_ud2_and_frame_cutting() -> None:
    assert req_ud2(2, fcb=True) == bytes.fromhex("107b027d16")
    assert req_ud2(250, fcb=False) == bytes.fromhex("105bfa5516")
    assert find_frame(EXAMPLE + b"\x00\x00") == (0, len(EXAMPLE))
    assert find_frame(EXAMPLE[:-1]) is None
    assert find_frame(b"\xe5") == (0, 1)
    with pytest.raises(FrameError, match="the two L fields differ"):
        find_frame(bytes.fromhex("681f1e68"))
    with pytest.raises(FrameError, match="start byte 00 is none of E5, 10, 68"):
        find_frame(b"\x00\x68")
    with pytest.raises(FrameError, match="L field 2 below 3"):
        find_frame(bytes.fromhex("68020268"))


def test_status_byte_to_quality() -> None:
    assert [status_quality(s) for s in (0x00, 0x01, 0x04, 0x10, 0x08, 0x0C, 0xE0)] == [
        Quality.GOOD, Quality.UNCERTAIN, Quality.UNCERTAIN, Quality.UNCERTAIN, Quality.BAD, Quality.BAD,
        Quality.GOOD,  # bits 5-7 are the manufacturer's
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (EXAMPLE[:-2] + b"\x19\x16", "checksum 19, computed 18"),
        (bytes([0xE5]), "reply is not a long frame (starts e5)"),
        (long_frame(3, EXAMPLE[6:-2]), "reply from primary address 3, asked 2"),
        (long_frame(2, EXAMPLE[6:-2], control=0x53), "C field 53 is not RSP_UD (08)"),
        (
            long_frame(2, b"\x51" + EXAMPLE[7:-2]),
            "pymeterbus cannot decode it: Not a variable data long frame",
        ),
    ],
)
def test_replies_that_are_not_the_answer(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_rsp_ud(frame, 2)
    assert str(info.value) == message


def test_random_corruption_is_always_a_decode_error() -> None:
    """Flip, drop and insert bytes of valid telegrams (checksum fixed up so the
    decoder is reached): every outcome is a reading set or a DecodeError."""
    rng = random.Random(13757)
    spec = {"id": "70000005", "manufacturer": "KAM", "records": [["04", "06", 1], ["0C", "13", 12345678]]}
    seeds = [EXAMPLE, build_telegram(2, spec, 1)]
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(1500):
        user_data = bytearray(rng.choice(seeds)[6:-2])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(user_data))
            action = rng.random()
            if action < 0.6:
                user_data[at] = rng.randrange(256)
            elif action < 0.8 and len(user_data) > 2:
                del user_data[at]
            else:
                user_data.insert(at, rng.randrange(256))
        try:
            decode_rsp_ud(long_frame(2, bytes(user_data)), 2)
        except DecodeError:
            outcomes["rejected"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["rejected"] > 100 and outcomes["decoded"] > 100, outcomes


def test_sample_validates_and_entry_point_is_declared() -> None:
    data = yaml.safe_load((REPO / "ingest" / "mbus" / "sample.yaml").read_text())
    source = MbusSource(MbusSourceConfig.model_validate(data))
    assert source.validate() == [] and len(source.targets()) == len(data["meters"])
    adapters = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert adapters["citylake.adapters"]["mbus"] == "citylake.ingest.mbus.adapter:MbusSource"


def test_config_errors() -> None:
    base = {"name": "m", "type": "mbus", "url": "tcp://127.0.0.1:9001"}
    with pytest.raises(ValueError, match="primary_address"):
        MbusSourceConfig.model_validate({**base, "meters": [{"primary_address": 251}]})
    with pytest.raises(ValueError, match="primary address 3 twice"):
        MbusSourceConfig.model_validate({**base, "meters": [{"primary_address": 3}, {"primary_address": 3}]})
    with pytest.raises(ValueError, match="secondary_id"):
        MbusSourceConfig.model_validate({**base, "meters": [{"primary_address": 3, "secondary_id": "12ab"}]})
