"""M-Bus adapter against the simulated M-Bus gateway (a separate process behind a
real TCP socket) through the real IngestRunner into landing. Meter 2 answers
with EN 13757-3's published example telegram byte for byte; the others with
telegrams the simulator builds from DIF/VIF records. No open M-Bus slave
program exists to run (libmbus is a master); see ingest/mbus/README.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake.ingest.mbus.adapter import MbusSource
from citylake.ingest.mbus.config import MbusSourceConfig
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.process import ManagedProcess
from citylake_devstack.simulators.line import read_request_log, start_line_simulator
from citylake_devstack.simulators.mbus import EN13757_EXAMPLE
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

HEAT_RECORDS = [
    ["04", "06", 15005],
    ["04", "13", 320505],
    ["02", "5B", 65],
    ["02", "5F", 45],
    ["02", "2B", 12000],
]


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


async def test_meters_through_an_mbus_gateway(tmp_path: Path, processes: list[ManagedProcess]) -> None:
    meters: dict[int, dict[str, Any]] = {
        2: {"frame": EN13757_EXAMPLE},
        5: {"id": "70000005", "manufacturer": "KAM", "medium": 4, "status": 0x04, "records": HEAT_RECORDS},
        7: {"id": "70000007", "manufacturer": "KAM", "medium": 4, "records": HEAT_RECORDS, "corrupt": True},
        9: {"ack_only": True},
        11: {"id": "70000011", "manufacturer": "SEN", "medium": 7, "records": [["04", "13", 1]]},
    }
    log = tmp_path / "requests.jsonl"
    args = ["--meters", json.dumps(meters), "--request-log", str(log)]
    sim, port = start_line_simulator("citylake_devstack.simulators.mbus", args, tmp_path, "mbus-sim")
    processes.append(sim)
    source = {
        "name": "district-heat", "type": "mbus", "url": f"tcp://127.0.0.1:{port}", "interval_s": 0.5,
        "timeout_s": 0.4, "retries": 0, "offline_after": 2,
        "meters": [
            {"primary_address": 2, "device_id": "flat-2-water", "name": "Flat 2 water"},
            {"primary_address": 5, "secondary_id": "70000005"},
            {"primary_address": 7},
            {"primary_address": 9},
            {"primary_address": 11, "secondary_id": "12121212"},  # someone swapped the meter
            {"primary_address": 20},  # nobody there
        ],
    }  # fmt: skip
    layout = DataLayout(tmp_path / "data")
    # Built directly: the entry point line in pyproject.toml registers on the next install.
    runner = IngestRunner([MbusSource(MbusSourceConfig.model_validate(source))], layout, "test-site")
    await runner.start()

    def enough() -> bool:
        events = {(e["device_id"], e["kind"]) for e in landed(layout, "device_events")}
        return ("mbus-20", "offline") in events and ("mbus-7", "online") in events

    await wait_until(enough, 20)
    await runner.stop()
    rows = landed(layout, "readings")

    water = {
        r["metric"]: (r["value"], r["unit"], r["quality"]) for r in rows if r["device_id"] == "flat-2-water"
    }
    assert water == {
        "volume": (12.565, "m3", 0),
        "volume_flow_max_s5": (0.113, "m3/h", 0),
        "energy_t2_u1": (218370.0, "Wh", 0),
    }
    heat = {r["metric"]: (r["value"], r["unit"], r["quality"]) for r in rows if r["device_id"] == "70000005"}
    # Status bit 2 (power low): every value uncertain.
    assert heat == {
        "energy": (15005000.0, "Wh", 1),
        "volume": (320.505, "m3", 1),
        "flow_temperature": (65.0, "Cel", 1),
        "return_temperature": (45.0, "Cel", 1),
        "power": (12000.0, "W", 1),
    }
    # A meter that never gave a telegram we could read has no known metrics to
    # write bad rows for: only its rejects and events land.
    for device in ("mbus-7", "mbus-9", "12121212", "mbus-20"):
        assert not any(r["device_id"] == device for r in rows)

    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert any(r.startswith("mbus bad frame: meter mbus-7 (primary 7) REQ_UD2: checksum") for r in reasons)
    assert (
        "mbus bad frame: meter mbus-9 (primary 9) REQ_UD2: reply is not a long frame (starts e5)" in reasons
    )
    assert (
        "mbus wrong meter: meter 12121212 (primary 11) REQ_UD2: identification 70000011, configured 12121212"
        in reasons
    )
    assert "mbus no response: meter mbus-20 (primary 20) REQ_UD2: no reply within 0.4s" in reasons
    assert not any("flat-2-water" in r or "70000005" in r for r in reasons)
    assert runner.metrics.rejected.labels("district-heat", "mbus wrong meter")._value.get() >= 1

    devices = [d for d in landed(layout, "devices") if d["device_id"] == "flat-2-water"]
    learnt = devices[-1]
    assert (learnt["manufacturer"], learnt["type"], learnt["name"]) == ("PAD", "water_meter", "Flat 2 water")
    attributes = json.loads(learnt["attributes"])
    expected = {"identification": "12345678", "manufacturer": "PAD", "version": 1, "medium": "water",
                "primary_address": 2, "secondary_address": "1234567824400107"}  # fmt: skip
    assert {k: attributes[k] for k in expected} == expected
    # Learnt once, not every poll.
    assert len([d for d in devices if d["manufacturer"] == "PAD"]) == 1

    events = landed(layout, "device_events")
    status = [e for e in events if e["device_id"] == "70000005" and e["kind"] == "status"]
    assert len(status) == 1 and json.loads(status[0]["attributes"])["status"] == "04"
    assert [e["kind"] for e in events if e["device_id"] == "mbus-20"] == ["offline"]

    # On the wire: REQ_UD2 short frames, the frame count bit alternating for a meter that answers.
    to_two = [
        e["frame"]
        for e in read_request_log(log)
        if str(e["frame"]).startswith("10") and str(e["frame"])[4:6] == "02"
    ]
    assert to_two[:2] == ["107b027d16", "105b025d16"]
