"""The thin slice, end to end, with every real part:

mosquitto_pub -> `citylake ingest` -> landing Parquet -> `citylake pipeline run
readings --mode streaming` (Flink mini-cluster) -> lake -> `citylake sql` and
the query service, directly and through a real daprd sidecar.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from citylake_devstack import Daprd, ManagedProcess, Mosquitto, free_port, start_service
from citylake_devstack.process import CITYLAKE
from tests.conftest import mqtt_source

pytestmark = pytest.mark.integration

DEVICE = "air-000042"
TS_MS = 1_764_072_123_456  # 2025-11-25T12:02:03.456Z
TS_ISO = "2025-11-25T12:02:03.456Z"
VALUE = 37.25


def sql_json(config: Path, query: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [*CITYLAKE, "sql", query, "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_mqtt_to_lake_to_sql_and_services_through_dapr(
    mosquitto: Mosquitto,
    city_config: Callable[..., Path],
    daprd_factory: Callable[[str, int, str], Daprd],
    tmp_path: Path,
) -> None:
    config = city_config(sources=[mqtt_source(mosquitto.url)])
    metrics_port = free_port()
    with (
        ManagedProcess(
            "ingest",
            [*CITYLAKE, "ingest", "--config", str(config), "--metrics-port", str(metrics_port)],
            tmp_path / "ingest.log",
        ).start() as ingest,
        ManagedProcess(
            "readings-job",
            [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config)],
            tmp_path / "job.log",
        ).start() as job,
    ):
        ingest.wait_port(metrics_port, 30)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        ingest.wait_until(
            lambda: 'citylake_ingest_source_up{source="sensors"} 1.0' in httpx.get(metrics).text,
            30,
            "MQTT subscription",
        )
        mosquitto_pub = shutil.which("mosquitto_pub")
        assert mosquitto_pub, "mosquitto_pub not installed (Debian mosquitto-clients; run make setup)"
        subprocess.run(
            [
                mosquitto_pub,
                "-h",
                "127.0.0.1",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                f"city/haidian/air/{DEVICE}/telemetry",
                "-m",
                json.dumps({"ts": TS_MS, "pm25": VALUE}),
            ],
            check=True,
            timeout=10,
        )
        query = (
            "SELECT device_id, metric, ts, value, unit, source, site FROM readings "
            f"WHERE device_id = '{DEVICE}'"
        )
        deadline = time.monotonic() + 90
        rows: list[dict[str, object]] = []
        while not rows and time.monotonic() < deadline:
            assert job.alive(), job.log_tail()
            time.sleep(1)
            rows = sql_json(config, query)
        assert rows, f"no lake row after 60s; job log:\n{job.log_tail()}"
        assert rows[0] == {
            "device_id": DEVICE,
            "metric": "pm25",
            "ts": TS_ISO,
            "value": VALUE,
            "unit": "ug/m3",
            "source": "sensors",
            "site": "test-site",
        }

    query_port = free_port()
    with start_service("query", config, query_port, tmp_path):
        direct = httpx.get(f"http://127.0.0.1:{query_port}/v1/devices/{DEVICE}/latest", timeout=10)
        assert direct.status_code == 200
        expected = {
            "device_id": DEVICE,
            "readings": [
                {"metric": "pm25", "ts": TS_ISO, "value": VALUE, "text": None, "unit": "ug/m3", "quality": 0},
            ],
        }
        assert direct.json() == expected
        sidecar = daprd_factory("query", query_port, mosquitto.url)
        via_dapr = httpx.get(sidecar.invoke_url("query", f"v1/devices/{DEVICE}/latest"), timeout=10)
        assert via_dapr.status_code == 200, via_dapr.text
        assert via_dapr.json() == expected
        missing = httpx.get(sidecar.invoke_url("query", "v1/devices/nobody/latest"), timeout=10)
        assert missing.status_code == 404
