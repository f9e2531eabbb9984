"""Real mosquitto, real `citylake ingest` (a separate process): topic levels land
as `devices` rows on first sight and change only, a metric keeps one type
(rejects naming source, device, metric and both types; the message's other
readings land), and floods of device ids and metric names stay within their
bounds, as the process's own /metrics says."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citylake.schemas import DataLayout
from citylake_devstack import ManagedProcess, Mosquitto, free_port
from citylake_devstack.process import CITYLAKE
from tests.conftest import mqtt_source
from tests.landing_rows import landed
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000
KNOWN_DEVICES_MAX = 40
METRIC_TYPES_MAX = 30
FLOOD = 200


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    wanted = "".join(f'(?=[^}}]*{k}="{re.escape(v)}")' for k, v in labels.items())
    pattern = rf"^{name}(?:\{{{wanted}[^}}]*\}})? ([0-9.e+-]+)$"
    found = re.findall(pattern, text, flags=re.MULTILINE)
    return float(found[0]) if found else 0.0


@pytest.fixture
def ingest(
    mosquitto: Mosquitto, city_config: Callable[..., Path], tmp_path: Path
) -> Iterator[tuple[ManagedProcess, int, Path]]:
    source = mqtt_source(
        mosquitto.url,
        client_id="citylake-devices-test",
        known_devices_max=KNOWN_DEVICES_MAX,
        metric_types={"status": "any", "label": "text"},
    )
    source["topics"] = [
        {"template": "city/{district}/{device_type}/{device_id}/telemetry"},
        {"template": "campus/{district}/{building}/{device_id}/telemetry"},
    ]
    config = city_config(sources=[source], ingest={"metric_types_max": METRIC_TYPES_MAX})
    port = free_port()
    process = ManagedProcess(
        "ingest",
        [*CITYLAKE, "ingest", "--config", str(config), "--metrics-port", str(port)],
        tmp_path / "ingest.log",
    ).start()
    try:
        process.wait_port(port, 60)
        wait_for(
            lambda: metric(port, "citylake_ingest_source_up", source="sensors") == 1, 30, "MQTT connection"
        )
        yield process, port, tmp_path / "data"
    finally:
        process.stop()


def publisher(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, document: object) -> None:
    client.publish(topic, orjson.dumps(document), qos=1).wait_for_publish(10)


def test_devices_rows_and_type_conflicts_through_citylake_ingest(
    mosquitto: Mosquitto, ingest: tuple[ManagedProcess, int, Path]
) -> None:
    _, port, data_dir = ingest
    layout = DataLayout(data_dir)
    client = publisher(mosquitto)
    try:
        publish(
            client, "city/gulou/air_quality/aq-1/telemetry", {"ts": TS, "temp": 15.2, "hum": 40, "label": "n"}
        )
        publish(client, "city/gulou/air_quality/aq-1/telemetry", {"ts": TS + 1, "temp": 15.25})  # no new row
        publish(client, "city/320106/noise/nz-1/telemetry", {"ts": TS, "db": 61, "status": "ok"})
        publish(client, "campus/Xuanwu/B7/hall-3/telemetry", {"ts": TS, "temp": 21.0})
        # One message mixing types, as a sloppy gateway sends them.
        publish(
            client,
            "city/gulou/air_quality/aq-1/telemetry",
            [
                {"ts": TS + 2, "temp": 15.3, "hum": 41},
                {"ts": TS + 3, "temp": "15.3", "hum": "n/a", "pm25": 12},
            ],
        )
        publish(client, "city/320106/noise/nz-1/telemetry", {"ts": TS + 1, "status": 3, "label": 7})
        # aq-1 moves: its levels changed, so one more row.
        publish(client, "city/xuanwu/air_quality/aq-1/telemetry", {"ts": TS + 4, "temp": 15.4})

        def settled() -> bool:
            return len(landed(layout, "readings")) >= 12 and len(landed(layout, "rejected")) >= 3

        wait_for(settled, 60, "the readings and rejects of 7 messages in landing")
    finally:
        client.disconnect()

    devices = landed(layout, "devices")
    summary = sorted(
        (d["device_id"], d["type"], d["district"], d["civil_code"], d["attributes"], d["protocol"])
        for d in devices
    )
    assert summary == [
        ("aq-1", "air_quality", "gulou", None, None, "mqtt"),
        ("aq-1", "air_quality", "xuanwu", None, None, "mqtt"),
        ("hall-3", None, "Xuanwu", None, '{"building":"B7"}', "mqtt"),
        ("nz-1", "noise", None, "320106", None, "mqtt"),
    ]
    moved = sorted((d for d in devices if d["device_id"] == "aq-1"), key=lambda d: d["last_seen"])
    assert moved[0]["first_seen"] == moved[1]["first_seen"] <= moved[1]["last_seen"]

    readings = sorted(
        ((r["device_id"], r["metric"], r["value"], r["text"]) for r in landed(layout, "readings")),
        key=lambda r: (r[0], r[1], -1.0 if r[2] is None else r[2], r[3] or ""),
    )
    assert readings == [
        ("aq-1", "hum", 40.0, None), ("aq-1", "hum", 41.0, None), ("aq-1", "label", None, "n"),
        ("aq-1", "pm25", 12.0, None),  # the neighbour of two refused readings lands
        ("aq-1", "temp", 15.2, None), ("aq-1", "temp", 15.25, None), ("aq-1", "temp", 15.3, None),
        ("aq-1", "temp", 15.4, None),
        ("hall-3", "temp", 21.0, None),
        ("nz-1", "db", 61.0, None), ("nz-1", "status", None, "ok"), ("nz-1", "status", 3.0, None),
    ]  # fmt: skip
    reasons = sorted(r["reason"] for r in landed(layout, "rejected"))
    assert [r.split(";")[0] for r in reasons] == [
        "metric type conflict: source sensors device aq-1 metric hum expects number (fixed at first sight), "
        "received text 'n/a'",
        "metric type conflict: source sensors device aq-1 metric temp expects number (fixed at first sight), "
        "received text '15.3'",
        "metric type conflict: source sensors device nz-1 metric label expects text "
        "(declared in metric_types), received number 7.0",
    ]
    raw = {r["raw"] for r in landed(layout, "rejected") if "aq-1" in r["reason"]}
    assert len(raw) == 1 and b'"hum":"n/a"' in raw.pop()
    assert (
        metric(port, "citylake_ingest_rejected_total", source="sensors", reason="metric type conflict") == 3
    )


def test_floods_of_device_ids_and_metric_names_stay_within_their_bounds(
    mosquitto: Mosquitto, ingest: tuple[ManagedProcess, int, Path]
) -> None:
    _, port, data_dir = ingest
    layout = DataLayout(data_dir)
    client = publisher(mosquitto)
    try:
        for index in range(FLOOD):
            publish(client, f"city/gulou/air_quality/flood-{index}/telemetry", {"ts": TS, f"m{index}": 1.0})
        # The first device again, long forgotten: one more row, no lost reading.
        publish(client, "city/gulou/air_quality/flood-0/telemetry", {"ts": TS + 1, "m0": 2.0})
        wait_for(lambda: len(landed(layout, "readings")) == FLOOD + 1, 90, f"{FLOOD + 1} flood readings")
        evicted = {"source": "sensors", "event": "known_devices_evicted"}
        wait_for(
            lambda: (
                metric(port, "citylake_ingest_adapter_events_total", **evicted)
                == FLOOD + 1 - KNOWN_DEVICES_MAX
            ),
            20,
            "the evictions in /metrics",
        )
    finally:
        client.disconnect()
    devices = landed(layout, "devices")
    assert len(devices) == FLOOD + 1  # first sight of each, and flood-0 again after its eviction
    assert sorted(d["device_id"] for d in devices).count("flood-0") == 2
    assert metric(port, "citylake_ingest_metric_types_known") == METRIC_TYPES_MAX
    # m0 was forgotten too, and fixed again by flood-0's second reading.
    assert metric(port, "citylake_ingest_metric_types_evicted_total") == FLOOD + 1 - METRIC_TYPES_MAX
    assert landed(layout, "rejected") == []
    assert json.dumps(sorted({d["district"] for d in devices})) == '["gulou"]'
