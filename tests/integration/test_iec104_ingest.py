"""IEC 60870-5-104 adapter against a real c104 server (lib60870) in its own
process (the ``citylake simulate iec104`` RTU): general interrogation,
spontaneous measurands of five types with their quality descriptors and a
CP56Time2a time tag, unconfigured IOAs as counted rejects, connection state
as device events; and a hostile RTU whose malformed frames end in a counted
disconnect, never a crash."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake.config import load_config
from citylake.ingest import registry
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.iec104.adapter import Iec104Source
from citylake.ingest.iec104.config import Iec104SourceConfig
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack import ComponentUnavailable
from citylake_devstack.process import ManagedProcess, free_port
from citylake_devstack.simulators.iec104 import start_iec104_rtu
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TIME_TAG_MS = 1_764_072_000_000  # the simulator's default time tag of step 3
EXTRA_IOAS = 200


@pytest.fixture
def rtu(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    try:
        process, url = start_iec104_rtu(tmp_path / "rtu", extra_ioas=EXTRA_IOAS, scenario_delay_s=1.5)
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start the IEC 104 RTU: {exc}", pytrace=False)
    yield process, url
    process.stop()


@pytest.fixture(autouse=True)
def iec104_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for bacnet: the shared venv's metadata predates pyproject's new line
    # (tests/unit/test_iec104_codec.py checks it names Iec104Source).
    if "iec104" not in registry.adapter_types():
        original = registry.adapter_class
        monkeypatch.setattr(
            registry, "adapter_class", lambda name: Iec104Source if name == "iec104" else original(name)
        )


def metric_rows(layout: DataLayout, metric: str) -> list[dict[str, Any]]:
    rows = [r for r in landed(layout, "readings") if r["metric"] == metric]
    return sorted(rows, key=lambda r: r["ingest_ts"])


def iec104_source(url: str) -> dict[str, object]:
    return {
        "name": "substation",
        "type": "iec104",
        "url": url,
        "timeout_s": 5,
        "interrogation_interval_s": 0,
        "stations": [
            {
                "common_address": 47,
                "device_id": "bay-110kv-1",
                "points": [
                    {"ioa": 1001, "type": "M_ME_NC_1", "metric": "bus_voltage", "unit": "kV"},
                    {"ioa": 1002, "type": "M_ME_NB_1", "metric": "active_power", "unit": "MW", "scale": 0.1},
                    {"ioa": 1003, "type": "M_ME_TF_1", "metric": "frequency", "unit": "Hz"},
                    {"ioa": 2001, "type": "M_SP_NA_1", "metric": "breaker_closed"},
                    {"ioa": 2002, "type": "M_DP_NA_1", "metric": "disconnector", "device_id": "dis-110kv-1"},
                ],
            }
        ],
        "metadata": {"bay-110kv-1": {"name": "110 kV bay 1", "device_type": "feeder-bay"}},
    }


def values(layout: DataLayout, metric: str) -> list[tuple[float, int]]:
    return [(r["value"], r["quality"]) for r in metric_rows(layout, metric)]


async def test_interrogation_spontaneous_quality_time_tags_and_state(
    rtu: tuple[ManagedProcess, str], city_config: Callable[..., Path]
) -> None:
    process, url = rtu
    loaded = load_config(city_config(sources=[iec104_source(url)]))
    layout = DataLayout(loaded.config.data_dir)
    runner = IngestRunner(build_sources(loaded), layout, loaded.config.site)
    source = runner.sources[0]
    assert isinstance(source, Iec104Source)
    await runner.start()
    try:
        await wait_until(source.is_up, 15)
        # The scenario's last step: voltage back to 110.75, good.
        await wait_until(
            lambda: (110.75, 0) in values(layout, "bus_voltage"),
            15,
            state=lambda: (values(layout, "bus_voltage"), source.counters(), process.log_tail()),
        )
        await wait_until(lambda: len(metric_rows(layout, "disconnector")) >= 2, 15)
        process.stop()
        await wait_until(lambda: not source.is_up(), 10)
        await asyncio.sleep(0.6)  # past a flush
    finally:
        await runner.stop()

    # Interrogated values first (once per interrogation: a second one follows
    # when the adapter had to send STARTDT again), then the spontaneous
    # scenario in order, each with its quality.
    def interrogated_then(
        metric: str, interrogated: tuple[float, int], *spontaneous: tuple[float, int]
    ) -> None:
        got = values(layout, metric)
        head, tail = got[: len(got) - len(spontaneous)], got[len(got) - len(spontaneous) :]
        assert head and set(head) == {interrogated}, got
        assert tail == list(spontaneous), got

    interrogated_then("bus_voltage", (110.5, 0), (111.25, 2), (110.75, 0))  # IV|NT: bad
    power = values(layout, "active_power")
    assert power[0][0] == pytest.approx(-12.0) and power[0][1] == 0
    assert power[-1][0] == pytest.approx(3276.7) and power[-1][1] == 1  # raw 32767 x 0.1, OV: uncertain
    interrogated_then("frequency", (49.98, 0), (50.01, 0))
    # M_ME_TF_1's CP56Time2a is the event time.
    assert int(metric_rows(layout, "frequency")[-1]["ts"].timestamp() * 1000) == TIME_TAG_MS
    interrogated_then("breaker_closed", (1.0, 0), (0.0, 1))  # BL: uncertain
    interrogated_then("disconnector", (2.0, 0), (0.0, 1))  # DPI on, then intermediate with SB
    assert {r["unit"] for r in metric_rows(layout, "bus_voltage")} == {"kV"}
    assert {r["device_id"] for r in metric_rows(layout, "disconnector")} == {"dis-110kv-1"}
    assert {r["device_id"] for r in metric_rows(layout, "frequency")} == {"bay-110kv-1"}

    # The 200 unconfigured IOAs the RTU reports on interrogation: counted rejects, never points.
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    unconfigured = [
        r for r in reasons if r.startswith(("unconfigured information object", "unexpected message"))
    ]
    assert unconfigured and len(unconfigured) == len(reasons)
    counts = source.counters()
    assert counts["unknown_ioa"] + counts["unexpected_messages"] == len(unconfigured)

    events = sorted(landed(layout, "device_events"), key=lambda e: e["ts"])
    assert [e["kind"] for e in events if e["device_id"] == "bay-110kv-1"] == ["online", "offline"]
    assert json.loads(events[0]["attributes"])["rtu"] == url
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert set(devices) == {"bay-110kv-1", "dis-110kv-1"}
    assert devices["bay-110kv-1"]["name"] == "110 kV bay 1"
    assert devices["bay-110kv-1"]["protocol"] == "iec104"
    assert json.loads(devices["dis-110kv-1"]["attributes"])["ioas"] == [2002]


STARTDT_CON = bytes.fromhex("68040b000000")  # U-format STARTDT con (IEC 60870-5-104 5.3)


async def test_hostile_rtu_frames_end_in_counted_disconnects_and_check_names_the_rtu(
    city_config: Callable[..., Path],
) -> None:
    hostile = [
        bytes.fromhex("690400000000"),  # start octet 0x69
        bytes.fromhex("68ff") + bytes(255),  # length 255 > 253
    ]
    received: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(20)
        port = server.getsockname()[1]

        def play() -> None:
            for frame in hostile:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(5)
                    received.append(conn.recv(64))
                    conn.sendall(STARTDT_CON)
                    time.sleep(0.2)
                    conn.sendall(frame)
                    time.sleep(0.5)

        player = threading.Thread(target=play, daemon=True)
        player.start()
        loaded = load_config(city_config(sources=[iec104_source(f"iec104://127.0.0.1:{port}")]))
        layout = DataLayout(loaded.config.data_dir)
        runner = IngestRunner(build_sources(loaded), layout, loaded.config.site)
        source = runner.sources[0]
        await runner.start()
        try:
            await wait_until(lambda: source.counters()["disconnects"] >= 1, 15)
            await asyncio.sleep(0.6)  # past a flush
        finally:
            await runner.stop()
        player.join(1)
    assert received[0] == bytes.fromhex("680407000000")  # the adapter's STARTDT act
    kinds = [e["kind"] for e in sorted(landed(layout, "device_events"), key=lambda e: e["ts"])]
    assert kinds[:2] == ["online", "offline"]
    assert landed(layout, "readings") == []

    nobody = f"iec104://127.0.0.1:{free_port()}"
    config = iec104_source(nobody) | {"timeout_s": 1}
    with pytest.raises(SourceUnavailable, match=f"no connection to {nobody} within 1"):
        await Iec104Source(Iec104SourceConfig.model_validate(config)).check()
