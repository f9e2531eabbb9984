"""NMEA 0183 adapter with the real IngestRunner against a talker process on
127.0.0.1 (the talker of ``citylake simulate nmea``, sentences rendered by pynmea2): the
adapter is started before the talker (backoff), lands readings, rejects bad
lines, and reconnects after the talker closes the connection."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from citylake.ingest.nmea.adapter import NmeaSource
from citylake.ingest.nmea.config import NmeaSourceConfig
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import ManagedProcess, free_port
from tests.landing_rows import landed

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def talker(port: int, log: Path) -> ManagedProcess:
    # The talker of `citylake simulate nmea`, without the CLI's imports. Each
    # connection gets 10 epochs, then the talker closes it: the adapter reconnects.
    argv = [sys.executable, "-m", "citylake_devstack.simulators.nmea", "--port", str(port)]
    argv += ["--rate", "20", "--epochs", "10", "--hostile"]
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return ManagedProcess("nmea-talker", argv, log, env=env, cwd=REPO)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


async def wait(check: Any, timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not check():  # noqa: ASYNC110 - polls the adapter's counters
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"no {what} after {timeout_s:g} s") from None


async def test_talker_readings_rejects_and_reconnect(tmp_path: Path, port: int) -> None:
    config = NmeaSourceConfig.model_validate(
        {
            "name": "boat",
            "type": "nmea",
            "url": f"tcp://127.0.0.1:{port}",
            "device_id": "boat-07-gps",
            "backoff_s": 0.1,
            "max_backoff_s": 0.5,
            "device_type": "boat_gps",
        }
    )
    source = NmeaSource(config)
    layout = DataLayout(tmp_path / "data")
    runner = IngestRunner([source], layout, "test-site", FlushPolicy(max_age_s=0.2))
    await runner.start()  # nobody listens yet: the adapter retries with backoff
    try:
        await asyncio.sleep(0.5)
        assert not source.is_up()
        process = talker(port, tmp_path / "talker.log").start()
        try:
            await asyncio.to_thread(process.wait_port, port, 30)
            await wait(lambda: source.connects >= 2, 20, "a reconnect after the talker closed")
        finally:
            process.stop()
        await wait(lambda: not source.is_up(), 10, "the disconnect")
        await asyncio.sleep(0.5)
    finally:
        await runner.stop()

    readings = landed(layout, "readings")
    assert {r["device_id"] for r in readings} == {"boat-07-gps"}
    units = {r["metric"]: r["unit"] for r in readings}
    assert units["latitude"] == "deg" and units["speed"] == "km/h" and units["altitude"] == "m"
    assert {"latitude", "longitude", "course", "fix_type", "pdop", "satellites"} <= set(units)
    latitudes = [r["value"] for r in readings if r["metric"] == "latitude"]
    assert all(31.23 < v < 31.30 for v in latitudes)
    assert {r["quality"] for r in readings} == {0}
    reasons = {r["reason"].split(":")[0] for r in landed(layout, "rejected")}
    assert reasons == {"bad checksum", "not ASCII", "line too long"}
    assert source.counters()["sentences_ignored"] >= 3  # GSV, counted and dropped
    events = [
        (e["kind"], orjson.loads(e["attributes"]).get("reason")) for e in landed(layout, "device_events")
    ]
    kinds = [k for k, _ in events]
    assert kinds.count("online") >= 2 and kinds.count("offline") == kinds.count("online")
    devices = landed(layout, "devices")
    assert devices[0]["device_id"] == "boat-07-gps" and devices[0]["type"] == "boat_gps"
