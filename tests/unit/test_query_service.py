"""The query service's latest-value routes, auth, docs and metrics, over a real
(small) lake, without a sidecar."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from fastapi.testclient import TestClient

from citylake.config import ServiceConfig
from citylake.lake import SERVICE_REFRESH_S
from citylake.services.query.app import QuerySettings, create_app
from tests.lakedata import T0, reading, write_lake_readings
from tests.query_lake import ARROW, build_lake
from tests.query_lake import client as lake_client


def client(data_dir: Path, keys: list[str] | None = None) -> TestClient:
    return TestClient(create_app(QuerySettings(data_dir, ServiceConfig(api_keys=keys or []))))


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
        time.sleep(SERVICE_REFRESH_S + 0.1)  # the service looks at the lake at most this often
        assert http.get("/v1/devices/air-1/latest").json()["readings"][0]["value"] == 1.0


def test_hostile_device_ids_are_data_not_sql(tmp_path: Path) -> None:
    write_lake_readings(tmp_path, [reading("air-1", "temp", T0, 1.0)])
    with client(tmp_path) as http:
        for hostile in ["' OR 1=1 --", "air-1'; DROP VIEW readings; --", "x" * 129, "%00"]:
            response = http.get(f"/v1/devices/{hostile}/latest")
            assert response.status_code in (404, 422)
        assert http.get("/v1/devices/air-1/latest").status_code == 200


def test_device_latest_as_arrow(tmp_path: Path) -> None:
    build_lake(tmp_path)
    with lake_client(tmp_path) as http:
        response = http.get("/v1/devices/air-1/latest", headers={"Accept": ARROW})
        assert response.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(response.content).read_all()
        assert table.column_names == ["metric", "ts", "value", "text", "unit", "quality"]
        assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
        assert table.column("metric").to_pylist() == ["pm25", "temp"]


def test_metric_latest_by_district_and_type(tmp_path: Path) -> None:
    build_lake(tmp_path)
    with lake_client(tmp_path) as http:

        def devices(**params: object) -> list[str]:
            response = http.get("/v1/metrics/temp/latest", params=params)
            assert response.status_code == 200, response.text
            return [item["device_id"] for item in response.json()["items"]]

        assert devices() == ["air-1", "air-2", "air-9", "cam-1"]  # air-9: not in the registry
        assert devices(district="320106") == ["air-1", "cam-1"]
        assert devices(district="3201") == ["air-1", "air-2", "cam-1"]
        assert devices(district="32010201") == ["air-2"]
        assert devices(type="ipc") == ["cam-1"]
        assert devices(district="320106", type="air_quality") == ["air-1"]
        assert devices(district="44") == []
        # A name matches devices.district whole, whatever its case; cam-1 has a
        # civil code in Gulou but names no district.
        assert devices(district="gulou") == devices(district="GULOU") == ["air-1"]
        assert devices(district="Qinhuai", type="air_quality") == ["air-2"]
        assert devices(district="Gulo") == devices(district="Xuanwu") == []
        body = http.get("/v1/metrics/temp/latest", params={"district": "320106"}).json()
        first = body["items"][0]
        assert first == {
            "device_id": "air-1",
            "type": "air_quality",
            "civil_code": "32010601",
            "district": "Gulou",
            "site": "s1",
            "region": None,  # an edge's lake knows no regions
            "ts": "2026-11-25T08:09:00.000Z",
            "value": 20.9,
            "text": None,
            "unit": "C",
            "quality": 0,
        }
        assert http.get("/v1/metrics/no-such-metric/latest").json()["items"] == []


def test_metric_latest_pages_with_a_cursor(tmp_path: Path) -> None:
    build_lake(tmp_path)
    with lake_client(tmp_path) as http:
        seen: list[str] = []
        params: dict[str, object] = {"limit": 1}
        pages = 0
        while True:
            response = http.get("/v1/metrics/pm25/latest", params=params)
            body = response.json()
            seen += [item["device_id"] for item in body["items"]]
            pages += 1
            if body["next_cursor"] is None:
                assert "X-Next-Cursor" not in response.headers
                break
            assert response.headers["X-Next-Cursor"] == body["next_cursor"]
            params = {"limit": 1, "cursor": body["next_cursor"]}
        assert seen == ["air-1", "air-2", "air-9", "cam-1"]
        assert pages == 4


def test_metric_latest_rejects_bad_input(tmp_path: Path) -> None:
    build_lake(tmp_path)
    with lake_client(tmp_path, page_max_rows=50) as http:
        url = "/v1/metrics/temp/latest"
        for params in [
            {"district": "Gu'lou"},
            {"district": "3"},
            {"district": "x" * 65},
            {"limit": 51},
            {"limit": 0},
            {"limit": "x"},
        ]:
            assert http.get(url, params=params).status_code == 422, params
        token = http.get(url, params={"limit": 1}).json()["next_cursor"]
        for bad in ["garbage", token[:-3], token + "x", "é.é", token.replace(".", "..")]:
            response = http.get(url, params={"limit": 1, "cursor": bad})
            assert response.status_code == 400, bad
            assert "cursor" in response.json()["detail"]
        other_query = http.get(url, params={"limit": 1, "type": "ipc", "cursor": token})
        assert other_query.status_code == 400
        assert "different query" in other_query.json()["detail"]


def test_api_keys_guard_everything_but_healthz(tmp_path: Path) -> None:
    write_lake_readings(tmp_path, [reading("air-1", "temp", T0, 1.0)])
    with client(tmp_path, keys=["k1"]) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/devices/air-1/latest").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/v1/devices/air-1/latest", headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.get("/v1/devices/air-1/latest", headers={"X-API-Key": "k1"}).status_code == 200
        assert http.get("/metrics", headers={"X-API-Key": "k1"}).status_code == 200
        guarded = [
            ("GET", "/v1/metrics/temp/latest"),
            ("GET", "/v1/devices/air-1/readings?from=2026-11-25T08:00:00Z&to=2026-11-25T09:00:00Z"),
            ("GET", "/v1/devices/air-1/rollups/1m?from=2026-11-25T08:00:00Z&to=2026-11-25T09:00:00Z"),
            ("POST", "/v1/sql"),
        ]
        for method, url in guarded:
            assert http.request(method, url, json={"sql": "SELECT 1"}).status_code == 401, url


def test_openapi_documents_the_routes(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        paths = http.get("/openapi.json").json()["paths"]
        assert set(paths) >= {
            "/v1/devices/{device_id}/latest",
            "/v1/metrics/{metric}/latest",
            "/v1/devices/{device_id}/readings",
            "/v1/devices/{device_id}/rollups/{grain}",
            "/v1/sql",
        }
        district = next(
            p for p in paths["/v1/metrics/{metric}/latest"]["get"]["parameters"] if p["name"] == "district"
        )
        assert "civil_code" in district["description"]
        assert "devices.district" in district["description"]
        content = paths["/v1/devices/{device_id}/readings"]["get"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", ARROW}
        assert http.get("/docs").status_code == 200


def test_request_latency_is_measured_per_route_template(tmp_path: Path) -> None:
    build_lake(tmp_path)
    with lake_client(tmp_path) as http:
        for device_id in ["air-1", "air-2", "nope"]:
            http.get(f"/v1/devices/{device_id}/latest")
        http.get("/no/such/path")
        text = http.get("/metrics").text
        route = 'route="/v1/devices/{device_id}/latest"'
        assert f'http_request_duration_seconds_count{{method="GET",{route},status="200"}} 2.0' in text
        assert f'http_request_duration_seconds_count{{method="GET",{route},status="404"}} 1.0' in text
        assert 'route="unmatched",status="404"' in text
        assert "air-1" not in text  # raw paths never become labels
