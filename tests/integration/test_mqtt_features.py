"""MQTT features against a real mosquitto: shared subscriptions split one
stream over processes, TLS with username/password, reconnect after the broker
restarts."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pyarrow.parquet as pq
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citylake.config import load_config
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout, table
from citylake_devstack import Mosquitto, start_mosquitto
from citylake_devstack.process import CITYLAKE
from tests.conftest import mqtt_source
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000


def runner_for(config: Path) -> tuple[IngestRunner, DataLayout]:
    loaded = load_config(config)
    layout = DataLayout(loaded.config.data_dir)
    return IngestRunner(build_sources(loaded), layout, loaded.config.site), layout


def landed_values(layout: DataLayout) -> list[float]:
    files = sorted(layout.landing(table("readings")).rglob("*.parquet"))
    return [r["value"] for f in files for r in pq.read_table(f).to_pylist()]


def publish_all(port: int, count: int, offset: int = 0, **tls: Any) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    if tls:
        client.username_pw_set(tls["username"], tls["password"])
        client.tls_set(ca_certs=tls["ca"])
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(f"city/d/air/air-{i}/telemetry", orjson.dumps({"ts": TS + i, "pm25": float(i)}), qos=1)
        for i in range(offset, offset + count)
    ]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


async def test_shared_subscription_splits_the_stream_exactly(
    mosquitto: Mosquitto, tmp_path: Path, city_config: Callable[..., Path]
) -> None:
    runners = []
    for n in (1, 2):
        source = mqtt_source(mosquitto.url, client_id=f"citylake-share-{n}", shared_group="ingest")
        config = city_config(sources=[source], data_dir=str(tmp_path / f"data-{n}"))
        config = config.rename(tmp_path / f"city-{n}.yaml")
        runners.append(runner_for(config))
    for runner, _ in runners:
        await runner.start()
        await wait_until(runner.sources[0].is_up, 30)
    publish_all(mosquitto.port, 400)
    await wait_until(lambda: sum(len(landed_values(layout)) for _, layout in runners) >= 400, 30)
    await asyncio.sleep(0.5)
    for runner, _ in runners:
        await runner.stop()
    first, second = (landed_values(layout) for _, layout in runners)
    assert first and second, "the broker should spread a shared subscription over both"
    assert sorted(first + second) == [float(i) for i in range(400)]


def make_tls(workdir: Path) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        workdir / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, cwd=workdir)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=citylake-test-ca", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))  # fmt: skip
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(workdir / "san.ext"), "-out", str(cert))  # fmt: skip
    passwords = workdir / "passwords"
    run("mosquitto_passwd", "-b", "-c", str(passwords), "meter-gw", "s3cret")
    return {"ca": ca, "cert": cert, "key": key, "passwords": passwords}


async def test_tls_and_password(tmp_path: Path, city_config: Callable[..., Path]) -> None:
    files = make_tls(tmp_path / "tls")
    broker = start_mosquitto(
        tmp_path / "broker",
        listener_config=(
            f"cafile {files['ca']}\ncertfile {files['cert']}\nkeyfile {files['key']}\n"
            f"allow_anonymous false\npassword_file {files['passwords']}\n"
        ),
    )
    try:
        good = mqtt_source(broker.url, username="meter-gw", password="s3cret", ca_file=str(files["ca"]))
        runner, layout = runner_for(city_config(sources=[good]))
        await runner.sources[0].check()
        await runner.start()
        await wait_until(runner.sources[0].is_up, 30)
        publish_all(broker.port, 5, ca=str(files["ca"]), username="meter-gw", password="s3cret")
        await wait_until(lambda: len(landed_values(layout)) == 5, 30)
        await runner.stop()

        wrong = mqtt_source(broker.url, username="meter-gw", password="guess", ca_file=str(files["ca"]))
        [source] = build_sources(load_config(city_config(sources=[wrong])))
        with pytest.raises(SourceUnavailable, match="refused the connection"):
            await source.check()
        no_ca = mqtt_source(broker.url, username="meter-gw", password="s3cret")
        [source] = build_sources(load_config(city_config(sources=[no_ca])))
        with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await source.check()
    finally:
        broker.process.stop()


async def test_reconnects_after_the_broker_restarts(tmp_path: Path, city_config: Callable[..., Path]) -> None:
    broker = start_mosquitto(tmp_path / "broker")
    port = broker.port
    source = mqtt_source(broker.url, client_id="citylake-reconnect", reconnect_min_s=0.2, reconnect_max_s=2)
    runner, layout = runner_for(city_config(sources=[source]))
    await runner.start()
    try:
        await wait_until(runner.sources[0].is_up, 30)
        publish_all(port, 10)
        await wait_until(lambda: len(landed_values(layout)) == 10, 30)
        broker.process.stop()
        await wait_until(lambda: not runner.sources[0].is_up(), 30)
        await asyncio.sleep(1.0)
        broker = start_mosquitto(tmp_path / "broker", port=port)
        await wait_until(runner.sources[0].is_up, 30)
        publish_all(port, 10, offset=10)
        await wait_until(lambda: len(landed_values(layout)) == 20, 30)
    finally:
        await runner.stop()
        broker.process.stop()
    assert sorted(landed_values(layout)) == [float(i) for i in range(20)]


async def test_health_reports_a_source_down_and_recovers(
    tmp_path: Path, city_config: Callable[..., Path]
) -> None:
    from fastapi.testclient import TestClient

    from citylake.ingest.ops import create_ops_app

    broker = start_mosquitto(tmp_path / "broker")
    port = broker.port
    runner, _ = runner_for(
        city_config(sources=[mqtt_source(broker.url, reconnect_min_s=0.2, reconnect_max_s=1)])
    )
    await runner.start()
    http = TestClient(create_ops_app(runner))
    try:
        await wait_until(runner.sources[0].is_up, 30)
        assert http.get("/healthz").json()["status"] == "ok"
        broker.process.stop()
        await wait_until(lambda: http.get("/healthz").status_code == 503, 30)
        assert http.get("/healthz").json()["checks"]["source:sensors"] == "down"
        assert "citylake_ingest_source_up" in http.get("/metrics").text
        broker = start_mosquitto(tmp_path / "broker", port=port)
        await wait_until(lambda: http.get("/healthz").status_code == 200, 30)
    finally:
        await runner.stop()
        broker.process.stop()


async def test_sparkplug_b_births_data_and_deaths_land(
    mosquitto: Mosquitto, city_config: Callable[..., Path]
) -> None:
    from citylake.ingest.mqtt import sparkplug as spb

    def message(*metrics: dict[str, Any]) -> bytes:
        payload = spb.Payload(timestamp=TS, seq=0)
        for fields in metrics:
            payload.metrics.add(**fields)
        return bytes(payload.SerializeToString())

    source = {**mqtt_source(mosquitto.url), "topics": [], "sparkplug_groups": ["plant1"]}
    runner, layout = runner_for(city_config(sources=[source]))
    await runner.start()
    await wait_until(runner.sources[0].is_up, 30)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-node-gw7")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    for topic, body in [
        ("spBv1.0/plant1/NBIRTH/gw7",
         message({"name": "uptime", "alias": 1, "datatype": spb.UINT32, "int_value": 5})),
        ("spBv1.0/plant1/DBIRTH/gw7/pump3",
         message({"name": "flow", "alias": 10, "datatype": spb.FLOAT, "float_value": 1.5})),
        ("spBv1.0/plant1/DDATA/gw7/pump3",
         message({"alias": 10, "float_value": 2.5, "timestamp": TS + 1000})),
        ("spBv1.0/plant1/DDATA/gw7/pump3", b"not protobuf at all \xff\xff"),
        ("spBv1.0/plant1/DDEATH/gw7/pump3", message()),
        ("spBv1.0/other/NDATA/gw9", message({"name": "x", "datatype": spb.FLOAT, "float_value": 9})),
    ]:  # fmt: skip
        client.publish(topic, body, qos=1).wait_for_publish(10)

    def landed(name: str) -> list[dict[str, Any]]:
        return [
            r
            for f in sorted(layout.landing(table(name)).rglob("*.parquet"))
            for r in pq.read_table(f).to_pylist()
        ]

    await wait_until(
        lambda: (
            len(landed("readings")) == 3 and len(landed("device_events")) == 3 and bool(landed("rejected"))
        ),
        30,
    )
    await runner.stop()
    client.disconnect()
    readings = sorted((r["device_id"], r["metric"], r["value"]) for r in landed("readings"))
    assert readings == [("gw7", "uptime", 5.0), ("gw7/pump3", "flow", 1.5), ("gw7/pump3", "flow", 2.5)]
    events = sorted((e["device_id"], e["kind"]) for e in landed("device_events"))
    assert events == [("gw7", "online"), ("gw7/pump3", "offline"), ("gw7/pump3", "online")]
    [rejected] = landed("rejected")
    assert rejected["reason"].startswith("invalid Sparkplug B payload on spBv1.0/plant1/DDATA/gw7/pump3")
    # One devices row per device at its first birth; DATA and DEATH add none.
    devices = sorted((d["device_id"], d["type"], d["parent_id"], d["protocol"]) for d in landed("devices"))
    assert devices == [
        ("gw7", "sparkplug_edge_node", None, "mqtt"),
        ("gw7/pump3", "sparkplug_device", "gw7", "mqtt"),
    ]


def test_ingest_check_tries_each_source(mosquitto: Mosquitto, city_config: Callable[..., Path]) -> None:
    import os

    from citylake_devstack import free_port

    dead = {**mqtt_source(f"mqtt://127.0.0.1:{free_port()}"), "name": "nowhere"}
    config = city_config(sources=[mqtt_source(mosquitto.url), dead])
    done = subprocess.run(
        [*CITYLAKE, "ingest", "--check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "ok   sensors" in done.stderr
    assert "fail nowhere: MQTT broker 127.0.0.1:" in done.stderr
