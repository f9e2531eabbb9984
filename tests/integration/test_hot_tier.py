"""The hot tier end to end, with real parts only: an MQTT device publishes to
mosquitto, `citylake ingest` lands the reading and publishes it through its
daprd, the query service's daprd delivers it (Dapr pub/sub over the same
mosquitto), and `/v1/devices/{id}/latest` answers from memory before any
pipeline has put it in the lake. Restarted, the service rebuilds the tier from
the lake before it reports ready."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from paho.mqtt import publish

from citylake_devstack import Daprd, ManagedProcess, Mosquitto, free_port, start_service
from tests.conftest import mqtt_source
from tests.lakedata import reading, write_lake_readings
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_live_readings_reach_the_hot_tier_through_dapr_and_it_rebuilds_from_the_lake(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    city_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    data_dir = tmp_path / "data"
    # Already in the lake: a device the live feed never mentions.
    write_lake_readings(data_dir, [reading("gauge-7", "level", now - timedelta(minutes=3), 4.25)])
    config = city_config(
        sources=[mqtt_source(mosquitto.url)],
        ingest={"live_pubsub": "citylake-pubsub", "flush_max_age_s": 0.2},
        services={"query": {"live_pubsub": "citylake-pubsub", "hot_window_s": 900}},
    )
    query_port, ingest_ops_port = free_port(), free_port()
    query_sidecar = daprd_factory("query", query_port, mosquitto.url)
    ingest_sidecar = daprd_factory("ingest", ingest_ops_port, mosquitto.url)
    query_env = {"DAPR_HTTP_PORT": str(query_sidecar.http_port)}
    base = f"http://127.0.0.1:{query_port}"
    ingest = ManagedProcess(
        "ingest",
        [
            sys.executable,
            "-m",
            "citylake",
            "ingest",
            "--config",
            str(config),
            "--metrics-port",
            str(ingest_ops_port),
        ],
        tmp_path / "ingest.log",
        env={"DAPR_HTTP_PORT": str(ingest_sidecar.http_port)},
    ).start()
    try:
        with start_service("query", config, query_port, tmp_path, env=query_env) as service:
            health = httpx.get(f"{base}/healthz", timeout=5).json()
            assert health["checks"]["hot_tier"] == "ok", health
            from_lake = httpx.get(f"{base}/v1/devices/gauge-7/latest", timeout=5)
            assert from_lake.headers["x-served-from"] == "hot", "rebuilt from the lake at start"
            assert from_lake.json()["readings"][0]["value"] == 4.25

            wait_for(lambda: ingest.alive() and _ingest_ready(ingest_ops_port), 60, "ingest health")
            sent_at = now + timedelta(seconds=1)

            def published_and_seen() -> bool:
                payload = {"ts": int(sent_at.timestamp() * 1000), "pm25": 37.5}
                publish.single(
                    "city/gulou/air/aq-1/telemetry",
                    json.dumps(payload),
                    qos=1,
                    hostname="127.0.0.1",
                    port=mosquitto.port,
                )
                got = httpx.get(f"{base}/v1/devices/aq-1/latest", timeout=5)
                return got.status_code == 200

            # Until both sidecars have subscribed and connected, a batch may
            # be dropped (counted); the same reading published again is one
            # reading (dedupe by device, metric and ts).
            wait_for(published_and_seen, 60, "live reading in the hot tier")
            got = httpx.get(f"{base}/v1/devices/aq-1/latest", timeout=5)
            assert got.headers["x-served-from"] == "hot"
            assert got.json()["readings"] == [
                {
                    "metric": "pm25",
                    "ts": sent_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "value": 37.5,
                    "text": None,
                    "unit": "ug/m3",
                    "quality": 0,
                }
            ]
            recent = httpx.get(
                f"{base}/v1/devices/aq-1/readings",
                params={
                    "from": (now - timedelta(minutes=1)).isoformat(),
                    "to": (now + timedelta(minutes=1)).isoformat(),
                },
                timeout=5,
            )
            assert recent.headers["x-served-from"] == "hot"
            assert [r["value"] for r in recent.json()["items"]] == [37.5]
            older = httpx.get(
                f"{base}/v1/devices/gauge-7/readings",
                params={"from": (now - timedelta(hours=2)).isoformat(), "to": now.isoformat()},
                timeout=5,
            )
            before_window = older.headers["x-served-from"]
            assert before_window in ("store", "lake"), "before the window: not the hot tier's"
            assert [r["value"] for r in older.json()["items"]] == [4.25]
            # A malformed message on the live topic is dropped, not retried forever.
            publish.single("readings", b"not arrow", qos=1, hostname="127.0.0.1", port=mosquitto.port)
            wait_for(lambda: "citylake_hot_dropped_batches_total 1.0" in _metrics(base), 30, "drop counted")
            assert service.alive()
    finally:
        ingest.stop()
    assert "live feed: landed readings published" in (tmp_path / "ingest.log").read_text()


def _ingest_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _metrics(base: str) -> str:
    return httpx.get(f"{base}/metrics", timeout=5).text
