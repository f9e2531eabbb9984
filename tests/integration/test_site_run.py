"""The whole site through `citylake run`: a SIPp GB28181 camera (catalog over
two GB2312 MESSAGEs, alarm, mobile position, unregister), MQTT sensors with
malformed messages among them and a pymodbus pump station reach the lake's
`devices`, `device_events`, `rejected` and `readings`, and the registry and
query APIs, through the real streaming jobs. Ctrl-C (SIGTERM) stops it all."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from ruamel.yaml import YAML

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake_devstack import Mosquitto
from citylake_devstack.modbus_sim import start_modbus_simulator
from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port
from citylake_devstack.simulators.mqtt import device_topic, run_simulator
from citylake_devstack.sipp import SimDevice, Sipp, sim_devices
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "site-s3cret"
SENSORS = 6


def site_config(tmp_path: Path, broker: Mosquitto, sip_port: int, modbus: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": "site-under-test",
        "data_dir": str(tmp_path / "data"),
        "sources": [
            {
                "name": "city-sensors",
                "type": "mqtt",
                "url": broker.url,
                "topics": [{"template": "city/{district}/{device_type}/{device_id}/telemetry"}],
                "max_payload_bytes": 4096,
            },
            {
                "name": "city-video",
                "type": "gb28181",
                "url": f"udp://127.0.0.1:{sip_port}",
                "platform_id": PLATFORM,
                "domain": DOMAIN,
                "password": PASSWORD,
            },
            modbus,
        ],
        "pipelines": {
            "flink": {"checkpoint_interval_s": 2, "monitor_interval_s": 1},
            "jobs": ["readings", "devices", "events"],
        },
        "landing": {"replay_window_h": 0},
        "services": {"query": {"port": free_port()}, "registry": {"port": free_port()}},
        "run": {"services": ["query", "registry"], "health_port": free_port(), "ingest_metrics_port": 0},
    }


@pytest.fixture
def modbus(tmp_path: Path) -> Iterator[dict[str, Any]]:
    process, config = start_modbus_simulator(tmp_path / "modbus", 1, interval_s=1.0)
    source = dict(YAML(typ="safe").load(config.read_text())["sources"][0])
    source["name"] = "pump-stations"
    yield source
    process.stop()


def publish_malformed(url: str) -> None:
    """A city's broken sensors: not JSON, a number sent as text, too big."""
    port = int(url.rsplit(":", 1)[1])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="broken-sensors")
    client.connect("127.0.0.1", port)
    client.loop_start()
    _, topic = device_topic(0)
    conflict = json.dumps({"ts": int(time.time() * 1000), "pm25": "15.3"}).encode()
    for payload in (b"{not json", conflict, b"x" * 10_000):
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def query(lake_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    lake = Lake(DataLayout(lake_dir))
    try:
        return lake.cursor().execute(sql).fetchall()
    finally:
        lake.close()


def check_lake(data_dir: Path, sent_readings: int, nvr: SimDevice, pump: str) -> None:
    # readings: every acknowledged MQTT reading once, and the pump station's polls.
    def mqtt_readings() -> int:
        rows = query(data_dir, "SELECT count(*) FROM readings WHERE source = 'city-sensors'")
        return int(rows[0][0])

    wait_for(lambda: mqtt_readings() >= sent_readings, 240, f"{sent_readings} MQTT readings in the lake")
    assert mqtt_readings() == sent_readings
    distinct = query(
        data_dir,
        "SELECT count(DISTINCT (device_id, metric, ts)) FROM readings WHERE source = 'city-sensors'",
    )
    assert distinct[0][0] == sent_readings
    assert query(data_dir, f"SELECT count(*) FROM readings WHERE device_id = '{pump}'")[0][0] > 0

    # device_events: the camera's whole life.
    def nvr_kinds() -> list[str]:
        rows = query(
            data_dir, f"SELECT kind FROM device_events WHERE device_id = '{nvr.device_id}' ORDER BY ts"
        )
        return [r[0] for r in rows]

    wait_for(lambda: "unregister" in nvr_kinds(), 180, "the NVR's unregister in lake device_events")
    kinds = nvr_kinds()
    assert {"register", "online", "catalog", "keepalive", "unregister", "offline"} <= set(kinds)
    assert kinds.count("catalog") == 2  # one per MESSAGE of the split catalog
    channel_kinds = query(
        data_dir, f"SELECT kind FROM device_events WHERE device_id = '{nvr.channels[0]}' ORDER BY ts"
    )
    assert [r[0] for r in channel_kinds] == ["alarm", "position"]

    # rejected: each malformed message, with its reason.
    def reasons() -> list[str]:
        return [r[0] for r in query(data_dir, "SELECT reason FROM rejected WHERE source = 'city-sensors'")]

    wait_for(lambda: len(reasons()) >= 3, 120, "three MQTT rejects in the lake")
    text = " | ".join(reasons())
    assert "JSON" in text or "json" in text, text
    assert "metric type conflict" in text and "pm25" in text, text
    assert "4096" in text or "too large" in text or "larger" in text, text

    # devices: the catalog (GB2312 names), topic levels, configured devices.
    def device(device_id: str) -> dict[str, Any] | None:
        lake = Lake(DataLayout(data_dir))
        try:
            cursor = lake.cursor().execute("SELECT * FROM devices WHERE device_id = ?", [device_id])
            names = [d[0] for d in cursor.description]
            row = cursor.fetchone()
            return dict(zip(names, row, strict=True)) if row else None
        finally:
            lake.close()

    wait_for(lambda: (device(nvr.channels[0]) or {}).get("name") is not None, 120, "a catalogued channel")
    gate = device(nvr.channels[0])
    assert gate is not None
    assert gate["name"] == "东门摄像机" and gate["manufacturer"] == "Hikvision"
    assert gate["civil_code"] == "340200" and gate["parent_id"] == nvr.device_id
    assert (gate["longitude"], gate["latitude"]) == (117.2272, 31.8206)
    assert device(nvr.channels[2])["name"] == "停车场入口"  # type: ignore[index]  # the second MESSAGE
    assert device(nvr.device_id)["status"] == "offline"  # type: ignore[index]  # it unregistered
    sensor_id, topic = device_topic(0)
    sensor = device(sensor_id)
    assert sensor is not None
    assert (sensor["type"], sensor["district"], sensor["protocol"]) == (
        topic.split("/")[2],
        topic.split("/")[1],
        "mqtt",
    )
    assert device(pump)["protocol"] == "modbus"  # type: ignore[index]


def check_apis(document: dict[str, Any], nvr: SimDevice) -> None:
    sensor_id, topic = device_topic(0)
    # The APIs, on what the pipeline wrote.
    registry = f"http://127.0.0.1:{document['services']['registry']['port']}"
    api = f"http://127.0.0.1:{document['services']['query']['port']}"

    def registry_has_channel() -> bool:
        answer = httpx.get(f"{registry}/v1/devices/{nvr.channels[0]}", timeout=10)
        return answer.status_code == 200 and answer.json()["name"] == "东门摄像机"

    wait_for(registry_has_channel, 120, "the channel in the registry")
    in_district = httpx.get(f"{registry}/v1/devices", params={"district": "3402", "limit": 50}, timeout=10)
    assert {nvr.channels[0], nvr.channels[1]} <= {d["device_id"] for d in in_district.json()["devices"]}
    district = topic.split("/")[1]
    by_name = httpx.get(f"{registry}/v1/devices", params={"district": district.upper()}, timeout=10).json()
    assert sensor_id in {d["device_id"] for d in by_name["devices"]}
    latest = httpx.get(f"{api}/v1/devices/{sensor_id}/latest", timeout=10)
    assert latest.status_code == 200 and latest.json()["readings"], latest.text
    metric = latest.json()["readings"][0]["metric"]
    across = httpx.get(f"{api}/v1/metrics/{metric}/latest", params={"district": district}, timeout=10)
    assert across.status_code == 200, across.text
    assert sensor_id in json.dumps(across.json())


def test_a_site_runs_every_input_to_the_lake_and_the_apis(
    tmp_path: Path, mosquitto: Mosquitto, modbus: dict[str, Any]
) -> None:
    sip_port = free_port()
    document = site_config(tmp_path, mosquitto, sip_port, modbus)
    config = tmp_path / "city.yaml"
    with config.open("w") as out:
        YAML().dump(document, out)
    data_dir = tmp_path / "data"
    site = ManagedProcess(
        "citylake-run",
        [*CITYLAKE, "run", "--config", str(config)],
        tmp_path / "run.log",
    ).start()
    health = f"http://127.0.0.1:{document['run']['health_port']}/healthz"
    try:

        def healthy() -> bool:
            try:
                return bool(httpx.get(health, timeout=3).json()["healthy"])
            except (httpx.HTTPError, ValueError):
                return False

        site.wait_until(healthy, 300, "a healthy site")
        nvr = sim_devices(1, DOMAIN)[0]
        camera = Sipp(
            tmp_path / "sipp", f"127.0.0.1:{sip_port}", "device_gb2312", [nvr], {"platform_id": PLATFORM,
            "domain": DOMAIN}, PASSWORD,
        ).start()  # fmt: skip
        sent = run_simulator(mosquitto.url, SENSORS, 2.0, 3.0, qos=1)
        publish_malformed(mosquitto.url)
        result = camera.wait(120)
        assert result.ok, result.log_tail

        check_lake(data_dir, sent.readings, nvr, modbus["devices"][0]["device_id"])
        check_apis(document, nvr)
    finally:
        site.signal(signal.SIGTERM)
        code = site.stop(timeout_s=60)
    assert code == 0, site.log_tail()
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(config) in text:
            leftovers.append(text)
    assert leftovers == []
