"""NMEA 0183 through pynmea2: published sentences, the fix clock, quality,
and bad lines ending in a reason; the sample and config errors."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.nmea.adapter import NmeaSource
from citylake.ingest.nmea.codec import FixClock, SentenceError, decode, parse_line
from citylake.ingest.nmea.config import NmeaSourceConfig
from citylake_devstack.simulators.nmea import PUBLISHED_SENTENCES, epoch_sentences

REPO = Path(__file__).resolve().parents[2]
NOW = int(dt.datetime(1998, 9, 13, 20, 0, tzinfo=dt.UTC).timestamp() * 1000)


def readings(line: bytes, clock: FixClock | None = None) -> dict[str, tuple[float, str | None, int]]:
    decoded = decode(parse_line(line), clock or FixClock(), NOW)
    return {metric: (value, unit, quality) for metric, value, unit, quality in decoded.readings}


def test_published_gga() -> None:
    got = readings(PUBLISHED_SENTENCES["gga"])
    assert got["latitude"][0] == pytest.approx(-(19 + 29.045 / 60))  # 1929.045,S
    assert got["longitude"][0] == pytest.approx(24 + 10.506 / 60)  # 02410.506,E
    assert got["latitude"][1:] == got["longitude"][1:] == ("deg", 0)
    assert got["altitude"] == (100.0, "m", 0)
    assert (got["satellites"][0], got["hdop"][0], got["fix_quality"][0]) == (4.0, 2.6, 1.0)


def test_published_rmc_vtg_gsa() -> None:
    assert readings(PUBLISHED_SENTENCES["rmc"]) == {"speed": (0.0, "km/h", 0), "course": (360.0, "deg", 0)}
    assert readings(PUBLISHED_SENTENCES["vtg"]) == {"speed": (10.2, "km/h", 0), "course": (54.7, "deg", 0)}
    gsa = readings(PUBLISHED_SENTENCES["gsa"])
    assert gsa == {
        "fix_type": (3.0, None, 0),
        "pdop": (2.5, None, 0),
        "vdop": (2.1, None, 0),
        "satellites_used": (5.0, None, 0),
    }


def test_rmc_dates_the_gga_that_follows() -> None:
    clock = FixClock()
    rmc = decode(parse_line(PUBLISHED_SENTENCES["rmc"]), clock, NOW)
    assert rmc.ts_ms == int(dt.datetime(1998, 9, 13, 8, 18, 36, tzinfo=dt.UTC).timestamp() * 1000)
    gga = decode(parse_line(PUBLISHED_SENTENCES["gga"]), clock, NOW)
    assert gga.ts_ms == int(dt.datetime(1998, 9, 13, 18, 43, 53, 70000, tzinfo=dt.UTC).timestamp() * 1000)
    # VTG has no time: it is the talker's current epoch.
    assert decode(parse_line(PUBLISHED_SENTENCES["vtg"]), clock, NOW).ts_ms == gga.ts_ms


def test_undated_time_just_before_midnight_is_yesterday() -> None:
    just_after = int(dt.datetime(2026, 12, 2, 0, 0, 5, tzinfo=dt.UTC).timestamp() * 1000)
    line = b"$GPGGA,235959.00,3113.8240,N,12128.4220,E,1,09,0.9,12.5,M,8.1,M,,*"
    body = line[1:-1]
    checksum = 0
    for byte in body:
        checksum ^= byte
    decoded = decode(parse_line(line + b"%02X" % checksum), FixClock(), just_after)
    assert decoded.ts_ms == int(dt.datetime(2026, 12, 1, 23, 59, 59, tzinfo=dt.UTC).timestamp() * 1000)


def test_no_fix_and_void_are_bad_quality() -> None:
    # The simulator's sentences, pynmea2-rendered, with the fix flags flipped.
    when = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    gga, rmc, *_ = epoch_sentences(0, when)
    no_fix = _rechecksum(gga.replace(b",E,1,09,", b",E,0,00,"))
    assert readings(no_fix)["latitude"][2] == 2
    void = _rechecksum(rmc.replace(b",A,", b",V,", 1))
    assert readings(void)["speed"][2] == 2
    dead_reckoning = _rechecksum(gga.replace(b",E,1,09,", b",E,6,09,"))
    assert readings(dead_reckoning)["latitude"][2] == 1


def _rechecksum(line: bytes) -> bytes:
    body = line.strip().split(b"*")[0]
    checksum = 0
    for byte in body[1:]:
        checksum ^= byte
    return body + b"*%02X\r\n" % checksum


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (PUBLISHED_SENTENCES["gga"][:-2] + b"6C", "bad checksum: checksum does not match: 6C != 6D$"),
        (PUBLISHED_SENTENCES["gga"][:-3], "bad checksum"),  # no checksum: strict
        (b"hello world", "not a sentence"),
        ("$GPGGA,é*00".encode(), "not ASCII"),
        (b"$GPXYZ,1,2,3*50", "unknown sentence"),
    ],
)
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(SentenceError, match=reason):
        parse_line(line)


def test_sentences_not_taken_and_bad_fields() -> None:
    gsv = epoch_sentences(0, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))[-1]
    with pytest.raises(SentenceError, match="sentence not taken: GSV"):
        decode(parse_line(gsv), FixClock(), NOW)
    bad = _rechecksum(b"$GPGGA,184353.07,1929.045,S,02410.506,E,1,xx,2.6,100.00,M,-33.9,M,,0000")
    with pytest.raises(SentenceError, match="bad field"):
        decode(parse_line(bad), FixClock(), NOW)


def test_sample_and_config_errors() -> None:
    data: dict[str, Any] = yaml.safe_load((REPO / "ingest" / "nmea" / "sample.yaml").read_text())
    source = NmeaSource(NmeaSourceConfig.model_validate(data))
    [row] = source.known_devices(0)
    assert row["device_id"] == data["device_id"] and row["protocol"] == "nmea"
    base = {"name": "boat", "type": "nmea", "url": "tcp://127.0.0.1:10110", "device_id": "boat-1"}
    for overrides, message in (
        ({"url": "udp://127.0.0.1:10110"}, "expected tcp://host:port"),
        ({"device_id": ""}, "at least 1 character"),
        ({"backoff_s": 60}, "backoff_s must not exceed"),
        ({"max_line_bytes": 10}, "greater than or equal to 82"),
    ):
        with pytest.raises(ValidationError, match=message):
            NmeaSourceConfig.model_validate({**base, **overrides})


def test_entry_point_names_the_adapter() -> None:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "citylake.adapters"
    ]
    assert entry["nmea"] == "citylake.ingest.nmea.adapter:NmeaSource"
