"""A GB28181 camera all the way to the lake: a SIPp-played NVR (GB2312
catalog in two MESSAGEs, DeviceInfo, keepalives, alarm, mobile position,
unregister) against the real `citylake ingest` process, then the real
`devices` and `events` jobs (batch); the lake's views are what is checked."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from citylake.config import load_config
from citylake.lake import Lake
from citylake.pipelines import runner
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess, free_port
from citylake_devstack.sipp import Sipp, sim_devices
from tests.integration.test_gb28181_sipp import DOMAIN, PASSWORD, PLATFORM, gb_source

pytestmark = pytest.mark.integration
Row = dict[str, Any]


def landed(data_dir: Path, name: str) -> list[Row]:
    files = sorted(DataLayout(data_dir).landing(table(name)).rglob("*.parquet"))
    return ds.dataset([str(f) for f in files], format="parquet").to_table().to_pylist() if files else []


def view(data_dir: Path, sql: str) -> list[Row]:
    lake = Lake(DataLayout(data_dir))
    try:
        cursor = lake.cursor()
        cursor.execute(sql)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
    finally:
        lake.close()


def test_a_sipp_camera_reaches_the_lake_devices_and_device_events(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    sip_port = free_port()
    config_path = city_config(sources=[gb_source(sip_port, "udp")])
    config = load_config(config_path).config
    metrics_port = free_port()
    ingest = ManagedProcess(
        "ingest",
        [
            sys.executable,
            "-m",
            "citylake",
            "ingest",
            "--config",
            str(config_path),
            "--metrics-port",
            str(metrics_port),
        ],
        tmp_path / "ingest.log",
    ).start()
    try:
        ingest.wait_port(metrics_port, 60)
        [nvr] = sim_devices(1, DOMAIN)
        keys = {"platform_id": PLATFORM, "domain": DOMAIN}
        sipp = Sipp(tmp_path / "sipp", f"127.0.0.1:{sip_port}", "device_gb2312", [nvr], keys, PASSWORD, "udp")
        sipp.start()
        result = sipp.wait(90)
        assert result.ok, result.log_tail
        # register, online, 2 catalogs, 2 keepalives, unregister, offline; alarm, position.
        ingest.wait_until(lambda: len(landed(config.data_dir, "device_events")) >= 10, 30, "device events")
    finally:
        ingest.stop()
    assert "Traceback" not in ingest.log_tail(), ingest.log_tail()

    for job in ("devices", "events"):
        runner.start(config, job, "batch").wait()

    devices = {r["device_id"]: r for r in view(config.data_dir, "SELECT * FROM devices")}
    assert set(devices) == {nvr.device_id, *nvr.channels}
    recorder = devices[nvr.device_id]
    assert {k: recorder[k] for k in ("name", "type", "protocol", "manufacturer", "model", "civil_code")} == {
        "name": "一号录像机",
        "type": "nvr",
        "protocol": "gb28181",
        "manufacturer": "Hikvision",
        "model": "DS-7808N",
        "civil_code": "34020000",
    }
    assert recorder["parent_id"] is None and recorder["status"] == "offline"  # it unregistered
    channels = [devices[c] for c in nvr.channels]
    # Decoded from GB2312 by the adapter, unchanged by the jobs and the view.
    assert [(c["name"], c["address"], c["status"]) for c in channels] == [
        ("东门摄像机", "人民路1号", "online"),
        ("西门球机", "解放路2号", "offline"),
        ("停车场入口", "长江路3号", "online"),
    ]
    # The first channel's mobile position carries the device's clock time, a
    # year before the catalog was received: the later catalog coordinates win.
    assert [(c["manufacturer"], c["model"], c["longitude"], c["latitude"]) for c in channels] == [
        ("Hikvision", "DS-2CD", 117.2272, 31.8206),
        ("Dahua", "SD-6C", 117.2301, 31.8190),
        ("Uniview", "IPC-B", None, None),
    ]
    assert {(c["parent_id"], c["civil_code"], c["type"], c["protocol"]) for c in channels} == {
        (nvr.device_id, "340200", "camera", "gb28181")
    }
    for row in devices.values():
        assert row["first_seen"] <= row["last_seen"]

    events = view(config.data_dir, "SELECT * FROM device_events ORDER BY ts, ingest_ts")
    kinds: dict[str, list[str]] = {}
    for event in events:
        kinds.setdefault(event["device_id"], []).append(event["kind"])
    # register/online and unregister/offline share a millisecond: compared as sets of kinds per time.
    assert sorted(kinds[nvr.device_id]) == sorted(
        ["register", "online", "catalog", "catalog", "keepalive", "keepalive", "unregister", "offline"]
    )
    assert [e["kind"] for e in events if e["device_id"] == nvr.device_id][-2:] in (
        ["unregister", "offline"], ["offline", "unregister"],
    )  # fmt: skip
    assert sorted(kinds[nvr.channels[0]]) == ["alarm", "position"]
    assert len(events) == 10
    alarm = next(e for e in events if e["kind"] == "alarm")
    assert json.loads(alarm["attributes"])["description"] == "区域入侵"

    # Every landed event, once, as it landed, with its partition date.
    def key(row: Row) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in table("device_events").schema.names)

    assert sorted(map(key, events)) == sorted(map(key, landed(config.data_dir, "device_events")))
    assert all(e["date"] == e["ts"].date() for e in events)
    assert {e["source"] for e in events} == {"video"}
