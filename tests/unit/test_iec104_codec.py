"""IEC 60870-5-104 codec and config: quality descriptor bits, measurands by
type, APDU framing on frames as IEC 60870-5-104 defines them (U frames from
the standard, I frames as lib60870 sent them to c104's client), their
hostile variants, the sample and the entry point."""

from __future__ import annotations

import importlib
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.iec104.adapter import Iec104Source
from citylake.ingest.iec104.codec import (
    TYPE_IDS,
    UnsupportedValue,
    measurand,
    parse_apdu,
    quality_flags,
    quality_of,
    reading,
)
from citylake.ingest.iec104.config import Iec104SourceConfig

REPO = Path(__file__).resolve().parents[2]

# U-format frames of IEC 60870-5-104 5.3: STARTDT act/con, TESTFR act/con.
STARTDT_ACT = bytes.fromhex("680407000000")
STARTDT_CON = bytes.fromhex("68040b000000")
TESTFR_ACT = bytes.fromhex("680443000000")
# I-format frames lib60870's server sent (recorded at c104's client): a
# short float 230.5 (M_ME_NC_1, COT 20 interrogated, CA 47, IOA 1001) and a
# C_IC_NA_1 activation confirmation (type 100, COT 7).
SHORT_FLOAT = bytes.fromhex("6812080002000d8114002f00e903000080664300")
GI_CON = bytes.fromhex("680e00000200640107002f0000000014")
S_FRAME = bytes.fromhex("680401000a00")


def test_quality_descriptor_bits() -> None:
    assert quality_flags(0x00) == []
    assert quality_flags(0x80 | 0x40) == ["NT", "IV"]
    assert quality_flags(0x01 | 0x10 | 0x20) == ["OV", "BL", "SB"]
    assert quality_of(0x00) == 0
    assert quality_of(0x80) == 2  # IV
    assert quality_of(0x80 | 0x40) == 2
    for bit in (0x01, 0x10, 0x20, 0x40):  # OV, BL, SB, NT
        assert quality_of(bit) == 1


def test_measurands_by_type() -> None:
    assert measurand("M_ME_NC_1", 230.5) == 230.5
    assert measurand("M_ME_TF_1", 50.0099983215332) == 50.01  # float32 as sent
    assert measurand("M_ME_NB_1", -120, scale=0.1) == pytest.approx(-12.0)
    assert measurand("M_ME_TE_1", 100, scale=2, offset=-50) == 150.0
    assert measurand("M_ME_NA_1", 0.5, scale=200) == 100.0
    assert measurand("M_SP_NA_1", True) == 1.0
    assert measurand("M_SP_TB_1", False) == 0.0
    assert measurand("M_DP_NA_1", 2) == 2.0
    assert measurand("M_DP_TB_1", 3) == 3.0
    assert set(TYPE_IDS.values()) == {1, 3, 9, 11, 13, 30, 31, 34, 35, 36}


@pytest.mark.parametrize(
    ("type_name", "value", "reason"),
    [
        ("M_ME_NC_1", math.nan, "not a finite number"),
        ("M_ME_NC_1", "230", "not a number"),
        ("M_ME_NB_1", 40000, "not a 16-bit scaled value"),
        ("M_ME_NA_1", 1.5, "outside the normalized range"),
        ("M_SP_NA_1", 2, "not a single point"),
        ("M_DP_NA_1", 4, "not a double point state"),
        ("M_DP_NA_1", True, "not a double point state"),
        ("C_SC_NA_1", 1, "not a monitoring type"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(type_name: str, value: object, reason: str) -> None:
    with pytest.raises(UnsupportedValue, match=reason):
        measurand(type_name, value)


def test_frames_parse_as_the_standard_says() -> None:
    for frame in (STARTDT_ACT, STARTDT_CON, TESTFR_ACT):
        assert parse_apdu(frame).format == "U"
    assert parse_apdu(S_FRAME).format == "S"
    apdu = parse_apdu(SHORT_FLOAT)
    assert (apdu.format, apdu.type_id, apdu.count, apdu.cot, apdu.common_address, apdu.first_ioa) == (
        "I",
        13,
        1,
        20,
        47,
        1001,
    )
    con = parse_apdu(GI_CON)
    assert (con.type_id, con.cot, con.negative, con.first_ioa) == (100, 7, False, 0)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x68\x04", "truncated APDU"),
        (b"\x69" + STARTDT_ACT[1:], "APDU start 0x69 is not 0x68"),
        (b"\x68\xff" + bytes(255), "oversized APDU: length 255"),
        (SHORT_FLOAT[:-1], "APDU length 18 does not match the frame's 17 octets"),
        (bytes.fromhex("680403000000"), "unknown U-format function 0x03"),
        (bytes.fromhex("68050700000000"), "U-format APDU of length 5"),
        (bytes.fromhex("6806000002000d01"), "truncated ASDU"),
    ],
)
def test_hostile_frames_are_named(frame: bytes, reason: str) -> None:
    with pytest.raises(UnsupportedValue, match=reason):
        parse_apdu(frame)


def test_reading_row() -> None:
    row = reading("bay-1", "voltage", "M_ME_NC_1", 111.25, 0xC0, "kV", 1000)
    assert row == {
        "device_id": "bay-1",
        "metric": "voltage",
        "ts": 1000,
        "value": 111.25,
        "text": None,
        "unit": "kV",
        "quality": 2,
    }


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "ingest" / "iec104" / "sample.yaml").read_text())
    return data


def test_sample_validates_and_names_its_devices() -> None:
    config = Iec104SourceConfig.model_validate(sample())
    assert (config.host, config.port) == ("10.30.0.21", 2404)
    rows = Iec104Source(config).known_devices(1_764_072_000_000)
    assert [(r["device_id"], r["protocol"]) for r in rows] == [
        ("east-110kv-bay-1", "iec104"),
        ("east-110kv-dis-1", "iec104"),
    ]


def test_entry_point_in_pyproject_names_the_adapter() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, name = project["project"]["entry-points"]["citylake.adapters"]["iec104"].partition(":")
    assert getattr(importlib.import_module(module), name) is Iec104Source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "tcp://10.30.0.21:2404"}, "expected iec104://"),
        ({"metadata": {"nobody": {"name": "x"}}}, "no station or point has as device_id"),
        (
            {"stations": [{"common_address": 0, "points": [{"ioa": 1, "type": "M_ME_NC_1", "metric": "a"}]}]},
            "greater than or equal to 1",
        ),
        (
            {"stations": [{"common_address": 1, "points": [{"ioa": 1, "type": "C_SC_NA_1", "metric": "a"}]}]},
            "M_SP_NA_1",
        ),
        (
            {
                "stations": [
                    {"common_address": 1, "points": [{"ioa": 16777216, "type": "M_ME_NC_1", "metric": "a"}]}
                ]
            },
            "less than or equal to 16777215",
        ),
        (
            {
                "stations": [
                    {
                        "common_address": 1,
                        "points": [
                            {"ioa": 1, "type": "M_ME_NC_1", "metric": "a"},
                            {"ioa": 1, "type": "M_ME_NC_1", "metric": "b"},
                        ],
                    }
                ]
            },
            "ioa 1 configured twice",
        ),
    ],
)
def test_mistakes_are_named(change: dict[str, Any], message: str) -> None:
    data = sample() | change
    if "stations" in change:
        data["metadata"] = {}
    with pytest.raises(ValidationError, match=message):
        Iec104SourceConfig.model_validate(data)
