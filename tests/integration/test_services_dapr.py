"""The registry and alerts services beside real daprd sidecars (and mosquitto
behind Dapr pub/sub), with the component files of deploy/dapr/components/:

- registry reached through Dapr service invocation;
- alert rules kept in the real SQLite state store component, surviving a restart;
- alert events received by a subscriber app through its own daprd, once each,
  across a restart of the alerts service.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from citylake_devstack import Daprd, Mosquitto, free_port, start_service
from tests.lakedata import alert, write_lake_table
from tests.realcity import RealCity
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = {"X-API-Key": "k1"}


def test_registry_through_dapr_service_invocation(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    real_city: RealCity,
    tmp_path: Path,
) -> None:
    """The registry on the lake the real producers wrote: a SIPp NVR's GB2312
    catalog, MQTT sensors' topic levels, configured pump stations."""
    document = yaml.safe_load(real_city.config.read_text())
    document["services"] = {"registry": {"api_keys": ["k1"]}}
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(document, allow_unicode=True))
    camera = real_city.nvr.channels[0]

    port = free_port()
    sidecar = daprd_factory("registry", port, mosquitto.url)
    with start_service("registry", config, port, tmp_path, env={"DAPR_HTTP_PORT": str(sidecar.http_port)}):
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health == {"status": "ok", "checks": {"catalog": "ok", "sidecar": "ok"}}

        direct = httpx.get(f"http://127.0.0.1:{port}/v1/devices/{camera}", headers=KEY, timeout=10)
        via_dapr = httpx.get(sidecar.invoke_url("registry", f"v1/devices/{camera}"), headers=KEY, timeout=10)
        assert via_dapr.status_code == 200, via_dapr.text
        assert via_dapr.json() == direct.json()
        got = via_dapr.json()
        assert (got["name"], got["civil_code"], got["manufacturer"]) == ("东门摄像机", "340200", "Hikvision")
        assert got["parent_id"] == real_city.nvr.device_id and got["protocol"] == "gb28181"

        search = httpx.get(
            sidecar.invoke_url("registry", "v1/devices"),
            params={"district": "3402", "bbox": "117,31,118,32", "limit": 10},
            headers=KEY,
            timeout=10,
        )
        assert search.status_code == 200, search.text
        # The two catalogued channels with coordinates; the third has none.
        assert [d["device_id"] for d in search.json()["devices"]] == sorted(real_city.nvr.channels[:2])
        pump_id = real_city.modbus_devices[0]
        pump = httpx.get(
            sidecar.invoke_url("registry", f"v1/devices/{pump_id}"), headers=KEY, timeout=10
        ).json()
        assert (pump["protocol"], pump["name"], pump["civil_code"]) == ("modbus", "pump station 1", "340111")
        sensor = real_city.mqtt_devices[0]
        haidian = httpx.get(
            sidecar.invoke_url("registry", "v1/devices"),
            params={"district": "Haidian"},
            headers=KEY,
            timeout=10,
        ).json()
        assert sensor in {d["device_id"] for d in haidian["devices"]}
        assert all(d["district"] == "haidian" for d in haidian["devices"])

        missing = httpx.get(sidecar.invoke_url("registry", "v1/devices/nobody"), headers=KEY, timeout=10)
        assert missing.status_code == 404
        bad_box = httpx.get(
            sidecar.invoke_url("registry", "v1/devices"), params={"bbox": "1,2,3"}, headers=KEY, timeout=10
        )
        assert bad_box.status_code == 422 and "bbox" in bad_box.json()["detail"]
        assert httpx.get(sidecar.invoke_url("registry", "v1/devices"), timeout=10).status_code == 401

        # A city's worth of distinct device paths leaves the sidecar's metrics
        # one series per route (deploy/dapr/config.yaml), not one per device.
        for n in range(150):
            httpx.get(sidecar.invoke_url("registry", f"v1/devices/unknown-{n}"), headers=KEY, timeout=10)
        paths = sidecar_metric_paths(sidecar)
        assert not any("unknown-" in p for p in paths), sorted(paths)
        assert "/v1.0/invoke/{app_id}/method/v1/devices/{device_id}" in paths, sorted(paths)
        assert len(paths) <= 8, sorted(paths)


def sidecar_metric_paths(sidecar: Daprd) -> set[str]:
    """The ``path`` label values of daprd's HTTP server metrics."""
    text = httpx.get(f"http://127.0.0.1:{sidecar.metrics_port}/metrics", timeout=10).text
    return set(re.findall(r'^dapr_http_server_request_count\{[^}]*path="([^"]*)"', text, re.MULTILINE))


def test_alert_rules_live_in_the_dapr_state_store_across_restarts(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    city_config: Callable[..., Path],
    tmp_path: Path,
) -> None:
    seed = {"name": "pm25-high", "metric": "pm25", "above": 75.0}
    config = city_config(pipelines={"alerts": [seed]})
    port = free_port()
    sidecar = daprd_factory("alerts", port, mosquitto.url)
    env = {"DAPR_HTTP_PORT": str(sidecar.http_port)}
    base = f"http://127.0.0.1:{port}"
    with start_service("alerts", config, port, tmp_path, env=env):
        assert httpx.get(f"{base}/healthz", timeout=10).json()["checks"]["sidecar"] == "ok"
        assert [r["name"] for r in httpx.get(f"{base}/v1/rules", timeout=10).json()["rules"]] == ["pm25-high"]
        created = httpx.post(
            f"{base}/v1/rules", json={"name": "hot", "metric": "temp", "above": 30.0}, timeout=10
        )
        assert created.status_code == 201, created.text
        read = httpx.get(sidecar.invoke_url("alerts", "v1/rules/hot"), timeout=10)
        assert read.status_code == 200 and read.headers["etag"] == created.headers["etag"]
        updated = httpx.put(
            f"{base}/v1/rules/hot",
            json={"name": "hot", "metric": "temp", "above": 35.0},
            headers={"If-Match": read.headers["etag"]},
            timeout=10,
        )
        assert updated.status_code == 200, updated.text
        stale = httpx.put(
            f"{base}/v1/rules/hot",
            json={"name": "hot", "metric": "temp", "above": 40.0},
            headers={"If-Match": read.headers["etag"]},
            timeout=10,
        )
        assert stale.status_code == 412
        duplicate = httpx.post(
            f"{base}/v1/rules", json={"name": "hot", "metric": "x", "above": 1}, timeout=10
        )
        assert duplicate.status_code == 409
        before = httpx.get(f"{base}/v1/rules", timeout=10).json()

    # The rules are in the state store component's own SQLite file, under daprd's app-id prefix.
    with sqlite3.connect(tmp_path / "dapr-alerts" / "state.db") as db:
        row = db.execute("SELECT value FROM state WHERE key = 'alerts||alert-rules'").fetchone()
    stored = json.loads(row[0])
    assert {r["rule"]["name"]: r["rule"]["above"] for r in stored["rules"]} == {
        "hot": 35.0,
        "pm25-high": 75.0,
    }

    with start_service("alerts", config, port, tmp_path, env=env):
        after = httpx.get(f"{base}/v1/rules", timeout=10).json()
        assert after == before
        export = httpx.get(sidecar.invoke_url("alerts", "v1/rules/export"), timeout=10)
        assert export.status_code == 200 and "above: 35.0" in export.text


class AlertSink:
    """A subscriber app: tells its sidecar it wants `alerts`, keeps what arrives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/dapr/subscribe":
                    self._answer(
                        200, [{"pubsubname": "citylake-pubsub", "topic": "alerts", "route": "/events"}]
                    )
                else:
                    self._answer(404, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/events":
                    with sink.lock:
                        sink.events.append(json.loads(body))
                    self._answer(200, {"status": "SUCCESS"})
                else:
                    self._answer(404, {})

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is the assertions, not an access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def ids(self) -> list[str]:
        with self.lock:
            return [str(e.get("id")) for e in self.events]


@pytest.fixture
def alert_sink() -> Iterator[AlertSink]:
    sink = AlertSink()
    sink.thread.start()
    yield sink
    sink.server.shutdown()
    sink.server.server_close()


def test_alert_events_reach_a_subscriber_once_each_across_a_restart(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    city_config: Callable[..., Path],
    alert_sink: AlertSink,
    tmp_path: Path,
) -> None:
    config = city_config()
    data_dir = tmp_path / "data"
    sink_sidecar = daprd_factory("alert-sink", alert_sink.port, mosquitto.url)
    port = free_port()
    sidecar = daprd_factory("alerts", port, mosquitto.url)

    # Until the sink's subscription is live on the broker, events would be lost:
    # probe through the publisher's sidecar until one arrives.
    def probe_arrived() -> bool:
        httpx.post(
            f"{sidecar.http_url}/v1.0/publish/citylake-pubsub/alerts",
            params={"metadata.cloudevent.id": "probe"},
            json={"probe": True},
            timeout=5,
        )
        time.sleep(0.5)
        return "probe" in alert_sink.ids()

    wait_for(probe_arrived, 60, "probe event at the subscriber")

    now = datetime.now(UTC).replace(microsecond=0)
    write_lake_table(
        data_dir,
        "alerts",
        [
            alert("a-open", "air-1", now - timedelta(minutes=10), rule="hot"),
            alert("a-done", "air-2", now - timedelta(minutes=30), now - timedelta(minutes=20), rule="cold"),
            alert("a-old", "air-3", now - timedelta(days=3), now - timedelta(days=3) + timedelta(minutes=5)),
        ],
    )
    expected = ["a-done:opened", "a-done:closed", "a-open:opened"]
    env = {"DAPR_HTTP_PORT": str(sidecar.http_port)}
    with start_service("alerts", config, port, tmp_path, env=env):
        wait_for(lambda: set(expected) <= set(alert_sink.ids()), 30, f"events {expected}")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["checks"] == {"events": "ok", "sidecar": "ok"}

    with alert_sink.lock:
        opened = next(e for e in alert_sink.events if e["id"] == "a-open:opened")
    assert opened["type"] == "citylake.alert.opened" and opened["source"] == "alerts"
    assert opened["topic"] == "alerts" and opened["pubsubname"] == "citylake-pubsub"
    assert opened["data"]["event"] == "opened" and opened["data"]["state"] == "active"
    assert opened["data"]["device_id"] == "air-1" and opened["data"]["ended_at"] is None

    # Restarted, the service publishes what is new (a-open closes) and nothing twice.
    with start_service("alerts", config, port, tmp_path, env=env):
        write_lake_table(
            data_dir,
            "alerts",
            [alert("a-open", "air-1", now - timedelta(minutes=10), now, rule="hot")],
            name="part-1",
        )
        wait_for(lambda: "a-open:closed" in alert_sink.ids(), 30, "event a-open:closed")
        time.sleep(5)  # more than two polls: time for any repeat to show
    events = [i for i in alert_sink.ids() if i != "probe"]
    assert sorted(events) == sorted([*expected, "a-open:closed"]), events
    assert sink_sidecar.process.alive()
