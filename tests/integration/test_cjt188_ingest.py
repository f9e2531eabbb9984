"""CJ/T 188 adapter against the simulated meter line (a separate process behind
a real TCP socket, as a transparent serial server), through the real
IngestRunner into landing: units from unit codes, status bits as quality,
readings, events and devices attributes; abnormal replies, bad checksums and
silence as counted rejects. No open CJ/T 188 meter program exists to run (see
ingest/cjt188/README.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake.ingest.cjt188.adapter import Cjt188Source
from citylake.ingest.cjt188.config import Cjt188SourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.process import ManagedProcess
from citylake_devstack.simulators.line import start_line_simulator
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WATER, HEAT, GAS, BROKEN, GARBLED, GHOST = (f"{n:014d}" for n in (12, 13, 14, 15, 16, 99))
HEAT_VALUES = {
    "settlement_day_heat": 1500.25, "current_heat": 1520.5, "heat_power": 12.5, "flow_rate": 0.8512,
    "cumulative_flow": 320.0, "supply_temperature": 65.2, "return_temperature": 45.1, "working_hours": 8760.0,
}  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


async def test_water_heat_and_gas_meters_through_a_serial_server(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    meters: dict[str, dict[str, Any]] = {
        WATER: {"type": "cold_water", "values": {"cumulative_flow": 1000.1, "settlement_day_flow": 990.0}},
        HEAT: {"type": "heat", "values": HEAT_VALUES, "status": [0x04, 0x00]},  # battery low
        GAS: {"type": "gas", "values": {"cumulative_flow": 77.77}, "status": [0x01, 0x00]},  # valve closed
        BROKEN: {"type": "cold_water", "abnormal": True, "status": [0x03, 0x10]},
        GARBLED: {"type": "cold_water", "corrupt": True},
    }
    args = ["--meters", json.dumps(meters), "--di-order", "high_first"]
    sim, port = start_line_simulator("citylake_devstack.simulators.cjt188", args, tmp_path, "cjt188-sim")
    processes.append(sim)
    source = {
        "name": "estate", "type": "cjt188", "url": f"tcp://127.0.0.1:{port}", "interval_s": 0.5,
        "timeout_s": 0.4, "retries": 0, "offline_after": 2, "di_byte_order": "high_first",
        "meters": [
            {"meter_address": WATER, "meter_type": "cold_water", "device_id": "unit-201", "name": "Unit 201"},
            {"meter_address": HEAT, "meter_type": "heat"},
            {"meter_address": GAS, "meter_type": "gas"},
            {"meter_address": BROKEN, "meter_type": "cold_water"},
            {"meter_address": GARBLED, "meter_type": "cold_water"},
            {"meter_address": GHOST, "meter_type": "hot_water"},
        ],
    }  # fmt: skip
    layout = DataLayout(tmp_path / "data")
    # Built directly: the entry point line in pyproject.toml registers on the next install.
    runner = IngestRunner([Cjt188Source(Cjt188SourceConfig.model_validate(source))], layout, "test-site")
    await runner.start()

    def enough() -> bool:
        events = {(e["device_id"], e["kind"]) for e in landed(layout, "device_events")}
        polled = [r for r in landed(layout, "readings") if r["device_id"] == "unit-201"]
        return (GHOST, "offline") in events and len(polled) >= 8

    await wait_until(enough, 20)
    await runner.stop()
    rows = landed(layout, "readings")

    water = {r["metric"]: r for r in rows if r["device_id"] == "unit-201"}
    assert {m: (r["value"], r["text"], r["unit"], r["quality"]) for m, r in water.items()} == {
        "cumulative_flow": (1000.1, None, "m3", 0),
        "settlement_day_flow": (990.0, None, "m3", 0),
        "valve": (None, "open", None, 0),
        "battery_low": (0.0, None, None, 0),
    }
    heat = {r["metric"]: r for r in rows if r["device_id"] == HEAT}
    assert {m: r["value"] for m, r in heat.items() if m in HEAT_VALUES} == pytest.approx(HEAT_VALUES)
    assert (heat["current_heat"]["unit"], heat["heat_power"]["unit"], heat["flow_rate"]["unit"]) == (
        "kWh", "kW", "m3/h",
    )  # fmt: skip
    assert heat["supply_temperature"]["unit"] == "Cel"
    # A low battery makes the meter's values uncertain, not bad.
    assert {r["quality"] for m, r in heat.items() if m in HEAT_VALUES} == {1}
    assert heat["battery_low"]["value"] == 1.0
    gas = {r["metric"]: r for r in rows if r["device_id"] == GAS}
    assert (gas["cumulative_flow"]["value"], gas["valve"]["text"], gas["cumulative_flow"]["quality"]) == (
        77.77, "closed", 0,
    )  # fmt: skip

    for device in (BROKEN, GARBLED, GHOST):
        assert {r["quality"] for r in rows if r["device_id"] == device} == {2}
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    broken = f"meter {BROKEN} ({BROKEN}) DI 901F (type 10)"
    assert f"cjt188 error reply: {broken}: status ST1 03 ST2 10 (valve abnormal)" in reasons
    assert any(
        r.startswith(f"cjt188 bad frame: meter {GARBLED} ({GARBLED}) DI 901F (type 10): checksum")
        for r in reasons
    )
    assert f"cjt188 no response: meter {GHOST} ({GHOST}) DI 901F (type 11): no reply within 0.4s" in reasons
    assert not any("unit-201" in r or HEAT in r or GAS in r for r in reasons)
    assert runner.metrics.rejected.labels("estate", "cjt188 error reply")._value.get() >= 1

    events = landed(layout, "device_events")
    kinds = [(e["device_id"], e["kind"]) for e in events]
    # One status event per meter (the status never changed), one online, one offline.
    assert sorted(k for k in kinds if k[0] in ("unit-201", HEAT, GAS)) == sorted(
        [("unit-201", "online"), ("unit-201", "status"), (HEAT, "online"), (HEAT, "status"),
         (GAS, "online"), (GAS, "status")]
    )  # fmt: skip
    assert kinds.count((GHOST, "offline")) == 1
    heat_status = next(e for e in events if e["device_id"] == HEAT and e["kind"] == "status")
    assert json.loads(heat_status["attributes"]) == {
        "battery_low": True, "valve": "open", "st1": "04", "st2": "00", "meter_address": HEAT,
        "meter_time": "2026-12-01T08:30:15",
    }  # fmt: skip

    devices = landed(layout, "devices")
    heat_rows = [d for d in devices if d["device_id"] == HEAT]
    assert heat_rows[0]["type"] == "heat_meter" and heat_rows[0]["protocol"] == "cjt188"
    assert json.loads(heat_rows[-1]["attributes"])["battery_low"] is True
    assert next(d for d in devices if d["device_id"] == "unit-201")["name"] == "Unit 201"
