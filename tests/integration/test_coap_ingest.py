"""CoAP adapter against Debian's libcoap: ``coap-server`` (its dynamic,
observable resources) observed by the adapter, and ``coap-client`` pushing
to the adapter's own server; through the real IngestRunner into landing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import orjson
import pytest

from citylake.ingest.coap.adapter import CoapSource
from citylake.ingest.coap.config import CoapSourceConfig
from citylake_devstack import ComponentUnavailable
from citylake_devstack.coap_server import CoapServer, coap_client, start_coap_server
from citylake_devstack.process import free_udp_port
from tests.landing_rows import landed, make_runner
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
T0 = 1_764_072_000  # 2025-11-25T12:00:00Z, in seconds as SenML has it


@pytest.fixture
def coap_server(tmp_path: Path) -> Iterator[CoapServer]:
    try:
        server = start_coap_server(tmp_path / "coap")
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start coap-server: {exc}", pytrace=False)
    yield server
    server.process.stop()


async def put(url: str, payload: bytes, content_format: int) -> str:
    done = await asyncio.to_thread(coap_client, "put", url, payload, content_format)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode(errors="replace")


def senml(value: float, t: int) -> bytes:
    return orjson.dumps([{"bn": "air-1:", "bt": T0, "n": "pm25", "u": "ug/m3", "v": value, "t": t},
                         {"n": "humidity", "u": "%RH", "v": 40 + t, "t": t}])  # fmt: skip


async def test_observes_senml_cbor_json_and_text_resources(
    coap_server: CoapServer, city_config: Callable[..., Path]
) -> None:
    base = coap_server.url
    # The resources exist on the device before we observe them (coap-server -d creates on PUT).
    await put(f"{base}/air/1", senml(12.5, 0), 110)
    cbor_pack = cbor2.dumps([{-2: "air-2:", -3: T0, 0: "no2", 1: "ug/m3", 2: 30.0}])  # RFC 8428 labels
    await put(f"{base}/air/2", cbor_pack, 112)
    await put(f"{base}/meter/1", orjson.dumps({"ts": T0 * 1000, "flow": 3.5, "state": "open"}), 50)
    await put(f"{base}/level/1", b"1.75", 0)
    raw = {
        "name": "nbiot",
        "type": "coap",
        "url": base,
        "units": {"flow": "m3/h"},
        "reobserve_min_s": 0.2,
        "reobserve_max_s": 0.5,
        "timeout_s": 2,
        "resources": [
            {"device_id": "air-1", "path": "/air/1"},
            {"device_id": "air-2", "path": "/air/2"},
            {"device_id": "meter-1", "path": "/meter/1"},
            {"device_id": "level-1", "path": "/level/1", "metric": "level", "unit": "m"},
            {"device_id": "ghost-1", "path": "/not/there"},
        ],
        "devices": {"air-1": {"name": "Air station 1", "device_type": "air_quality"}},
    }
    source = CoapSource(CoapSourceConfig.model_validate(raw))
    runner, layout = make_runner(city_config(sources=[raw]), sources=[source])
    await runner.start()
    try:
        await wait_until(lambda: sum(source.observing.values()) == 4, 15)
        await put(f"{base}/air/1", senml(14.0, 60), 110)  # a notification to the observer
        await put(f"{base}/level/1", b"1.80", 0)
        await put(f"{base}/air/1", b'[{"n": "pm25", "v": "high"}]', 110)  # v must be a number
        await wait_until(
            lambda: len([r for r in landed(layout, "readings") if r["device_id"] == "air-1"]) >= 4, 15
        )
        await wait_until(lambda: len(landed(layout, "rejected")) >= 1, 15)
    finally:
        await runner.stop()
    readings = landed(layout, "readings")
    air = sorted((int(r["ts"].timestamp()), r["metric"], r["value"], r["unit"])
                 for r in readings if r["device_id"] == "air-1")  # fmt: skip
    assert air == [(T0, "humidity", 40.0, "%RH"), (T0, "pm25", 12.5, "ug/m3"),
                   (T0 + 60, "humidity", 100.0, "%RH"), (T0 + 60, "pm25", 14.0, "ug/m3")]  # fmt: skip
    no2 = [r for r in readings if r["device_id"] == "air-2"]
    assert [(r["metric"], r["value"], r["unit"], int(r["ts"].timestamp())) for r in no2] == [
        ("no2", 30.0, "ug/m3", T0)
    ]
    meter = {r["metric"]: r for r in readings if r["device_id"] == "meter-1"}
    assert meter["flow"]["value"] == 3.5 and meter["flow"]["unit"] == "m3/h"
    assert meter["state"]["text"] == "open"
    assert [(r["value"], r["unit"]) for r in readings if r["device_id"] == "level-1"] == [
        (1.75, "m"),
        (1.8, "m"),
    ]
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert any(
        r.startswith("coap application/senml+json: SenML record 0: v must be a number") for r in reasons
    )
    events = {(e["device_id"], e["kind"]) for e in landed(layout, "device_events")}
    assert {("air-1", "online"), ("level-1", "online"), ("ghost-1", "offline")} <= events
    assert ("ghost-1", "online") not in events  # 4.04 Not Found is not an observation
    devices = {d["device_id"]: d for d in landed(layout, "devices")}
    assert devices["air-1"]["name"] == "Air station 1" and devices["air-1"]["protocol"] == "coap"


def response_code(stdout: str) -> str:
    codes = re.findall(r"c:(\d\.\d\d)", stdout)
    return codes[-1] if codes else stdout


async def test_server_answers_after_commit_and_rejects_hostile_pushes(
    city_config: Callable[..., Path],
) -> None:
    port = free_udp_port()
    raw = {"name": "push", "type": "coap", "mode": "server", "url": f"coap://127.0.0.1:{port}",
           "path": "/telemetry/{device_id}", "max_payload_bytes": 512, "max_devices": 2}  # fmt: skip
    source = CoapSource(CoapSourceConfig.model_validate(raw))
    runner, layout = make_runner(city_config(sources=[raw]), sources=[source])
    await runner.start()
    url = f"coap://127.0.0.1:{port}/telemetry"
    try:
        pack = orjson.dumps(
            [{"bt": T0, "n": "level", "u": "m", "v": 2.25}, {"n": "battery", "u": "%", "v": 88}]
        )
        out = await asyncio.to_thread(coap_client, "post", f"{url}/well-7", pack, 110)
        assert response_code(out.stdout.decode()) == "2.04"
        # Ack-after-commit: when the device has its 2.04, the rows are in landing.
        rows = [r for r in landed(layout, "readings") if r["device_id"] == "well-7"]
        assert sorted((r["metric"], r["value"], r["unit"]) for r in rows) == [
            ("battery", 88.0, "%"),
            ("level", 2.25, "m"),
        ]
        cbor = cbor2.dumps([{-2: "x:", -3: T0, 0: "temp", 1: "Cel", 2: 7.5}])
        out = await asyncio.to_thread(coap_client, "put", f"{url}/well-8", cbor, 112)
        assert response_code(out.stdout.decode()) == "2.04"
        hostile = [
            (b'[{"n": "level", "v": 1, "vs": "x"}]', 110, "4.00"),  # two values in one record
            (b"\xff\xfe not json", 50, "4.00"),
            (b"\x9f\xff\xff", 112, "4.00"),  # broken CBOR
            (b"<level>1</level>", 41, "4.15"),  # application/xml
            (b"[" + b'{"n":"a","v":1},' * 40 + b'{"n":"a","v":1}]', 110, "4.13"),
        ]
        for payload, fmt, code in hostile:
            out = await asyncio.to_thread(coap_client, "post", f"{url}/well-9", payload, fmt)
            assert response_code(out.stdout.decode()) == code, (payload, out.stdout)
        out = await asyncio.to_thread(coap_client, "post", f"coap://127.0.0.1:{port}/elsewhere", pack, 110)
        assert response_code(out.stdout.decode()) == "4.04"
    finally:
        await runner.stop()
    reasons = [r["reason"] for r in landed(layout, "rejected")]
    assert len(reasons) == 5, reasons
    assert any("expected exactly one of v, vs, vb, vd, s" in r for r in reasons)
    assert any(r.startswith("coap application/senml+cbor: invalid SenML CBOR") for r in reasons), reasons
    assert any(r.startswith("coap unsupported Content-Format 41") for r in reasons)
    assert any(r.startswith("coap payload too large") for r in reasons)
    temp = [r for r in landed(layout, "readings") if r["device_id"] == "well-8"]
    assert [(r["metric"], r["value"], r["unit"]) for r in temp] == [("temp", 7.5, "Cel")]
    devices = {d["device_id"] for d in landed(layout, "devices")}
    assert {"well-7", "well-8"} <= devices
    assert source.responses["2.04 Changed"] == 2
