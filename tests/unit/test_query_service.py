"""The query service's handlers over a real (small) lake, without a sidecar."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from citylake.services.query.app import QuerySettings, create_app
from tests.lakedata import T0, reading, write_lake_readings


def client(data_dir: Path, keys: list[str] | None = None) -> TestClient:
    return TestClient(create_app(QuerySettings(data_dir=data_dir, api_keys=keys or [])))


def test_latest_returns_newest_value_per_metric(tmp_path: Path) -> None:
    write_lake_readings(
        tmp_path,
        [
            reading("air-1", "temp", T0, 20.0),
            reading("air-1", "temp", T0 + timedelta(minutes=5), 21.5),
            reading("air-1", "state", T0, None, text="ok"),
            reading("air-2", "temp", T0 + timedelta(hours=1), 99.0),
        ],
    )
    with client(tmp_path) as http:
        body = http.get("/v1/devices/air-1/latest").json()
        assert body["device_id"] == "air-1"
        assert body["readings"] == [
            {
                "metric": "state",
                "ts": "2026-11-25T08:00:00.000Z",
                "value": None,
                "text": "ok",
                "unit": "C",
                "quality": 0,
            },
            {
                "metric": "temp",
                "ts": "2026-11-25T08:05:00.000Z",
                "value": 21.5,
                "text": None,
                "unit": "C",
                "quality": 0,
            },
        ]
        one = http.get("/v1/devices/air-1/latest", params={"metric": "temp"}).json()
        assert [r["value"] for r in one["readings"]] == [21.5]


def test_unknown_device_is_404_with_reason(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        response = http.get("/v1/devices/nope/latest")
        assert response.status_code == 404
        assert "no readings for device 'nope'" in response.json()["detail"]


def test_first_files_become_visible_without_restart(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        assert http.get("/v1/devices/air-1/latest").status_code == 404
        write_lake_readings(tmp_path, [reading("air-1", "temp", T0, 1.0)])
        assert http.get("/v1/devices/air-1/latest").json()["readings"][0]["value"] == 1.0


def test_hostile_device_ids_are_data_not_sql(tmp_path: Path) -> None:
    write_lake_readings(tmp_path, [reading("air-1", "temp", T0, 1.0)])
    with client(tmp_path) as http:
        for hostile in ["' OR 1=1 --", "air-1'; DROP VIEW readings; --", "x" * 129, "%00"]:
            response = http.get(f"/v1/devices/{hostile}/latest")
            assert response.status_code in (404, 422)
        assert http.get("/v1/devices/air-1/latest").status_code == 200


def test_api_keys_guard_everything_but_healthz(tmp_path: Path) -> None:
    write_lake_readings(tmp_path, [reading("air-1", "temp", T0, 1.0)])
    with client(tmp_path, keys=["k1"]) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/devices/air-1/latest").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/v1/devices/air-1/latest", headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.get("/v1/devices/air-1/latest", headers={"X-API-Key": "k1"}).status_code == 200
        assert http.get("/metrics", headers={"X-API-Key": "k1"}).status_code == 200


def test_openapi_documents_the_routes(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        paths = http.get("/openapi.json").json()["paths"]
        assert "/v1/devices/{device_id}/latest" in paths
        assert http.get("/docs").status_code == 200
