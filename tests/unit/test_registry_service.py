"""The registry service's handlers over a real (small) lake and city.yaml, without a sidecar."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from citylake.config import load_config
from citylake.services.registry.app import RegistrySettings, create_app
from citylake.services.registry.catalog import BoundingBox, DeviceCatalog
from citylake.services.registry.configured import configured_devices, source_protocols
from citylake.services.sidecar import SidecarAddress
from citylake_devstack import free_port
from tests.lakedata import T0, device, device_event, write_lake_table

CAMERA = "34020000001320000001"  # GB28181: civil code 34020000, type 132 (ipc)
NVR = "11010800001180000001"  # Haidian, type 118 (nvr)

CITY_YAML = """\
site: s1
data_dir: {data_dir}
sources:
  - name: pumps
    type: modbus
    url: tcp://127.0.0.1:502
    devices:
      - device_id: pump-north-1
        slave_id: 1
        profile: pump-station
      - device_id: meter-north
        slave_id: 2
        url: rtu+tcp://10.0.0.7:4001
        interval_s: 60
        fields:
          - {{name: energy, register_type: input, address: 0, data_type: FLOAT32, unit: kWh}}
  - name: plc
    type: opcua
    url: opc.tcp://operator:secret@10.0.0.9:4840/plant
    nodes:
      - {{device_id: press-1, metric: pressure, node_id: "ns=2;s=Press1.Pressure"}}
      - {{device_id: press-1, metric: temp, node_id: "ns=2;s=Press1.Temp"}}
  - name: cams
    type: gb28181
    url: udp://127.0.0.1:5060
  - name: sensors
    type: mqtt
    url: mqtt://127.0.0.1:1883
    topics:
      - template: city/{{district}}/{{device_type}}/{{device_id}}/telemetry
"""


def city(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(CITY_YAML.format(data_dir=tmp_path / "data") + extra)
    return path


def settings(tmp_path: Path, keys: list[str] | None = None, **overrides: object) -> RegistrySettings:
    loaded = load_config(city(tmp_path))
    base = RegistrySettings(
        data_dir=tmp_path / "data",
        api_keys=keys or [],
        configured=tuple(configured_devices(loaded)),
        source_protocols=source_protocols(loaded),
        refresh_s=None,
    )
    return RegistrySettings(**{**base.__dict__, **overrides})


def write_city_lake(data_dir: Path) -> None:
    write_lake_table(
        data_dir,
        "devices",
        [
            # An older row of the camera: its first_seen survives, the rest is superseded.
            device(
                CAMERA, name="old name", status="offline", first_seen=T0 - timedelta(days=3), last_seen=T0
            ),
            device(
                CAMERA,
                name="Gate camera",
                type="ipc",
                protocol="gb28181",
                civil_code="34020000",
                longitude=117.28,
                latitude=31.86,
                status="online",
                first_seen=T0,
                last_seen=T0 + timedelta(hours=1),
            ),
            device(
                NVR,
                name="Haidian NVR",
                type="nvr",
                protocol="gb28181",
                civil_code="11010800",
                longitude=116.30,
                latitude=39.96,
                status="offline",
                first_seen=T0,
                last_seen=T0,
            ),
        ],
    )
    write_lake_table(
        data_dir,
        "device_events",
        [
            device_event(CAMERA, T0 - timedelta(days=5), "register", source="cams"),
            device_event("pump-north-1", T0, "online", source="pumps"),
            device_event("spb-node-7", T0, "online", source="sensors"),
            device_event("spb-node-7", T0 + timedelta(minutes=5), "offline", source="sensors"),
        ],
    )


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    write_city_lake(tmp_path / "data")
    with TestClient(create_app(settings(tmp_path))) as client:
        yield client


def ids(body: dict[str, Any]) -> list[str]:
    return [d["device_id"] for d in body["devices"]]


def test_devices_merge_lake_config_and_first_sight(http: TestClient) -> None:
    body = http.get("/v1/devices").json()
    assert ids(body) == sorted([CAMERA, NVR, "meter-north", "press-1", "pump-north-1", "spb-node-7"])
    assert body["total"] == 6 and body["next_after"] is None

    camera = http.get(f"/v1/devices/{CAMERA}").json()
    assert camera["name"] == "Gate camera" and camera["status"] == "online"
    # first sight is the earliest of the devices rows and the device's events
    assert camera["first_seen"] == "2026-11-20T08:00:00.000Z"
    assert camera["last_seen"] == "2026-11-25T09:00:00.000Z"
    assert camera["sources"] == ["cams"]

    pump = http.get("/v1/devices/pump-north-1").json()
    assert pump["protocol"] == "modbus" and pump["status"] == "online"
    assert pump["first_seen"] == "2026-11-25T08:00:00.000Z"
    assert pump["attributes"]["endpoint"] == "tcp://127.0.0.1:502"
    assert pump["attributes"]["profile"] == "pump-station"
    assert "flow_rate" in pump["attributes"]["metrics"]

    meter = http.get("/v1/devices/meter-north").json()
    assert meter["attributes"]["endpoint"] == "rtu+tcp://10.0.0.7:4001"
    assert meter["attributes"]["interval_s"] == 60
    assert meter["status"] is None and meter["first_seen"] is None  # configured, never seen

    press = http.get("/v1/devices/press-1").json()
    assert press["protocol"] == "opcua" and press["attributes"]["metrics"] == ["pressure", "temp"]
    assert "secret" not in str(press) and press["attributes"]["endpoint"] == "opc.tcp://10.0.0.9:4840/plant"

    # Only seen in device_events: the protocol comes from the source's type in city.yaml.
    node = http.get("/v1/devices/spb-node-7").json()
    assert node["protocol"] == "mqtt" and node["status"] == "offline"


def test_search_filters(http: TestClient) -> None:
    assert ids(http.get("/v1/devices", params={"district": "3402"}).json()) == [CAMERA]
    assert ids(http.get("/v1/devices", params={"district": "110108"}).json()) == [NVR]
    assert ids(http.get("/v1/devices", params={"type": "NVR"}).json()) == [NVR]
    assert ids(http.get("/v1/devices", params={"status": "offline"}).json()) == [NVR, "spb-node-7"]
    assert ids(http.get("/v1/devices", params={"protocol": "modbus"}).json()) == [
        "meter-north",
        "pump-north-1",
    ]
    hefei = {"bbox": "117.0,31.5,117.5,32.0"}
    assert ids(http.get("/v1/devices", params=hefei).json()) == [CAMERA]
    both = http.get("/v1/devices", params={"bbox": "110,30,120,40", "status": "online"}).json()
    assert ids(both) == [CAMERA] and both["total"] == 1
    assert http.get("/v1/devices", params={"district": "99"}).json() == {
        "devices": [],
        "total": 0,
        "next_after": None,
    }


def test_district_is_a_civil_code_prefix_or_a_name(tmp_path: Path) -> None:
    write_lake_table(
        tmp_path / "data",
        "devices",
        [
            # As the MQTT adapter lands them: the topic's {district} is a name or a code.
            device(
                "aq-1", type="air_quality", protocol="mqtt", district="Gulou", attributes='{"floor":"f3"}'
            ),
            device("aq-2", type="air_quality", protocol="mqtt", district="gulou"),
            device("aq-3", type="air_quality", protocol="mqtt", civil_code="320106"),
            device("aq-4", type="air_quality", protocol="mqtt", district="Gulou District"),
        ],
    )
    with TestClient(create_app(settings(tmp_path))) as http:

        def search(district: str) -> list[str]:
            response = http.get("/v1/devices", params={"district": district})
            assert response.status_code == 200, response.text
            return ids(response.json())

        assert search("GULOU") == search("gulou") == ["aq-1", "aq-2"]
        assert search("Gulou District") == ["aq-4"]
        assert search("3201") == search("320106") == ["aq-3"]
        assert search("Gul") == []
        first = http.get("/v1/devices/aq-1").json()
        assert (first["district"], first["civil_code"], first["attributes"]) == (
            "Gulou",
            None,
            {"floor": "f3"},
        )
        assert http.get("/v1/devices", params={"district": "3"}).status_code == 422  # no one-digit codes


def test_paging_walks_every_device_once(http: TestClient) -> None:
    seen: list[str] = []
    params: dict[str, object] = {"limit": 4}
    while True:
        body = http.get("/v1/devices", params=params).json()
        assert body["total"] == 6 and len(body["devices"]) <= 4
        seen.extend(ids(body))
        if body["next_after"] is None:
            break
        params["after"] = body["next_after"]
    assert seen == sorted(seen) and len(set(seen)) == 6
    assert http.get("/v1/devices", params={"limit": 0}).status_code == 422
    assert http.get("/v1/devices", params={"limit": 1001}).status_code == 422


@pytest.mark.parametrize(
    ("bbox", "says"),
    [
        ("116,39,117", "expected 4 comma-separated numbers"),
        ("116,39,117,40,1", "expected 4 comma-separated numbers"),
        ("a,b,c,d", "must be numbers"),
        ("116,39,117,", "must be numbers"),
        ("nan,39,117,40", "finite"),
        ("116,39,inf,40", "finite"),
        ("-181,39,117,40", "min_lon -181.0 is outside -180..180"),
        ("116,-90.5,117,40", "min_lat -90.5 is outside -90..90"),
        ("116,39,117,91", "max_lat 91.0 is outside -90..90"),
        ("117,39,116,40", "min_lon 117.0 is greater than max_lon 116.0"),
        ("116,40,117,39", "min_lat 40.0 is greater than max_lat 39.0"),
        ("1" * 201, "at most 200 characters"),
    ],
)
def test_bad_bounding_boxes_are_422_saying_why(http: TestClient, bbox: str, says: str) -> None:
    response = http.get("/v1/devices", params={"bbox": bbox})
    assert response.status_code == 422
    assert says in response.json()["detail"]


def test_a_degenerate_box_is_a_point() -> None:
    assert BoundingBox.parse(" 117.28, 31.86 ,117.28,31.86") == BoundingBox(117.28, 31.86, 117.28, 31.86)


def test_unknown_device_is_404_with_reason(http: TestClient) -> None:
    response = http.get("/v1/devices/nobody")
    assert response.status_code == 404
    assert "no device 'nobody' in the registry" in response.json()["detail"]


@pytest.mark.parametrize(
    "hostile",
    [
        "' OR 1=1 --",
        f"{CAMERA}'; DROP TABLE registry; --",
        "%27%20OR%20%271%27=%271",
        "設備-攝像機",
        "\\x00",
        "x" * 129,
    ],
)
def test_hostile_ids_are_data_not_sql(http: TestClient, hostile: str) -> None:
    assert http.get(f"/v1/devices/{hostile}").status_code in (404, 422)
    assert http.get("/v1/devices", params={"after": hostile[:128]}).status_code == 200
    for name in ("type", "status", "protocol", "district"):
        answer = http.get("/v1/devices", params={name: hostile})
        if name == "district" and hostile == "設備-攝像機":
            # A place name may be in any script: accepted, and it names no district here.
            assert answer.status_code == 200 and answer.json()["total"] == 0
        else:
            assert answer.status_code == 422, (name, hostile)
    assert http.get(f"/v1/devices/{CAMERA}").status_code == 200
    assert http.get("/v1/devices").json()["total"] == 6


def test_new_lake_rows_appear_at_the_next_refresh(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path))) as http:
        assert ids(http.get("/v1/devices").json()) == ["meter-north", "press-1", "pump-north-1"]
        write_city_lake(tmp_path / "data")
        catalog: DeviceCatalog = http.app.state.catalog  # type: ignore[attr-defined]
        assert catalog.refresh() == 6
        assert http.get(f"/v1/devices/{CAMERA}").status_code == 200
        assert "citylake_registry_devices 6.0" in http.get("/metrics").text


def test_a_lake_that_cannot_be_read_is_503_and_unhealthy_until_it_can(tmp_path: Path) -> None:
    write_city_lake(tmp_path / "data")
    [bad] = write_lake_table(tmp_path / "data", "devices", [device("x")], name="part-9")
    bad.write_bytes(b"PAR1 this is not parquet")
    with TestClient(create_app(settings(tmp_path))) as http:
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["catalog"].startswith("never built")
        response = http.get("/v1/devices")
        assert response.status_code == 503
        assert "could not be built from the lake" in response.json()["detail"]
        bad.unlink()
        assert http.get("/v1/devices").json()["total"] == 6
        assert http.get("/healthz").status_code == 200


def test_a_source_that_does_not_validate_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = "  - name: broken\n    type: modbus\n    url: tcp://127.0.0.1:503\n    devices: []\n"
    with caplog.at_level(logging.WARNING):
        devices = configured_devices(load_config(city(tmp_path, broken)))
    assert {d.device_id for d in devices} == {"pump-north-1", "meter-north", "press-1"}
    assert "sources[4].devices" in caplog.text


def test_api_keys_guard_everything_but_healthz(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path, keys=["k1"]))) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/devices").status_code == 401
        assert http.get("/v1/devices/pump-north-1").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/v1/devices", headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.get("/v1/devices", headers={"X-API-Key": "k1"}).status_code == 200
        assert http.get("/metrics", headers={"X-API-Key": "k1"}).status_code == 200


def test_healthz_reports_an_unreachable_sidecar(tmp_path: Path) -> None:
    nobody = SidecarAddress(free_port())
    with TestClient(create_app(settings(tmp_path, sidecar=nobody))) as http:
        response = http.get("/healthz")
        assert response.status_code == 503
        assert response.json()["checks"]["sidecar"].startswith("unreachable at http://127.0.0.1:")
        assert response.json()["checks"]["catalog"] == "ok"
        assert http.get("/v1/devices/pump-north-1").status_code == 200  # serving goes on


def test_openapi_documents_the_routes(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/devices", "/v1/devices/{device_id}", "/healthz", "/metrics"} <= set(paths)
    assert http.get("/docs").status_code == 200
