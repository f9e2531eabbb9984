"""DL/T 645 adapter against the simulated meter line (a separate process that
answers over TCP, like a transparent serial server, and over one end of a
socat pty pair), through the real IngestRunner into landing.

No open-source DL/T 645 meter or gateway process exists to test against; the
peer is our simulator speaking the framing cross-checked in the unit tests,
over a real socket and a real pty (see ingest/dlt645/README.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake.ingest.dlt645.adapter import Dlt645Source
from citylake.ingest.dlt645.config import Dlt645SourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.process import ManagedProcess
from citylake_devstack.simulators.line import read_request_log, start_line_simulator, start_pty_pair
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

METER_A = "000012345678"
METER_B = "000012345679"
VALUES_A = {
    "combined_active_energy": 12345.67,
    "voltage_a": 231.4,
    "current_a": -5.125,
    "active_power": 1.1875,
    "power_factor": 0.953,
    "frequency": 49.98,
}


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def runner_for(tmp_path: Path, source: dict[str, Any]) -> tuple[IngestRunner, DataLayout]:
    layout = DataLayout(tmp_path / "data")
    # Built directly: the entry point (pyproject.toml) is registered when the
    # package is installed again; tests/unit/test_dlt645_codec.py checks the line.
    return IngestRunner(
        [Dlt645Source(Dlt645SourceConfig.model_validate(source))], layout, "test-site"
    ), layout


async def test_meters_over_a_serial_server_and_a_pty(tmp_path: Path, processes: list[ManagedProcess]) -> None:
    socat, meter_end, poller_end = start_pty_pair(tmp_path)
    processes.append(socat)
    meters = {METER_A: VALUES_A, METER_B: {"voltage_a": 229.9, "frequency": 50.01}}
    sim, port = start_line_simulator(
        "citylake_devstack.simulators.dlt645",
        ["--meters", json.dumps(meters), "--corrupt", f"{METER_B}:frequency",
         "--request-log", str(tmp_path / "requests.jsonl")],
        tmp_path, "dlt645-sim", serial_path=meter_end,
    )  # fmt: skip
    processes.append(sim)
    source = {
        "name": "substation",
        "type": "dlt645",
        "url": f"tcp://127.0.0.1:{port}",
        "interval_s": 0.5,
        "timeout_s": 0.4,
        "retries": 0,
        "offline_after": 2,
        "meters": [
            {"meter_address": METER_A, "device_id": "meter-a", "name": "Feeder 3",
             "device_type": "electricity_meter"},
            # B asked for a DI it lacks (error reply) and one it answers with a bad checksum.
            {"meter_address": METER_B, "data_items": ["voltage_a", "02 80 00 02", "current_b"]},
            # The same meter A again, over the serial port: 2400 8E1 on the pty.
            {"meter_address": METER_A, "device_id": "meter-a-serial", "url": f"serial://{poller_end}?baudrate=2400",
             "data_items": ["voltage_a", "frequency"]},
            # Nobody on the line has this address.
            {"meter_address": "000099999999", "device_id": "ghost"},
        ],
    }  # fmt: skip
    runner, layout = runner_for(tmp_path, source)
    await runner.start()

    def enough() -> bool:
        events = landed(layout, "device_events")
        return {"meter-a", "meter-a-serial", METER_B} <= {e["device_id"] for e in events} and any(
            e["device_id"] == "ghost" and e["kind"] == "offline" for e in events
        )

    await wait_until(enough, 20)
    await runner.stop()
    rows = landed(layout, "readings")
    good = [r for r in rows if r["quality"] == 0]

    a = {r["metric"]: r for r in good if r["device_id"] == "meter-a"}
    assert {m: r["value"] for m, r in a.items()} == pytest.approx(VALUES_A)
    assert (a["combined_active_energy"]["unit"], a["voltage_a"]["unit"], a["current_a"]["unit"]) == (
        "kWh",
        "V",
        "A",
    )
    assert (a["active_power"]["unit"], a["frequency"]["unit"], a["power_factor"]["unit"]) == (
        "kW",
        "Hz",
        None,
    )
    serial = {r["metric"]: r["value"] for r in good if r["device_id"] == "meter-a-serial"}
    assert serial == {"voltage_a": 231.4, "frequency": 49.98}
    assert {(r["source"], r["site"]) for r in rows} == {("substation", "test-site")}

    b = [r for r in rows if r["device_id"] == METER_B]
    assert {(r["metric"], r["quality"], r["value"]) for r in b} == {
        ("voltage_a", 0, 229.9), ("frequency", 2, None), ("current_b", 2, None)
    }  # fmt: skip
    assert {r["metric"] for r in rows if r["device_id"] == "ghost"} == {
        "combined_active_energy", "voltage_a", "current_a", "active_power", "power_factor", "frequency",
    }  # fmt: skip
    assert {r["quality"] for r in rows if r["device_id"] == "ghost"} == {2}

    reasons = {r["reason"] for r in landed(layout, "rejected")}
    b_id = f"meter {METER_B} ({METER_B})"
    assert f"dlt645 error reply: {b_id} DI 02 02 02 00 (current_b): error 0x02 (no requested data)" in reasons
    assert any(
        r.startswith(f"dlt645 bad frame: {b_id} DI 02 80 00 02 (frequency): checksum") for r in reasons
    )
    ghost_first = "meter ghost (000099999999) DI 00 00 00 00 (combined_active_energy)"
    assert f"dlt645 no response: {ghost_first}: no reply within 0.4s" in reasons
    assert any(r.startswith("dlt645 skipped: meter ghost") for r in reasons)
    assert not any("meter-a" in r for r in reasons)
    metrics = runner.metrics.rejected
    assert metrics.labels("substation", "dlt645 error reply")._value.get() >= 1
    assert metrics.labels("substation", "dlt645 bad frame")._value.get() >= 1

    events = landed(layout, "device_events")
    kinds = {(e["device_id"], e["kind"]) for e in events}
    assert {
        ("meter-a", "online"),
        ("meter-a-serial", "online"),
        (METER_B, "online"),
        ("ghost", "offline"),
    } <= kinds
    assert ("ghost", "online") not in kinds
    ghost = next(e for e in events if e["device_id"] == "ghost")
    assert json.loads(ghost["attributes"]) == {
        "meter_address": "000099999999", "line": f"tcp://127.0.0.1:{port}", "missed_polls": 2,
    }  # fmt: skip
    # One offline event, however many polls stayed silent.
    assert sum(1 for e in events if e["device_id"] == "ghost") == 1

    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert (devices["meter-a"]["name"], devices["meter-a"]["type"], devices["meter-a"]["protocol"]) == (
        "Feeder 3", "electricity_meter", "dlt645",
    )  # fmt: skip
    assert json.loads(devices["meter-a"]["attributes"])["meter_address"] == METER_A

    # On the wire (as the meter cut it, after the FE wake-up bytes): the read of
    # DI 00 00 00 00 (+0x33 each byte) for meter A.
    log = read_request_log(tmp_path / "requests.jsonl")
    assert {entry["via"] for entry in log} == {"tcp", "serial"}
    assert "6878563412000068110433333333c516" in {entry["frame"] for entry in log}


async def test_meter_that_stops_answering_goes_offline_and_back(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    args = ["--meters", json.dumps({METER_A: {"voltage_a": 230.0}})]
    sim, port = start_line_simulator("citylake_devstack.simulators.dlt645", args, tmp_path, "dlt645-sim")
    processes.append(sim)
    source = {
        "name": "feeders", "type": "dlt645", "url": f"tcp://127.0.0.1:{port}", "interval_s": 0.3,
        "timeout_s": 0.3, "retries": 0, "offline_after": 2, "backoff_s": 0.05, "max_backoff_s": 0.2,
        "data_items": ["voltage_a"], "meters": [{"meter_address": METER_A}],
    }  # fmt: skip
    runner, layout = runner_for(tmp_path, source)
    await runner.start()

    def kinds() -> list[str]:
        return [e["kind"] for e in sorted(landed(layout, "device_events"), key=lambda e: e["ts"])]

    await wait_until(lambda: kinds() == ["online"], 20)
    sim.stop()  # the serial server is gone: refused connections, then offline
    await wait_until(lambda: kinds() == ["online", "offline"], 20)
    sim2 = ManagedProcess(sim.name, sim.argv, tmp_path / "sim2.log").start()
    processes.append(sim2)
    await wait_until(lambda: kinds() == ["online", "offline", "online"], 20)
    await runner.stop()
    reasons = {r["reason"].split(":")[0] for r in landed(layout, "rejected")}
    assert "dlt645 connection failed" in reasons
