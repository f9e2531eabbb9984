"""The GB28181 platform (the real adapter under the real IngestRunner) with a
camera that keeps its dialogs apart and answers queries out of call
(tests/gb28181_camera.py): every fact it reports must reach landing, and
every request of the platform must be a new call (RFC 3261 8.1.1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import generate_latest

from citylake.config import load_config
from citylake.ingest.gb28181.adapter import GB28181Source
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.process import free_port
from tests.gb28181_camera import SeparateDialogCamera
from tests.landing_rows import landed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
PLATFORM = "31010000002000000001"
DOMAIN = "3101000000"
PASSWORD = "interop-pw"
NVR = "31010100001180000001"
CHANNELS = ("31010100001310000001", "31010100001310000002")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def local_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


async def start_platform(
    city_config: Callable[..., Path],
) -> tuple[IngestRunner, DataLayout, GB28181Source, int]:
    port = free_port()
    source_config = {
        "name": "video",
        "type": "gb28181",
        "url": f"udp://127.0.0.1:{port}",
        "platform_id": PLATFORM,
        "domain": DOMAIN,
        "password": PASSWORD,
    }
    loaded = load_config(city_config(sources=[source_config]))
    layout = DataLayout(loaded.config.data_dir)
    runner = IngestRunner(build_sources(loaded), layout, loaded.config.site)
    await runner.start()
    source = runner.sources[0]
    assert isinstance(source, GB28181Source)
    await wait_until(source.is_up, 20, "GB28181 listener")
    return runner, layout, source, port


async def test_unanswered_request_is_retransmitted_then_given_up(city_config: Callable[..., Path]) -> None:
    runner, _, source, port = await start_platform(city_config)
    # Timer F is 32 s; the same timers on a shorter fuse keep the test short.
    source.transactions.timeout_s = 3.0
    try:
        async with SeparateDialogCamera(
            ("127.0.0.1", port), PLATFORM, DOMAIN, PASSWORD, NVR, CHANNELS, silent=True
        ) as camera:
            assert await camera.register() == 200
            await wait_until(
                lambda: any(r.cmd_type == "DeviceInfo" for r in camera.received), 10, "DeviceInfo query"
            )
            # /metrics shows the timeout, as it shows every count the source keeps.
            timed_out = 'citylake_ingest_adapter_events_total{event="queries_timed_out",source="video"} 1.0'
            await wait_until(
                lambda: timed_out in generate_latest(runner.metrics.registry).decode(),
                10,
                "timeout on /metrics",
            )
    finally:
        await runner.stop()
    catalog = [r for r in camera.received if r.cmd_type == "Catalog"]
    info = next(r for r in camera.received if r.cmd_type == "DeviceInfo")
    # Timer E over UDP: 0.5, 1.5 s after the first copy, byte for byte; then
    # Timer F ends it and the device's next request goes.
    assert len(catalog) == 3 and {r.data for r in catalog} == {catalog[0].data}
    # Bounds from below are the RFC's; from above, slack for a loaded machine.
    gaps = [r.at - catalog[0].at for r in catalog[1:]]
    assert 0.45 <= gaps[0] < 1.2 and 1.45 <= gaps[1] < 2.5
    assert 2.95 <= info.at - catalog[0].at < 4.5
    assert info.call_id != catalog[0].call_id
    assert source.stats["queries_timed_out"] == 1 and source.stats["queries_retransmitted"] >= 2


async def test_camera_with_separate_dialogs_lands_every_fact(city_config: Callable[..., Path]) -> None:
    runner, layout, source, port = await start_platform(city_config)
    try:
        async with SeparateDialogCamera(
            ("127.0.0.1", port), PLATFORM, DOMAIN, PASSWORD, NVR, CHANNELS
        ) as camera:
            assert await camera.register() == 200
            await camera.settled()
            status, keepalive_ok = await camera.keepalive(1)
            assert (await camera.alarm(CHANNELS[0]))[0] == 200
            assert (await camera.position(CHANNELS[1]))[0] == 200
            await wait_until(
                lambda: any(r.cmd_type == "Alarm" for r in camera.received), 20, "Alarm response"
            )
            await wait_until(
                lambda: source.stats["queries_answered"] == 3, 20, "answers to all three requests"
            )
            assert await camera.unregister() == 200
            await wait_until(
                lambda: any(e["kind"] == "offline" for e in landed(layout, "device_events")), 20, "offline"
            )
    finally:
        await runner.stop()

    # Keepalive answered in its own dialog: Call-ID and CSeq of the REGISTER call.
    assert status == 200
    assert keepalive_ok["call-id"] == camera.register_call_id and keepalive_ok["cseq"] == "3 MESSAGE"
    assert_platform_requests(camera, source)
    assert_events(landed(layout, "device_events"))
    assert_devices(layout)


def assert_platform_requests(camera: SeparateDialogCamera, source: GB28181Source) -> None:
    """Each request of the platform is a new call, none in the registration's."""

    assert camera.ignored == []
    kinds = [r.cmd_type for r in camera.received]
    assert kinds == ["Catalog", "DeviceInfo", "DeviceInfo", "Alarm"]
    catalog, info_lost, info_again, alarm_response = camera.received
    assert info_again.data == info_lost.data  # Timer E: the same request, byte for byte
    assert info_again.at - info_lost.at >= 0.45
    firsts = [catalog, info_lost, alarm_response]
    assert len({r.call_id for r in firsts} | {camera.register_call_id}) == 4
    assert len({r.from_tag for r in firsts}) == 3
    assert len({r.branch for r in firsts}) == 3 and all(r.branch.startswith("z9hG4bK") for r in firsts)
    cseqs = [int(r.headers["cseq"].split()[0]) for r in firsts]
    assert all(r.headers["cseq"].endswith(" MESSAGE") for r in firsts) and len(set(cseqs)) == 3
    assert source.stats["queries_retransmitted"] >= 1 and source.stats["queries_timed_out"] == 0


def assert_events(events: list[dict[str, Any]]) -> None:
    by_device: dict[str, list[str]] = {}
    for e in events:
        by_device.setdefault(e["device_id"], []).append(e["kind"])
    assert by_device == {
        NVR: ["register", "online", "catalog", "catalog", "keepalive", "unregister", "offline"],
        CHANNELS[0]: ["alarm"],
        CHANNELS[1]: ["position"],
    }
    catalogs = [json.loads(e["attributes"]) for e in events if e["kind"] == "catalog"]
    assert [(c["num"], c["received"], c["sum_num"], c["channels"]) for c in catalogs] == [
        (1, 1, 2, [CHANNELS[0]]),
        (1, 2, 2, [CHANNELS[1]]),
    ]
    [alarm] = [e for e in events if e["kind"] == "alarm"]
    alarm_attributes = json.loads(alarm["attributes"])
    assert alarm["ts"].timestamp() * 1000 == local_ms("2026-11-30T08:15:00")
    assert (alarm_attributes["description"], alarm_attributes["from"], alarm_attributes["type"]) == (
        "越线告警",
        NVR,
        "4",
    )
    [position] = [e for e in events if e["kind"] == "position"]
    assert position["ts"].timestamp() * 1000 == local_ms("2026-11-30T08:15:10")


def assert_devices(layout: DataLayout) -> None:
    devices: dict[str, dict[str, Any]] = {}
    for row in landed(layout, "devices"):
        devices[row["device_id"]] = row
    assert set(devices) == {NVR, *CHANNELS}
    nvr = devices[NVR]
    assert (nvr["name"], nvr["manufacturer"], nvr["model"], nvr["type"], nvr["status"]) == (
        "黄浦区录像机",
        "海康威视",
        "DS-9616N",
        "nvr",
        "offline",
    )
    facts = [
        (
            d["name"],
            d["manufacturer"],
            d["civil_code"],
            d["address"],
            d["longitude"],
            d["latitude"],
            d["status"],
        )
        for d in (devices[c] for c in CHANNELS)
    ]
    assert facts == [
        ("南京路步行街", "海康威视", "310101", "南京东路100号", 121.4737, 31.2304, "online"),
        ("外滩观景台", "大华", "310101", "中山东一路", 121.4903, 31.2397, "offline"),
    ]
    assert {devices[c]["parent_id"] for c in CHANNELS} == {NVR}

    readings = sorted((r["device_id"], r["metric"], r["value"]) for r in landed(layout, "readings"))
    assert readings == sorted(
        (CHANNELS[1], metric, value)
        for metric, value in [
            ("longitude", 121.4741),
            ("latitude", 31.2311),
            ("speed", 12.5),
            ("direction", 270.0),
            ("altitude", 8.0),
        ]
    )
    assert landed(layout, "rejected") == []
