"""HJ 212 adapter with the real IngestRunner, over real TCP sockets on
127.0.0.1. There is no maintained open-source HJ 212 station to run as the
peer: the stations are the project's simulator (citylake_devstack.simulators
.hj212), sending codec-built frames and the standard's published frame."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from citylake.ingest.hj212.adapter import HJ212Source
from citylake.ingest.hj212.codec import FrameSplitter, decode_frame, encode_packet
from citylake.ingest.hj212.config import HJ212SourceConfig
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import free_port
from citylake_devstack.simulators.hj212 import STANDARD_FRAMES, run_station, station_mn
from tests.landing_rows import landed

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[IngestRunner, DataLayout, int]]:
    port = free_port()
    config = HJ212SourceConfig.model_validate(
        {
            "name": "eco",
            "type": "hj212",
            "url": f"tcp://127.0.0.1:{port}",
            "password": "123456",
            "max_errors_per_connection": 5,
            "stations": [{"mn": station_mn(0), "name": "Gulou air", "district": "Gulou"}],
        }
    )
    layout = DataLayout(tmp_path / "data")
    runner = IngestRunner([HJ212Source(config)], layout, "test-site", FlushPolicy(max_age_s=0.2))
    await runner.start()
    yield runner, layout, port
    await runner.stop()


async def test_stations_upload_and_are_answered_after_landing(
    server: tuple[IngestRunner, DataLayout, int],
) -> None:
    runner, layout, port = server
    results = await asyncio.gather(*(run_station("127.0.0.1", port, station_mn(i), 3, 0) for i in range(3)))
    assert [(r.sent, r.acked) for r in results] == [(3, 3)] * 3
    # No waiting: every 9014 was sent after the landing commit of its rows.
    readings = landed(layout, "readings")
    assert len(readings) == 3 * 3 * 3  # stations x packets x (pm25, so2, temperature)
    by_metric = {(r["device_id"], r["metric"]) for r in readings}
    assert (station_mn(2), "pm25") in by_metric and (station_mn(0), "temperature") in by_metric
    units = {r["metric"]: r["unit"] for r in readings}
    assert units == {"pm25": "ug/m3", "so2": "mg/m3", "temperature": "degC"}
    assert {r["quality"] for r in readings} == {0}
    assert {r["value"] for r in readings if r["metric"] == "temperature"} == {21.4}
    assert {r["source"] for r in readings} == {"eco"}

    await asyncio.sleep(0.6)  # the offline events of the closed connections land
    events = landed(layout, "device_events")
    kinds = sorted((e["device_id"], e["kind"]) for e in events)
    assert kinds == sorted([(station_mn(i), k) for i in range(3) for k in ("online", "offline")])
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert devices[station_mn(0)]["name"] == "Gulou air"  # configured, landed at start
    assert devices[station_mn(1)]["type"] == "air_quality_station"  # ST 22, first sight
    assert devices[station_mn(1)]["protocol"] == "hj212"
    source = runner.sources[0]
    assert source.counters()["acks_sent"] == 9


async def test_hostile_frames_are_rejected_counted_and_never_answered(
    server: tuple[IngestRunner, DataLayout, int],
) -> None:
    runner, layout, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    now = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8)))
    good = encode_packet(
        f"{now:%Y%m%d%H%M%S}000",
        "32",
        "2061",
        "123456",
        "STATIONW1",
        5,
        f"DataTime={now:%Y%m%d%H}0000;w01018-Avg=40.5,w01018-Cou=2.5,w01018-Flag=T;w21003-Avg=x",
    )
    bad_crc = good[:-6] + b"0000\r\n"
    wrong_pw = encode_packet(None, "32", "2061", "000000", "STATIONW1", 5, "DataTime=20261201080000")
    # The standard's frame is CN 1062 (an answer to a platform query we never sent).
    writer.write(bad_crc + b"garbage" + wrong_pw + STANDARD_FRAMES["rtd_interval"] + b"##99" + good)
    await writer.drain()
    splitter = FrameSplitter(4096)
    async with asyncio.timeout(10):
        answers = [decode_frame(f) for f in splitter.feed(await reader.read(4096)) if isinstance(f, bytes)]
    assert [(a.cn, a.mn) for a in answers] == [("9014", "STATIONW1")]  # the good frame only
    readings = [r for r in landed(layout, "readings") if r["device_id"] == "STATIONW1"]
    assert sorted((r["metric"], r["value"], r["unit"]) for r in readings) == [
        ("cod_1h_avg", 40.5, "mg/L"),
        ("cod_1h_cou", 2.5, "kg"),
    ]
    reasons = sorted(r["reason"].split(":")[0] for r in landed(layout, "rejected"))
    assert reasons == [
        "CRC mismatch",
        "bad data length",  # "##99##00..."
        "garbage before ##",  # "garbage"
        "garbage before ##",  # the "99" left after resynchronising
        "not a number",
        "wrong PW",  # PW=000000
        "wrong PW",  # the standard's frame has PW=100000
    ]
    alarms = [e for e in landed(layout, "device_events") if e["kind"] == "alarm"]
    assert orjson.loads(alarms[0]["attributes"])["code"] == "w01018"

    # A connection that sends only garbage is dropped after max_errors_per_connection.
    # Each write is two errors ("#x" is no length; then bytes with no ##).
    for _ in range(3):
        writer.write(b"###" + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        # Closed by the server; a reset when our last bytes were left unread.
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read(4096) == b""
    writer.close()
    assert runner.sources[0].counters()["connections_dropped"] == 1
