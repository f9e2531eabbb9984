"""A small lake for the query service's tests, and a client over it.

Three devices in two districts of Nanjing (civil codes 320106 and 320102;
two of them also name their district, as an MQTT topic level would),
readings every minute for 10 minutes on two metrics, 1-minute rollups of one
device, and a registry row per device but one (air-9 reports but is unknown
to the registry).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from citylake.config import ServiceConfig
from citylake.services.query.app import QuerySettings, create_app
from tests.lakedata import T0, device, reading, write_lake_readings, write_lake_table

ARROW = "application/vnd.apache.arrow.stream"
DEVICES = ["air-1", "air-2", "cam-1", "air-9"]
MINUTES = 10


def build_lake(data_dir: Path) -> None:
    rows = []
    for number, device_id in enumerate(DEVICES):
        for minute in range(MINUTES):
            ts = T0 + timedelta(minutes=minute)
            rows.append(reading(device_id, "temp", ts, 20.0 + number + minute / 10))
            rows.append(reading(device_id, "pm25", ts, 30.0 + minute))
    write_lake_readings(data_dir, rows)
    write_lake_table(
        data_dir,
        "devices",
        [
            device(
                "air-1", type="air_quality", civil_code="32010601", district="Gulou", address="Zhongshan Rd 1"
            ),
            device(
                "air-2",
                type="air_quality",
                civil_code="32010201",
                district="Qinhuai",
                address="Hanzhong Rd 2",
            ),
            device("cam-1", type="ipc", civil_code="32010601", address="Gulou Sq"),
        ],
    )
    write_lake_table(
        data_dir,
        "readings_1m",
        [
            {
                "device_id": "air-1",
                "metric": metric,
                "window_start": T0 + timedelta(minutes=minute),
                "count": 1,
                "min": float(minute),
                "max": float(minute),
                "avg": float(minute),
                "last": float(minute),
            }
            for minute in range(MINUTES)
            for metric in ("pm25", "temp")
        ],
    )


def client(data_dir: Path, **config: object) -> TestClient:
    return TestClient(create_app(QuerySettings(data_dir, ServiceConfig.model_validate(config))))
