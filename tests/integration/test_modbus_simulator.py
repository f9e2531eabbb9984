"""``citylake simulate modbus``: pymodbus servers for many devices and the
city.yaml that lists them, read by the real ingest into landing Parquet with
exactly the values the simulator says each device serves."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from citylake.config import load_config
from citylake.ingest.modbus.codec import decode_field, plan_requests
from citylake.ingest.modbus.fields import RegisterField
from citylake.ingest.modbus.profiles import load_profile
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.modbus_sim import device_image, expected_values, start_modbus_simulator
from citylake_devstack.process import CITYLAKE, ManagedProcess
from tests.integration.test_modbus_ingest import polls, values
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

PUMP = load_profile("pump-station").fields


def test_every_type_and_byte_order_decodes_to_the_expected_value() -> None:
    """The simulator's register images, read back by citylake's codec."""
    fields = [
        RegisterField(name=f"{t}_{o}", address=10 * i, data_type=t, byte_order=o, scale=0.5, offset=3)
        for i, (t, o) in enumerate(
            (t, o)
            for t in ("INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FLOAT32", "FLOAT64")
            for o in ("ABCD", "DCBA", "BADC", "CDAB")
        )
    ]
    fields += [
        RegisterField(name="label", address=400, data_type="STRING", length=3, byte_order="DCBA"),
        RegisterField(name="b0", address=410, data_type="BIT", bit=0),
        RegisterField(name="b9", address=410, data_type="BIT", bit=9),
        RegisterField(name="same_word", address=410, data_type="UINT16"),  # read as a number too
        RegisterField(name="coil", register_type="coil", address=3),
        RegisterField(name="level", register_type="input", address=1, data_type="FLOAT32", byte_order="CDAB"),
    ]
    for step in (0, 1, 2, 1_764_072_000):
        image = device_image("dev-1", fields, step)
        for f in fields:
            end = f.address + f.width
            if f.register_type == "coil":
                decoded = decode_field(f, bits=image.bits["c"][f.address : end])
            else:
                decoded = decode_field(
                    f, words=image.words["i" if f.register_type == "input" else "h"][f.address : end]
                )
            assert (decoded.text if decoded.text is not None else decoded.number) == image.values[f.name], (
                f.name
            )
    assert expected_values("dev-1", fields, 5) != expected_values("dev-2", fields, 5)
    assert expected_values("dev-1", fields, 5) != expected_values("dev-1", fields, 6)


def step_candidates(poll_ms: int, step_s: float) -> list[int]:
    """The steps a poll that started at ``poll_ms`` may have read: its own, or
    the next one if a later request crossed the boundary."""
    step = int(poll_ms / 1000 // step_s)
    return [step, step + 1]


def assert_poll_values(device_id: str, poll_ms: int, poll: dict[str, dict[str, Any]], step_s: float) -> None:
    """Each request's registers are read at once, so all its fields come from one step."""
    got = values(poll)
    assert set(got) == {f.name for f in PUMP}
    for request in plan_requests(PUMP):
        names = [part.field.name for part in request.fields]
        candidates = [expected_values(device_id, PUMP, s) for s in step_candidates(poll_ms, step_s)]
        assert any({n: e[n] for n in names} == {n: got[n] for n in names} for e in candidates), (
            device_id,
            poll_ms,
            request.describe(),
        )
    assert {r["quality"] for r in poll.values()} == {0}
    assert poll["flow_rate"]["unit"] == "m3/h"


async def test_simulated_devices_land_their_exact_values(tmp_path: Path) -> None:
    process, config_path = start_modbus_simulator(tmp_path, 5, per_endpoint=2, step_s=1.0, interval_s=0.5)
    try:
        document = YAML(typ="safe").load(config_path.read_text())
        [source] = document["sources"]
        assert (source["type"], source["interval_s"]) == ("modbus", 0.5)
        devices = source["devices"]
        assert [d["device_id"] for d in devices] == [f"pump-station-{i:05d}" for i in range(5)]
        assert [d["slave_id"] for d in devices] == [1, 2, 1, 2, 1]
        urls = [d["url"] for d in devices]
        assert urls[0] == urls[1] != urls[2] == urls[3] != urls[4] != urls[0]
        assert all(u.startswith("tcp://127.0.0.1:") for u in urls)
        assert "serving 5 pump-station devices, 2 per endpoint, on 3 endpoints" in process.log_tail()

        loaded = load_config(config_path)
        assert loaded.config.data_dir == tmp_path / "data"
        layout = DataLayout(loaded.config.data_dir)
        runner = IngestRunner(build_sources(loaded), layout, loaded.config.site)
        await runner.start()
        try:
            await wait_until(
                lambda: all(len(polls(landed(layout, "readings"), d["device_id"])) >= 4 for d in devices), 30
            )
        finally:
            await runner.stop()
    finally:
        process.stop()

    rows = landed(layout, "readings")
    assert {(r["source"], r["site"]) for r in rows} == {("sim-modbus", "sim-site")}
    changed = 0
    for d in devices:
        device_polls = polls(rows, d["device_id"])
        for poll_ms, poll in device_polls.items():
            assert_poll_values(d["device_id"], poll_ms, poll, 1.0)
        changed += len({tuple(sorted(values(p).items())) for p in device_polls.values()}) > 1
    assert changed >= 1, "values should change over time"
    assert landed(layout, "rejected") == []


async def test_ingest_command_reads_fixed_values_from_two_server_processes(tmp_path: Path) -> None:
    simulator, config_path = start_modbus_simulator(
        tmp_path, 4, per_endpoint=1, step_s=0, processes=2, interval_s=0.3
    )
    ingest = ManagedProcess(
        "ingest",
        [*CITYLAKE, "ingest", "--config", str(config_path)],
        tmp_path / "ingest.log",
    )
    try:
        assert "serving 4 pump-station devices, 1 per endpoint, on 4 endpoints" in simulator.log_tail()
        assert "in 2 process(es)" in simulator.log_tail()
        layout = DataLayout(tmp_path / "data")
        ingest.start()
        device_ids = [f"pump-station-{i:05d}" for i in range(4)]

        def enough() -> bool:
            assert ingest.alive(), ingest.log_tail()
            rows = landed(layout, "readings")
            return all(len(polls(rows, d)) >= 2 for d in device_ids)

        await wait_until(enough, 30)
        ingest.signal(signal.SIGTERM)
        assert ingest.stop() == 0, ingest.log_tail()
    finally:
        ingest.stop()
        simulator.stop()
    rows = landed(layout, "readings")
    for device_id in device_ids:
        expected = expected_values(device_id, PUMP, 0)
        device_polls = polls(rows, device_id)
        assert len(device_polls) >= 2
        assert all(values(p) == expected for p in device_polls.values())
    assert len({tuple(sorted(expected_values(d, PUMP, 0).items())) for d in device_ids}) == 4
    assert landed(layout, "rejected") == []
