"""JT/T 808 adapter with the real IngestRunner over real TCP on 127.0.0.1.
No maintained open-source JT/T 808 terminal exists to run as the peer: the
terminals are the project's simulator (citylake_devstack.simulators.jt808),
and a maintained implementation's published frames are replayed byte for byte."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from citylake.ingest.jt808 import messages as m
from citylake.ingest.jt808.adapter import JT808Source
from citylake.ingest.jt808.config import JT808SourceConfig
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import free_port
from citylake_devstack.simulators.jt808 import (
    PUBLISHED_FRAMES,
    Terminal,
    auth_body,
    location_body,
    run_terminal,
    terminal_phone,
)
from tests.landing_rows import landed

pytestmark = pytest.mark.integration
SECRET = "a-long-random-secret-for-tests"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[IngestRunner, DataLayout, int]]:
    port = free_port()
    config = JT808SourceConfig.model_validate(
        {
            "name": "fleet",
            "type": "jt808",
            "url": f"tcp://127.0.0.1:{port}",
            "auth_secret": SECRET,
            "max_errors_per_connection": 5,
            "terminals": [{"phone": "13912344329", "plate": "苏A12345", "device_type": "bus"}],
        }
    )
    layout = DataLayout(tmp_path / "data")
    runner = IngestRunner([JT808Source(config)], layout, "test-site", FlushPolicy(max_age_s=0.2))
    await runner.start()
    yield runner, layout, port
    await runner.stop()


async def test_terminals_register_authenticate_and_report(
    server: tuple[IngestRunner, DataLayout, int],
) -> None:
    runner, layout, port = server
    results = await asyncio.gather(
        run_terminal("127.0.0.1", port, terminal_phone(1), 3, 0, version=1),
        run_terminal("127.0.0.1", port, terminal_phone(2), 3, 0, version=None),  # a 2013 terminal
    )
    assert [(r.sent, r.acked) for r in results] == [(3, 3), (3, 3)]
    # No waiting: every 0x8001 was sent after the landing commit of its rows.
    readings = landed(layout, "readings")
    ids = {r["device_id"] for r in readings}
    assert ids == {terminal_phone(1), terminal_phone(2)}  # BCD padding stripped, both versions
    mine = sorted(
        (r for r in readings if r["device_id"] == terminal_phone(1)), key=lambda r: (r["ts"], r["metric"])
    )
    metrics = {r["metric"]: r for r in mine}
    assert set(metrics) == {
        "latitude",
        "longitude",
        "altitude",
        "speed",
        "direction",
        "acc",
        "mileage",
        "signal_strength",
        "gnss_satellites",
    }
    assert metrics["speed"]["unit"] == "km/h" and 30.0 <= metrics["speed"]["value"] <= 35.0
    assert metrics["latitude"]["unit"] == "deg" and 32.05 < metrics["latitude"]["value"] < 32.07
    assert metrics["mileage"]["unit"] == "km" and metrics["gnss_satellites"]["value"] == 11.0
    assert {r["quality"] for r in mine} == {0}
    assert len(mine) == 3 * 9

    await asyncio.sleep(0.6)  # the offline events of the closed connections land
    kinds = sorted((e["device_id"], e["kind"]) for e in landed(layout, "device_events"))
    assert kinds == sorted(
        (terminal_phone(i), k) for i in (1, 2) for k in ("register", "online", "keepalive", "offline")
    )
    register = next(
        e
        for e in landed(layout, "device_events")
        if e["kind"] == "register" and e["device_id"] == terminal_phone(2)
    )
    assert orjson.loads(register["attributes"])["version"] == "2013"
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert devices["13912344329"]["name"] == "苏A12345"  # configured, landed at start
    assert devices[terminal_phone(1)]["name"] == f"苏A{terminal_phone(1)[-5:]}"  # from the registration
    assert devices[terminal_phone(1)]["civil_code"] == "320100"
    assert runner.sources[0].counters()["replies_sent"] >= 2 * (3 + 3)


async def test_hostile_frames_are_refused_and_published_frames_land(
    server: tuple[IngestRunner, DataLayout, int],
) -> None:
    runner, layout, port = server
    source = runner.sources[0]
    assert isinstance(source, JT808Source)
    terminal = Terminal("00000000013912344329", 1)  # the published phone
    await terminal.connect("127.0.0.1", port)
    # Before authentication a location is refused (0x8001 result 1), not landed.
    refused = await terminal.request(m.LOCATION, location_body(0, dt.datetime.now(dt.UTC)))
    assert refused.body[4] == m.RESULT_FAILED
    wrong = await terminal.request(m.AUTHENTICATE, auth_body("not-the-code", 1))
    assert wrong.body[4] == m.RESULT_FAILED
    ok = await terminal.request(m.AUTHENTICATE, auth_body(source.auth_code("13912344329"), 1))
    assert ok.body[4] == m.RESULT_OK
    unsupported = await terminal.request(0x0900, b"\x01hello")
    assert unsupported.body[4] == m.RESULT_UNSUPPORTED
    assert terminal.writer is not None
    # The published location and batch, byte for byte, after garbage and a bad check code.
    bad = bytearray(PUBLISHED_FRAMES["location_2019"])
    bad[-2] ^= 0xFF
    terminal.writer.write(
        b"junk" + bytes(bad) + PUBLISHED_FRAMES["location_2019"] + PUBLISHED_FRAMES["batch_2019"]
    )
    await terminal.writer.drain()
    async with asyncio.timeout(10):
        while len([a for a in terminal.pending if a.body[2:4] in (b"\x02\x00", b"\x07\x04")]) < 2:
            await terminal._read()
    readings = [r for r in landed(layout, "readings") if r["device_id"] == "13912344329"]
    latitudes = sorted(r["value"] for r in readings if r["metric"] == "latitude")
    assert latitudes == [-31.234567, 31.000562, 31.000563]
    quality = {r["value"]: r["quality"] for r in readings if r["metric"] == "latitude"}
    assert quality[-31.234567] == 2  # GNSS antenna alarms in the published frame
    alarms = [orjson.loads(e["attributes"]) for e in landed(layout, "device_events") if e["kind"] == "alarm"]
    by_bits = {a["alarm"]: a["names"] for a in alarms}
    assert set(by_bits) == {111, 1}  # the location's flags, then the batch's (emergency only)
    assert "gnss_antenna_cut" in by_bits[111] and by_bits[1] == ["emergency"]
    reasons = sorted(r["reason"].split(":")[0] for r in landed(layout, "rejected"))
    assert reasons == [
        "check code mismatch",
        "frame too short",  # "junk": after a frame's end flag, bytes up to the next flag are a frame
        "not authenticated",
        "unsupported message",
        "wrong auth code",
    ]
    await terminal.close()
