"""S7 codec and config: STEP 7 addresses, read plans, big-endian decoding of
REAL/INT/DINT/WORD/DWORD/BYTE/BOOL (cross-checked with snap7.util, the
library's own encoders), hostile spans, the sample and the entry point."""

from __future__ import annotations

import importlib
import math
import struct
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from snap7.util import set_bool, set_dint, set_dword, set_int, set_real, set_word

from citylake.ingest.s7.adapter import S7Source
from citylake.ingest.s7.codec import ReadSpan, TagAddress, UnsupportedValue, decode, parse_address, plan_reads
from citylake.ingest.s7.config import S7SourceConfig

REPO = Path(__file__).resolve().parents[2]


def test_addresses() -> None:
    assert parse_address("DB1.DBD0", "REAL") == TagAddress("DB", 1, 0, None, "D")
    assert parse_address("db12.dbx10.3", "BOOL") == TagAddress("DB", 12, 10, 3, "X")
    assert parse_address("MW20", "WORD") == TagAddress("MK", 0, 20, None, "W")
    assert parse_address("M2.1", "BOOL") == TagAddress("MK", 0, 2, 1, "X")


@pytest.mark.parametrize(
    ("address", "type_name", "reason"),
    [
        ("DB1.DBW0", "REAL", "is W-wide; REAL needs a D address"),
        ("DB1.DBX0", "BOOL", "a bit address"),
        ("DB1.DBD0.1", "REAL", "a bit address"),
        ("DB1.DBX0.8", "BOOL", "bit 8 is beyond 7"),
        ("DB0.DBD0", "REAL", "numbered from 1"),
        ("I0.0", "BOOL", "expected DB<n>"),
        ("DB1.DBD0", "LREAL", "expected one of"),
    ],
)
def test_bad_addresses_are_named(address: str, type_name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_address(address, type_name)


def test_plan_merges_near_tags_of_one_area() -> None:
    addresses = [
        parse_address(a, t)
        for a, t in [
            ("DB1.DBD0", "REAL"),
            ("DB1.DBX10.3", "BOOL"),
            ("DB1.DBD100", "REAL"),
            ("MW20", "WORD"),
            ("DB2.DBW0", "INT"),
        ]
    ]
    assert plan_reads(addresses, max_gap=32) == [
        ReadSpan("DB", 1, 0, 11),
        ReadSpan("DB", 1, 100, 4),
        ReadSpan("DB", 2, 0, 2),
        ReadSpan("MK", 0, 20, 2),
    ]
    assert plan_reads(addresses, max_gap=100)[0] == ReadSpan("DB", 1, 0, 104)


def test_decoding_matches_snap7s_own_encoding() -> None:
    data = bytearray(20)
    set_real(data, 0, 21.3)
    set_int(data, 4, -7)
    set_dint(data, 6, -123456)
    set_bool(data, 10, 3, True)
    set_word(data, 16, 65535)
    set_dword(data, 12, 4_000_000_000)
    assert bytes(data[0:4]) == struct.pack(">f", 21.3)  # big-endian IEEE 754, as S7 stores it
    cases = [
        ("DB1.DBD0", "REAL", 21.3),
        ("DB1.DBW4", "INT", -7.0),
        ("DB1.DBD6", "DINT", -123456.0),
        ("DB1.DBX10.3", "BOOL", 1.0),
        ("DB1.DBX10.2", "BOOL", 0.0),
        ("DB1.DBW16", "WORD", 65535.0),
        ("DB1.DBD12", "DWORD", 4_000_000_000.0),
        ("DB1.DBB4", "BYTE", 255.0),
    ]
    for address, type_name, expected in cases:
        assert decode(bytes(data), 0, parse_address(address, type_name), type_name) == expected


def test_hostile_spans_and_values() -> None:
    with pytest.raises(UnsupportedValue, match="do not hold byte 6"):
        decode(bytes(8), 0, parse_address("DB1.DBD6", "REAL"), "REAL")
    with pytest.raises(UnsupportedValue, match="do not hold byte 2"):
        decode(bytes(8), 4, parse_address("DB1.DBW2", "INT"), "INT")
    with pytest.raises(UnsupportedValue, match="not a finite number"):
        decode(struct.pack(">f", math.nan), 0, parse_address("DB1.DBD0", "REAL"), "REAL")


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "ingest" / "s7" / "sample.yaml").read_text())
    return data


def test_sample_validates_and_entry_point_names_the_adapter() -> None:
    config = S7SourceConfig.model_validate(sample())
    assert (config.host, config.port, config.slot) == ("10.20.0.31", 102, 1)
    assert [s.size for s in S7Source(config).poller.spans] == [11, 20]  # DB1 0..10, M 2..21
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, name = project["project"]["entry-points"]["citylake.adapters"]["s7"].partition(":")
    assert getattr(importlib.import_module(module), name) is S7Source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "tcp://10.20.0.31:102"}, "expected s7://"),
        ({"tags": [{"address": "DB1.DBW0", "type": "REAL", "metric": "a"}]}, "REAL needs a D address"),
        (
            {
                "tags": [
                    {"address": "DB1.DBD0", "type": "REAL", "metric": "a"},
                    {"address": "DB1.DBD4", "type": "REAL", "metric": "a"},
                ]
            },
            "metric a configured twice",
        ),
        ({"slot": 32}, "less than or equal to 31"),
    ],
)
def test_mistakes_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        S7SourceConfig.model_validate(sample() | change)
