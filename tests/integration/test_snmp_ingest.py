"""SNMP polling and traps against Debian's net-snmp: ``snmpd`` started by the
test with its own config (v2c community, v3 authPriv SHA-256/AES user,
UPS-MIB objects) on a free UDP port, and ``snmptrap`` sending real traps to
the adapter's receiver; both through the real IngestRunner into landing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake.ingest.base import SourceUnavailable
from citylake.ingest.snmp.adapter import SnmpSource
from citylake.ingest.snmp.config import SnmpSourceConfig
from citylake.ingest.snmp_trap.adapter import SnmpTrapSource
from citylake.ingest.snmp_trap.config import SnmpTrapSourceConfig
from citylake_devstack import ComponentUnavailable
from citylake_devstack.process import free_udp_port
from citylake_devstack.snmpd import AUTH_KEY, COMMUNITY, PRIV_KEY, USER, Snmpd, snmptrap, start_snmpd
from tests.landing_rows import landed, make_runner
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
V3: dict[str, Any] = {"version": "3", "usm": {"user": USER, "auth_protocol": "SHA256", "auth_key": AUTH_KEY,
                              "priv_protocol": "AES", "priv_key": PRIV_KEY}}  # fmt: skip


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    try:
        agent = start_snmpd(tmp_path / "snmpd")
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start snmpd: {exc}", pytrace=False)
    yield agent
    agent.process.stop()


def ups_device(device_id: str, **extra: object) -> dict[str, object]:
    return {
        "device_id": device_id,
        "name": "UPS cabinet 7",
        "device_type": "ups",
        "objects": [
            {"oid": "1.3.6.1.2.1.33.1.2.4.0", "metric": "battery_charge", "unit": "%"},
            {"oid": "1.3.6.1.2.1.33.1.2.3.0", "metric": "runtime_remaining", "unit": "s", "scale": 60},
            {"oid": "1.3.6.1.2.1.1.3.0", "metric": "uptime", "unit": "s"},
            {"oid": "1.3.6.1.2.1.1.5.0", "metric": "sys_name"},
            {"oid": "1.3.6.1.4.1.99999.1.0", "metric": "input_voltage", "unit": "V", "value_type": "number"},
            {"oid": "1.3.6.1.4.1.99999.2.0", "metric": "transfers"},
            {"oid": "1.3.6.1.2.1.33.1.9.9.0", "metric": "not_there"},
            {"oid": "1.3.6.1.2.1.33.1.4.4.1.2", "metric": "output_voltage", "unit": "V", "walk": True},
        ],
        **extra,
    }


def by_metric(rows: list[dict[str, Any]], device_id: str) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in rows if r["device_id"] == device_id}


async def test_polls_v2c_and_v3_agents_with_values_units_and_quality(
    snmpd: Snmpd, city_config: Callable[..., Path]
) -> None:
    silent = free_udp_port()  # nobody answers there: a timed-out agent
    raw = {
        "name": "ups-snmp",
        "type": "snmp",
        "url": snmpd.url,
        "auth": {"version": "2c", "community": COMMUNITY},
        "interval_s": 0.5,
        "timeout_s": 0.3,
        "retries": 0,
        "max_oids_per_request": 4,
        "max_repetitions": 2,
        "devices": [
            ups_device("ups-v2c"),
            ups_device("ups-v3", auth=V3),
            {"device_id": "ups-wrong-key", "auth": {**V3, "usm": {**V3["usm"], "auth_key": "not-the-key"}},
             "objects": [{"oid": "1.3.6.1.2.1.33.1.2.4.0", "metric": "battery_charge"}]},
            {"device_id": "ups-silent", "url": f"udp://127.0.0.1:{silent}",
             "objects": [{"oid": "1.3.6.1.2.1.33.1.2.4.0", "metric": "battery_charge", "unit": "%"}]},
        ],
    }  # fmt: skip
    path = city_config(sources=[raw])
    source = SnmpSource(SnmpSourceConfig.model_validate(raw))
    runner, layout = make_runner(path, sources=[source])
    await runner.start()
    try:
        await wait_until(lambda: {"ups-v2c", "ups-v3", "ups-wrong-key", "ups-silent"}
                       <= {r["device_id"] for r in landed(layout, "readings")}, 15)  # fmt: skip
        await asyncio.sleep(0.3)
    finally:
        await runner.stop()
    readings = landed(layout, "readings")
    for device_id in ("ups-v2c", "ups-v3"):
        rows = by_metric(readings, device_id)
        assert rows["battery_charge"]["value"] == 87.0 and rows["battery_charge"]["unit"] == "%"
        assert rows["runtime_remaining"]["value"] == 42 * 60.0
        assert 0 < rows["uptime"]["value"] < 600  # TimeTicks in seconds, snmpd started just now
        assert rows["sys_name"]["text"] == "ups-lab-1" and rows["sys_name"]["value"] is None
        assert rows["input_voltage"]["value"] == 230.5  # a DisplayString parsed as configured
        assert rows["transfers"]["value"] == 123456.0
        assert {m: rows[f"output_voltage.{m}"]["value"] for m in (1, 2, 3)} == {1: 231, 2: 229, 3: 230}
        assert all(rows[m]["quality"] == 0 for m in rows if m != "not_there")
        assert rows["not_there"]["quality"] == 2 and rows["not_there"]["value"] is None
    wrong = by_metric(readings, "ups-wrong-key")["battery_charge"]
    silent_row = by_metric(readings, "ups-silent")["battery_charge"]
    assert wrong["quality"] == 2 and silent_row["quality"] == 2 and silent_row["unit"] == "%"
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert any(
        r.startswith("snmp noSuchObject: device ups-v3") and "1.3.6.1.2.1.33.1.9.9.0" in r for r in reasons
    )
    assert any(r.startswith("snmp auth: device ups-wrong-key") for r in reasons), reasons
    assert any(r.startswith("snmp timeout: device ups-silent") for r in reasons), reasons
    events = {(e["device_id"], e["kind"]) for e in landed(layout, "device_events")}
    assert {("ups-v2c", "online"), ("ups-v3", "online"), ("ups-silent", "offline"),
            ("ups-wrong-key", "offline")} <= events  # fmt: skip
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert devices["ups-v3"]["protocol"] == "snmp" and devices["ups-v3"]["type"] == "ups"
    assert json.loads(devices["ups-v3"]["attributes"])["version"] == "3"
    with pytest.raises(SourceUnavailable, match="ups-silent"):
        await source.check()
    await source.close()


def trap_source(port: int, engine_id: str) -> dict[str, object]:
    return {
        "name": "traps",
        "type": "snmp_trap",
        "url": f"udp://127.0.0.1:{port}",
        "communities": ["trap-community"],
        "users": [{**V3["usm"], "engine_id": engine_id}],
        "agents": [{"device_id": "switch-7", "engine_id": engine_id, "device_type": "switch"}],
        "max_rejects_per_s": 5,
        "max_devices": 2,
    }


async def test_traps_v2c_and_v3_become_device_events_and_garbage_is_counted(
    city_config: Callable[..., Path],
) -> None:
    port = free_udp_port()
    engine_id = "8000000005" + "0a0b0c0d0e0f"
    raw = trap_source(port, engine_id)
    source = SnmpTrapSource(SnmpTrapSourceConfig.model_validate(raw))
    runner, layout = make_runner(city_config(sources=[raw]), sources=[source])
    await runner.start()
    try:
        # A UPS on battery (RFC 1628 upsTrapOnBattery with upsEstimatedMinutesRemaining), v2c.
        await asyncio.to_thread(
            snmptrap, port, "1.3.6.1.2.1.33.2.1", [("1.3.6.1.2.1.33.1.2.3.0", "i", "12")],
            community="trap-community", uptime="4242",
        )  # fmt: skip
        # A switch port down, v3 authPriv from the configured engine.
        v3 = {"user": USER, "auth_key": AUTH_KEY, "priv_key": PRIV_KEY, "engine_id": engine_id}
        await asyncio.to_thread(
            snmptrap, port, "1.3.6.1.6.3.1.1.5.3", [("1.3.6.1.2.1.2.2.1.1.3", "i", "3")], v3=v3
        )
        await asyncio.to_thread(snmptrap, port, "1.3.6.1.6.3.1.1.5.1", community="trap-community")
        # Hostile: a wrong community, a wrong v3 key, garbage, an oversized datagram, a flood.
        await asyncio.to_thread(snmptrap, port, "1.3.6.1.6.3.1.1.5.1", community="guess")
        await asyncio.to_thread(snmptrap, port, "1.3.6.1.6.3.1.1.5.1", v3={**v3, "auth_key": "wrong-key-123"})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\x30\x82\xff\xff not BER", ("127.0.0.1", port))
            sock.sendto(b"\x30" * 9000, ("127.0.0.1", port))
            for i in range(200):
                sock.sendto(b"garbage %d" % i, ("127.0.0.1", port))
        await wait_until(lambda: source.screened_out >= 203 and source.notifications >= 3, 15)
        await asyncio.sleep(0.2)
        counters = dict(source.counters())
    finally:
        await runner.stop()
    events = landed(layout, "device_events")
    by_trap = {json.loads(e["attributes"])["trap"]: e for e in events}
    battery = by_trap["upsTrapOnBattery"]
    attrs = json.loads(battery["attributes"])
    assert battery["kind"] == "alarm" and battery["device_id"] == "snmp-127.0.0.1"
    assert attrs["uptime_s"] == 42.42 and attrs["version"] == "2c"
    assert attrs["variables"] == {"1.3.6.1.2.1.33.1.2.3.0": 12.0}
    link = by_trap["linkDown"]
    assert link["kind"] == "alarm" and link["device_id"] == "switch-7"
    assert json.loads(link["attributes"])["version"] == "3"
    assert json.loads(link["attributes"])["variables"] == {"1.3.6.1.2.1.2.2.1.1.3": 3.0}
    assert by_trap["coldStart"]["kind"] == "online"
    assert len(events) == 3  # the wrong community and the wrong key delivered nothing
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert any(r.startswith("snmp trap bad community") for r in reasons)
    # 203+ screened out, at most a burst plus the rate's share of them landed.
    assert 1 <= len(reasons) <= 5 + 5 * 3
    assert counters["rejects_suppressed"] >= 180
    assert counters["usmStatsWrongDigests"] >= 1
    devices = {d["device_id"] for d in landed(layout, "devices")}
    assert {"switch-7", "snmp-127.0.0.1"} <= devices
