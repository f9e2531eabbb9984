"""Modbus adapter against real pymodbus servers (separate processes), through the
real IngestRunner into the landing zone: exact values, bad-quality rows and
rejects for exceptions and silence, and exactly the planned requests on the wire."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citylake.config import load_config
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.modbus.adapter import ModbusSource
from citylake.ingest.registry import build_sources
from citylake_devstack.modbus_device import DeviceRegisters, read_request_log
from tests.conftest import ModbusDevices
from tests.landing_rows import landed, make_runner
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# pump-station profile (ingest/profiles/pump-station.yaml) on slave 1.
PUMP = DeviceRegisters(
    holding={100: 1234, 101: 0x10000 - 250, 102: 1480, 104: 34464, 105: 1, 110: 0b0001,
             120: 0x5053, 121: 0x2D32, 122: 0x3030, 123: 0},
    inputs={0: 0, 1: 0x4030},
    coils={0: 1},
    discrete={0: 1},
)  # fmt: skip
PUMP_VALUES: dict[str, float | str] = {
    "pump_running": 1.0,
    "pump_fault": 1.0,
    "flow_rate": 1234 * 0.1,
    "outlet_pressure": -2.5,
    "motor_speed": 1480.0,
    "runtime_hours": 100000.0,
    "dry_run_alarm": 1.0,
    "overheat_alarm": 0.0,
    "controller_model": "PS-200",
    "tank_level": 2.75,
}
# One value of every numeric type, each in another byte order, on slave 3.
TYPES = DeviceRegisters(
    holding={0: 63652, 1: 13035, 2: 44538, 3: 23661, 4: 17738, 5: 37824, 6: 65535, 7: 1271, 8: 9840,
             9: 30077, 20: 0, 21: 50440, 22: 55457, 23: 63948, 30: 0x5053, 31: 0x2D32, 32: 0x3030},
    inputs={10: 44097, 11: 0, 12: 40, 13: 27630, 14: 54526},
)  # fmt: skip
TYPES_FIELDS = [
    {"name": "i32", "address": 0, "data_type": "INT32"},
    {"name": "f64", "address": 2, "data_type": "FLOAT64", "byte_order": "DCBA"},
    {"name": "i64", "address": 6, "data_type": "INT64", "byte_order": "BADC"},
    {"name": "u64", "address": 20, "data_type": "UINT64", "byte_order": "CDAB"},
    {"name": "label", "address": 30, "data_type": "STRING", "length": 4},
    {"name": "f32", "register_type": "input", "address": 10, "data_type": "FLOAT32", "byte_order": "BADC"},
    {"name": "u32", "register_type": "input", "address": 12, "data_type": "UINT32", "byte_order": "DCBA"},
    {"name": "i16", "register_type": "input", "address": 14, "data_type": "INT16", "byte_order": "DCBA",
     "scale": 0.5, "offset": 100, "unit": "kPa"},
]  # fmt: skip
TYPES_VALUES: dict[str, float | str] = {
    "i32": -123456789.0,
    "f64": -1234.5678,
    "i64": -9876543210123.0,
    "u64": float(18_000_000_000_000_000_000),
    "label": "PS-200",
    "f32": 21.5,
    "u32": 4_000_000_000.0,
    "i16": -300 * 0.5 + 100,
}
# power-meter profile: FLOAT32 big-endian in input registers.
METER = DeviceRegisters(
    inputs={0: 17254, 1: 32768, 2: 17255, 3: 16384, 4: 17253, 5: 49152, 6: 16680, 8: 16688, 10: 16660,
            52: 17890, 53: 36864, 70: 16968, 72: 17984, 73: 58880}
)  # fmt: skip
METER_VALUES: dict[str, float | str] = {
    "voltage_l1": 230.5,
    "voltage_l2": 231.25,
    "voltage_l3": 229.75,
    "current_l1": 10.5,
    "current_l2": 11.0,
    "current_l3": 9.25,
    "power_total": 7250.0,
    "frequency": 50.0,
    "energy_import": 12345.5,
}


def polls(rows: list[dict[str, Any]], device: str) -> dict[int, dict[str, dict[str, Any]]]:
    """Each poll of ``device`` (by its timestamp in ms): metric -> row."""
    by_poll: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if row["device_id"] == device:
            by_poll[int(row["ts"].timestamp() * 1000)][row["metric"]] = row
    return dict(by_poll)


def values(poll: dict[str, dict[str, Any]]) -> dict[str, float | str]:
    return {m: r["value"] if r["text"] is None else r["text"] for m, r in poll.items()}


def modbus_source(url: str, devices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "plant", "type": "modbus", "url": url, "devices": devices, **extra}


async def test_values_errors_and_planned_requests(
    modbus_device: ModbusDevices, city_config: Callable[..., Path]
) -> None:
    gateway = modbus_device(
        dict(PUMP.holding), dict(PUMP.inputs), 1, coils=dict(PUMP.coils), discrete=dict(PUMP.discrete),
        devices={3: TYPES, 4: DeviceRegisters()},
    )  # fmt: skip
    mute = modbus_device({}, silent=True)
    devices: list[dict[str, Any]] = [
        {"device_id": "pump-1", "slave_id": 1, "profile": "pump-station"},
        {"device_id": "types-3", "slave_id": 3, "fields": TYPES_FIELDS},
        # Reads past the server's 10000 registers: exception 2; its other request still lands.
        {
            "device_id": "beyond-4",
            "slave_id": 4,
            "fields": [
                {"name": "far", "address": 9999, "data_type": "UINT32"},
                {"name": "near", "register_type": "input", "address": 5},
            ],
        },
        # No slave 9 behind the gateway: pymodbus answers exception 4.
        {"device_id": "ghost-9", "slave_id": 9, "fields": [{"name": "a", "address": 0}]},
        {
            "device_id": "mute",
            "url": f"tcp://127.0.0.1:{mute}",
            "interval_s": 1,
            "timeout_s": 0.3,
            "fields": [
                {"name": "h", "address": 0},
                {"name": "i", "register_type": "input", "address": 0},
            ],
        },
    ]
    source = modbus_source(
        f"tcp://127.0.0.1:{gateway}", devices, interval_s=0.5, timeout_s=2, retries=1, backoff_s=0.05
    )
    runner, layout = make_runner(city_config(sources=[source]))
    await runner.start()

    def enough() -> bool:
        rows = landed(layout, "readings")
        return len(polls(rows, "pump-1")) >= 3 and len(polls(rows, "mute")) >= 2

    await wait_until(enough, 30)
    await runner.stop()
    rows = landed(layout, "readings")

    pump = polls(rows, "pump-1")
    for poll in pump.values():
        assert values(poll) == PUMP_VALUES
        assert {r["quality"] for r in poll.values()} == {0}
    first = next(iter(pump.values()))
    assert first["flow_rate"]["unit"] == "m3/h"
    assert first["pump_running"]["unit"] is None
    assert {(r["source"], r["site"]) for r in rows} == {("plant", "test-site")}
    assert all(r["ingest_ts"] >= r["ts"] for r in rows)
    types = polls(rows, "types-3")
    assert all(values(p) == TYPES_VALUES for p in types.values())
    assert next(iter(types.values()))["i16"]["unit"] == "kPa"

    for poll in polls(rows, "beyond-4").values():
        assert (poll["far"]["quality"], poll["far"]["value"]) == (2, None)
        assert (poll["near"]["quality"], poll["near"]["value"]) == (0, 0.0)
    for poll in polls(rows, "ghost-9").values():
        assert (poll["a"]["quality"], poll["a"]["value"]) == (2, None)
    for poll in polls(rows, "mute").values():
        assert {m: (r["quality"], r["value"]) for m, r in poll.items()} == {"h": (2, None), "i": (2, None)}

    rejected = landed(layout, "rejected")
    reasons = {r["reason"] for r in rejected}
    assert reasons == {
        "modbus exception code 2 (illegal data address): device beyond-4 (slave 4) holding 9999..10000",
        "modbus exception code 4 (server device failure): device ghost-9 (slave 9) holding 0..0",
        "modbus no response: device mute (slave 1) holding 0..0: no response within 0.3s",
        "modbus skipped: device mute (slave 1) input 0..0: not sent after no response on holding 0..0",
    }
    far = next(r for r in rejected if "beyond-4" in r["reason"])
    assert far["raw"].startswith(f"tcp://127.0.0.1:{gateway} slave 4 request 03270f0002 -> ".encode())
    # One reject per failed request per poll.
    assert sum("ghost-9" in r["reason"] for r in rejected) == len(polls(rows, "ghost-9"))
    assert runner.metrics.polls.labels("plant", "error")._value.get() == 0
    assert runner.metrics.rejected.labels("plant", "modbus no response")._value.get() == len(
        polls(rows, "mute")
    )

    # On the wire: exactly the planned requests, once per poll (the mute
    # device's first request twice: one retry; its second never sent).
    sent: dict[int, int] = defaultdict(int)
    for request in modbus_device.requests(gateway):
        sent[request["device_id"]] += 1
    assert sent == {
        1: 4 * len(pump),  # holding 100..123, input 0..1, coil 0, discrete 0
        3: 2 * len(types),  # holding 0..33, input 10..14
        4: 2 * len(polls(rows, "beyond-4")),
        9: 1 * len(polls(rows, "ghost-9")),
    }
    [modbus] = runner.sources
    assert isinstance(modbus, ModbusSource)
    assert modbus.connections[f"tcp://127.0.0.1:{gateway}"].requests_sent == sum(sent.values())
    pump_requests = [
        (r["function_code"], r["address"], r["count"])
        for r in modbus_device.requests(gateway)
        if r["device_id"] == 1
    ]
    assert pump_requests[:4] == [(3, 100, 24), (4, 0, 2), (1, 0, 1), (2, 0, 1)]
    assert [(r["function_code"], r["address"]) for r in modbus_device.requests(mute)] == [(3, 0)] * 2 * len(
        polls(rows, "mute")
    )


async def test_rtu_over_tcp_gateway_with_two_meters_and_one_request_per_field(
    modbus_device: ModbusDevices, city_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = modbus_device({}, None, 1, devices={1: METER, 2: METER}, framer="rtu")
    devices: list[dict[str, Any]] = [
        {"device_id": "meter-1", "slave_id": 1, "profile": "power-meter"},
        {"device_id": "meter-2", "slave_id": 2, "profile": "power-meter"},
    ]
    merged = modbus_source(f"rtu+tcp://127.0.0.1:{port}", devices, interval_s=0.4)
    runner, layout = make_runner(city_config(sources=[merged]))
    await runner.start()
    await wait_until(
        lambda: all(len(polls(landed(layout, "readings"), d)) >= 2 for d in ("meter-1", "meter-2")), 30
    )
    await runner.stop()
    rows = landed(layout, "readings")
    for device in ("meter-1", "meter-2"):
        for poll in polls(rows, device).values():
            assert values(poll) == METER_VALUES
            assert poll["voltage_l1"]["unit"] == "V"
    sent = modbus_device.requests(port)
    for slave, device in ((1, "meter-1"), (2, "meter-2")):
        mine = [(r["address"], r["count"]) for r in sent if r["device_id"] == slave]
        assert mine == [(0, 12), (52, 2), (70, 4)] * len(polls(rows, device))
    assert landed(layout, "rejected") == []

    # The same meter with merging switched off: one request per field, paced.
    each = modbus_device({}, None, 1, devices={1: METER}, framer="rtu")
    config = city_config(
        sources=[
            modbus_source(
                f"rtu+tcp://127.0.0.1:{each}",
                devices[:1],
                interval_s=0.5,
                one_request_per_field=True,
                pause_between_requests_s=0.02,
            )
        ],
        data_dir=str(tmp_path / "data-each"),
    )
    runner, layout = make_runner(config)
    await runner.start()
    await wait_until(lambda: len(polls(landed(layout, "readings"), "meter-1")) >= 2, 30)
    await runner.stop()
    rows = landed(layout, "readings")
    assert all(values(p) == METER_VALUES for p in polls(rows, "meter-1").values())
    assert len(modbus_device.requests(each)) == 9 * len(polls(rows, "meter-1"))


async def test_device_restart_bad_rows_then_good_again(
    modbus_device: ModbusDevices, city_config: Callable[..., Path]
) -> None:
    port = modbus_device({0: 42})
    source = modbus_source(
        f"tcp://127.0.0.1:{port}", [{"device_id": "plc", "fields": [{"name": "v", "address": 0}]}],
        interval_s=0.2, timeout_s=1, retries=0, backoff_s=0.1, max_backoff_s=0.4,
    )  # fmt: skip
    runner, layout = make_runner(city_config(sources=[source]))
    await runner.start()
    [modbus] = runner.sources

    def quality_of_polls() -> list[int]:
        return [p["v"]["quality"] for _, p in sorted(polls(landed(layout, "readings"), "plc").items())]

    await wait_until(lambda: 0 in quality_of_polls(), 30)
    assert modbus.is_up()
    modbus_device.stop(port)
    await wait_until(lambda: 2 in quality_of_polls(), 30)
    assert not modbus.is_up()
    modbus_device({0: 43}, port=port)
    await wait_until(
        lambda: any(p["v"]["value"] == 43.0 for p in polls(landed(layout, "readings"), "plc").values()), 30
    )
    await runner.stop()
    qualities = quality_of_polls()
    # Good, then bad while the device is down, then good again.
    assert qualities.index(0) < qualities.index(2) < len(qualities) - 1 - qualities[::-1].index(0)
    reasons = {r["reason"].split(":")[0] for r in landed(layout, "rejected")}
    assert reasons <= {"modbus connection failed", "modbus no response"}, reasons
    assert "modbus connection failed" in reasons
    assert runner.metrics.polls.labels("plant", "error")._value.get() == 0


async def test_check_names_the_endpoint_that_failed(
    modbus_device: ModbusDevices, city_config: Callable[..., Path]
) -> None:
    from citylake_devstack import free_port

    live = modbus_device({0: 1})
    dead = free_port()
    fields = [{"name": "v", "address": 0}]
    devices: list[dict[str, Any]] = [
        {"device_id": "up-1", "fields": fields},
        {"device_id": "down-1", "url": f"tcp://127.0.0.1:{dead}", "fields": fields},
        {"device_id": "down-2", "url": f"tcp://127.0.0.1:{dead}", "slave_id": 2, "fields": fields},
    ]
    [source] = build_sources(
        load_config(city_config(sources=[modbus_source(f"tcp://127.0.0.1:{live}", devices)]))
    )
    assert isinstance(source, ModbusSource)
    with pytest.raises(SourceUnavailable) as info:
        await source.check()
    message = str(info.value)
    assert f"cannot connect to tcp://127.0.0.1:{dead}" in message
    assert "(devices down-1, down-2)" in message
    assert f"127.0.0.1:{live}" not in message
    [healthy] = build_sources(
        load_config(city_config(sources=[modbus_source(f"tcp://127.0.0.1:{live}", devices[:1])]))
    )
    await healthy.check()


async def test_serial_rtu_over_a_pty_pair(
    modbus_serial_device: Callable[..., tuple[Path, Path]], city_config: Callable[..., Path]
) -> None:
    line, request_log = modbus_serial_device({2: PUMP})
    devices: list[dict[str, Any]] = [
        {"device_id": "pump-2", "slave_id": 2, "profile": "pump-station"},
        {"device_id": "nobody-5", "slave_id": 5, "fields": [{"name": "a", "address": 0}]},
    ]
    source = modbus_source(
        f"serial://{line}?baudrate=9600&parity=N&stopbits=1&bytesize=8", devices, interval_s=0.5
    )
    runner, layout = make_runner(city_config(sources=[source]))
    await runner.start()
    await wait_until(lambda: len(polls(landed(layout, "readings"), "pump-2")) >= 2, 30)
    await runner.stop()
    rows = landed(layout, "readings")
    pump = polls(rows, "pump-2")
    assert all(values(p) == PUMP_VALUES for p in pump.values())
    assert {r["reason"] for r in landed(layout, "rejected")} == {
        "modbus exception code 4 (server device failure): device nobody-5 (slave 5) holding 0..0"
    }
    sent = read_request_log(request_log)
    assert sum(r["device_id"] == 2 for r in sent) == 4 * len(pump)


async def test_configured_devices_land_in_devices_at_start(
    modbus_device: ModbusDevices, city_config: Callable[..., Path]
) -> None:
    """Every configured slave reaches `devices` when ingest starts, with what
    city.yaml says of it, even one that never answers."""
    port = modbus_device({}, None, 1, devices={1: METER})
    silent = modbus_device({}, silent=True)
    devices: list[dict[str, Any]] = [
        {
            "device_id": "meter-1", "slave_id": 1, "profile": "power-meter", "name": "Substation 4 meter",
            "device_type": "energy_meter", "district": "Gulou", "civil_code": "320106",
            "address": "4 Beijing West Rd", "longitude": 118.77, "latitude": 32.06,
        },
        {"device_id": "mute-2", "url": f"tcp://127.0.0.1:{silent}", "timeout_s": 0.3,
         "fields": [{"name": "h", "address": 0}]},
    ]  # fmt: skip
    runner, layout = make_runner(city_config(sources=[modbus_source(f"tcp://127.0.0.1:{port}", devices)]))
    started = time.time()
    await runner.start()
    await wait_until(lambda: len(landed(layout, "devices")) == 2 and bool(landed(layout, "readings")), 30)
    await runner.stop()
    rows = {row["device_id"]: row for row in landed(layout, "devices")}
    meter = rows["meter-1"]
    assert {k: meter[k] for k in ("name", "type", "protocol", "district", "civil_code", "address")} == {
        "name": "Substation 4 meter", "type": "energy_meter", "protocol": "modbus", "district": "Gulou",
        "civil_code": "320106", "address": "4 Beijing West Rd",
    }  # fmt: skip
    assert (meter["longitude"], meter["latitude"]) == (118.77, 32.06)
    assert started - 1 <= meter["first_seen"].timestamp() == meter["last_seen"].timestamp() <= time.time()
    assert json.loads(meter["attributes"]) == {
        "endpoint": f"tcp://127.0.0.1:{port}", "interval_s": 10.0, "profile": "power-meter",
        "slave_id": 1, "source": "plant", "metrics": [
            "voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
            "power_total", "frequency", "energy_import",
        ],
    }  # fmt: skip
    mute = rows["mute-2"]
    assert (mute["protocol"], mute["name"], json.loads(mute["attributes"])["endpoint"]) == (
        "modbus", None, f"tcp://127.0.0.1:{silent}",
    )  # fmt: skip
    # Landed once, at start: polls do not repeat them.
    assert len(landed(layout, "devices")) == 2
