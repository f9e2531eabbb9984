"""The dashboard's page and JSON routes, in process, over small lakes: one with
positions, alerts and a hostile device name, an empty one, and one whose
registry has no positions."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

from citylake.config import ServiceConfig
from citylake.schemas import TABLES
from citylake.services.query import dashboard
from citylake.services.query.app import QuerySettings, create_app
from tests.dashboard_lake import (
    ACTIVE_ALERTS,
    HOSTILE_MESSAGE,
    HOSTILE_NAME,
    LOCATED,
    READING_ROWS,
    REGISTERED,
    build_dashboard_lake,
)
from tests.lakedata import T0, device, write_lake_table

REPO = Path(__file__).resolve().parents[2]
PAGE_DIR = Path(dashboard.__file__).parent
KEY = "s3cret-dashboard-key"
DATA_ROUTES = ["/v1/dashboard/devices", "/v1/dashboard/alerts", "/v1/dashboard/lake"]


def client(data_dir: Path, **config: object) -> TestClient:
    return TestClient(create_app(QuerySettings(data_dir, ServiceConfig.model_validate(config))))


def test_page_is_served_without_a_key_and_never_holds_one(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    with client(tmp_path, api_keys=[KEY]) as http:
        page = http.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-content-type-options"] == "nosniff"
        script = http.get("/dashboard/dashboard.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        style = http.get("/dashboard/dashboard.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        for body in (page.text, script.text, style.text):
            assert KEY not in body
        # Offline: nothing in the page is fetched from another origin.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
        for route in DATA_ROUTES:
            assert http.get(route).status_code == 401, route
            assert http.get(route, headers={"X-API-Key": "wrong"}).status_code == 401, route
            assert http.get(route, headers={"X-API-Key": KEY}).status_code == 200, route
        assert http.get("/dashboard/../app.py").status_code == 404
        assert http.get("/dashboard/dashboard.py").status_code == 404


def test_script_only_inserts_text() -> None:
    script = (PAGE_DIR / "dashboard.js").read_text()
    for sink in [
        r"\.innerHTML\s*=",
        r"\.outerHTML\s*=",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\(",
        r"new Function",
        r"createContextualFragment",
        r"DOMParser",
    ]:
        assert not re.search(sink, script), sink
    # Relative URLs only, so the page also works through Dapr service invocation.
    assert not re.search(r"""fetch\(\s*["'`]/""", script)
    assert "encodeURIComponent(id)" in script  # a device id is one path segment, whatever it holds


def test_package_data_ships_the_page() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    assets = [p.name for p in PAGE_DIR.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert {"index.html", "dashboard.js", "dashboard.css"} <= set(assets)
    for name in assets:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_devices_have_positions_status_and_alert_counts(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    with client(tmp_path) as http:
        body = http.get("/v1/dashboard/devices").json()
        assert [d["device_id"] for d in body["devices"]] == REGISTERED
        assert body["total"] == 5 and body["located"] == 3 and body["truncated"] is False
        assert body["bounds"] == {"min_lon": 118.76, "min_lat": 32.04, "max_lon": 118.8, "max_lat": 32.07}
        by_id = {d["device_id"]: d for d in body["devices"]}
        assert [i for i, d in by_id.items() if d["longitude"] is not None] == LOCATED
        assert by_id["cam-1"] == {
            "device_id": "cam-1",
            "name": HOSTILE_NAME,  # JSON carries it verbatim; the page renders it as text
            "type": "ipc",
            "protocol": "gb28181",
            "civil_code": "32010601",
            "district": None,
            "address": '"><svg onload=alert(3)>',
            "longitude": 118.8,
            "latitude": 32.06,
            "status": "online",
            "last_seen": "2026-11-25T08:10:00.000Z",
            "active_alerts": 1,
        }
        assert by_id["cam-0"]["longitude"] is None and by_id["cam-0"]["latitude"] is None  # 0,0
        assert by_id["pump-1"]["status"] is None and by_id["pump-1"]["longitude"] is None
        assert {i: d["active_alerts"] for i, d in by_id.items()} == {
            "air-1": 0,  # its alert closed
            "air-2": 1,
            "cam-0": 0,
            "cam-1": 1,
            "pump-1": 0,
        }
        page = http.get("/v1/dashboard/devices", params={"limit": 2}).json()
        assert [d["device_id"] for d in page["devices"]] == ["air-1", "air-2"]
        assert page["truncated"] is True and page["total"] == 5 and page["bounds"] == body["bounds"]
        gulou = http.get("/v1/dashboard/devices", params={"district": "320106"}).json()
        assert [d["device_id"] for d in gulou["devices"]] == ["air-1", "cam-1", "pump-1"]
        assert gulou["bounds"] == {"min_lon": 118.78, "min_lat": 32.06, "max_lon": 118.8, "max_lat": 32.07}
        qinhuai = http.get("/v1/dashboard/devices", params={"district": "qinhuai"}).json()
        assert [d["device_id"] for d in qinhuai["devices"]] == ["air-2", "cam-0"]
        assert [d["district"] for d in qinhuai["devices"]] == ["Qinhuai", "Qinhuai"]
        assert qinhuai["total"] == 2 and qinhuai["located"] == 1  # cam-0 is at 0,0


def test_out_of_range_positions_are_not_on_the_map(tmp_path: Path) -> None:
    write_lake_table(
        tmp_path,
        "devices",
        [
            device("ok", longitude=-73.98, latitude=40.75),
            device("lon-too-big", longitude=200.0, latitude=10.0),
            device("lat-too-small", longitude=10.0, latitude=-91.0),
            device("half", longitude=10.0),
            device("nan", longitude=float("nan"), latitude=1.0),
        ],
    )
    with client(tmp_path) as http:
        body = http.get("/v1/dashboard/devices").json()
        located = [d["device_id"] for d in body["devices"] if d["longitude"] is not None]
        assert located == ["ok"] and body["located"] == 1
        assert body["bounds"] == {"min_lon": -73.98, "min_lat": 40.75, "max_lon": -73.98, "max_lat": 40.75}


def test_alerts_by_state_with_device_names(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    with client(tmp_path) as http:
        active = http.get("/v1/dashboard/alerts").json()
        assert active["state"] == "active" and active["total"] == 2
        assert [a["alert_id"] for a in active["alerts"]] == ACTIVE_ALERTS
        first = active["alerts"][1]
        assert first == {
            "alert_id": "a-1",
            "device_id": "cam-1",
            "device_name": HOSTILE_NAME,
            "metric": "temp",
            "rule": "hot",
            "severity": "critical",
            "state": "active",
            "started_at": "2026-11-25T08:05:00.000Z",
            "ended_at": None,
            "value": 42.0,
            "message": HOSTILE_MESSAGE,
        }
        assert http.get("/v1/dashboard/alerts", params={"state": "active"}).json() == active
        closed = http.get("/v1/dashboard/alerts", params={"state": "closed"}).json()
        assert [(a["alert_id"], a["state"], a["ended_at"]) for a in closed["alerts"]] == [
            ("a-2", "closed", "2026-11-25T08:04:00.000Z")
        ]
        everything = http.get("/v1/dashboard/alerts", params={"state": "all"}).json()
        assert [a["alert_id"] for a in everything["alerts"]] == ["a-3", "a-1", "a-2"]
        one = http.get("/v1/dashboard/alerts", params={"limit": 1}).json()
        assert [a["alert_id"] for a in one["alerts"]] == ["a-3"] and one["total"] == 2


def test_lake_stats_per_table(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    with client(tmp_path) as http:
        body = http.get("/v1/dashboard/lake").json()
        assert [t["table"] for t in body["tables"]] == list(TABLES)
        by_table = {t["table"]: t for t in body["tables"]}
        readings = by_table["readings"]
        assert readings["files"] == 1 and readings["rows"] == READING_ROWS and readings["bytes"] > 0
        assert readings["first"] == "2026-11-25T08:00:00.000Z"
        assert readings["last"] == "2026-11-25T08:09:00.000Z"
        assert by_table["alerts"]["rows"] == 4  # a-2's opening and closing rows both count
        assert by_table["devices"]["first"] is None  # no time column
        assert by_table["rejected"] == {
            "table": "rejected",
            "version": 0,
            "files": 0,
            "rows": 0,
            "bytes": 0,
            "first": None,
            "last": None,
        }
        assert body["computed_at"].endswith("Z")


def test_empty_lake(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        devices = http.get("/v1/dashboard/devices").json()
        assert devices == {"devices": [], "total": 0, "located": 0, "bounds": None, "truncated": False}
        assert http.get("/v1/dashboard/alerts").json() == {"state": "active", "alerts": [], "total": 0}
        tables = http.get("/v1/dashboard/lake").json()["tables"]
        assert {(t["files"], t["rows"], t["bytes"]) for t in tables} == {(0, 0, 0)}


def test_registry_without_positions(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path, with_positions=False)
    with client(tmp_path) as http:
        body = http.get("/v1/dashboard/devices").json()
        assert body["total"] == 5 and body["located"] == 0 and body["bounds"] is None
        assert all(d["longitude"] is None and d["latitude"] is None for d in body["devices"])
        assert {d["device_id"]: d["status"] for d in body["devices"]}["air-2"] == "offline"


def test_limits_and_bad_input(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    with client(tmp_path, page_max_rows=3) as http:
        assert http.get("/v1/dashboard/devices").json()["truncated"] is True  # default limit: page_max_rows
        for url, params in [
            ("/v1/dashboard/devices", {"limit": 0}),
            ("/v1/dashboard/devices", {"limit": 4}),
            ("/v1/dashboard/devices", {"district": "gu'lou"}),
            ("/v1/dashboard/devices", {"district": "1"}),
            ("/v1/dashboard/alerts", {"limit": 1001}),
            ("/v1/dashboard/alerts", {"state": "open"}),
        ]:
            assert http.get(url, params=params).status_code == 422, (url, params)


def test_damaged_lake_is_a_503(tmp_path: Path) -> None:
    build_dashboard_lake(tmp_path)
    (tmp_path / "lake" / "readings" / f"date={T0.date().isoformat()}" / "part-9").write_bytes(b"not parquet")
    with client(tmp_path) as http:
        for route in DATA_ROUTES:
            response = http.get(route)
            assert response.status_code == 503, route
            assert response.json()["detail"].startswith("the lake cannot be read now"), route
        assert http.get("/dashboard").status_code == 200  # the page still loads and can say so


def test_openapi_documents_the_data_routes_not_the_page(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        paths = http.get("/openapi.json").json()["paths"]
        assert set(DATA_ROUTES) <= set(paths)
        assert not [p for p in paths if p.startswith("/dashboard")]
        schema = paths["/v1/dashboard/devices"]["get"]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"]["$ref"].endswith("/DashboardDevices")
