"""Devices named in a source's config become ``devices`` rows (landed at start)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.modbus.adapter import ModbusSource
from citylake.ingest.modbus.config import ModbusSourceConfig
from citylake.ingest.opcua.adapter import OpcUaSource
from citylake.ingest.opcua.config import OpcUaSourceConfig
from citylake.schemas import table, validate_row

REPO = Path(__file__).resolve().parents[2]
NOW = 1_764_072_000_000
DEVICES = table("devices")


def sample(protocol: str) -> dict[str, object]:
    data = yaml.safe_load((REPO / "ingest" / protocol / "sample.yaml").read_text())
    assert isinstance(data, dict)
    return data


POWER_METER = [  # the power-meter profile's fields, in its order
    "voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
    "power_total", "frequency", "energy_import",
]  # fmt: skip


def test_modbus_devices_with_their_metadata_and_endpoint() -> None:
    source = ModbusSource(ModbusSourceConfig.model_validate(sample("modbus")))
    rows = source.known_devices(NOW)
    assert [r["device_id"] for r in rows] == ["pump-north-1", "pump-north-2", "meter-north"]
    first = rows[0]
    assert (first["name"], first["type"], first["protocol"]) == (
        "North pump station, pump 1", "pump_station", "modbus",
    )  # fmt: skip
    assert (first["district"], first["civil_code"], first["longitude"], first["latitude"]) == (
        "Gulou", "320106", 118.778, 32.0725,
    )  # fmt: skip
    assert json.loads(str(rows[2]["attributes"])) == {
        "endpoint": "rtu+tcp://127.0.0.1:4001", "interval_s": 60.0, "profile": "power-meter",
        "slave_id": 1, "source": "pump-stations", "metrics": POWER_METER,
    }  # fmt: skip
    assert (rows[1]["name"], rows[1]["longitude"], rows[1]["first_seen"], rows[1]["last_seen"]) == (
        None, None, NOW, NOW,
    )  # fmt: skip
    assert all(validate_row(DEVICES, r) is None for r in rows)


def test_opcua_devices_one_per_device_id_without_credentials() -> None:
    data = {**sample("opcua"), "url": "opc.tcp://citylake:secret@127.0.0.1:4840/citylake"}
    rows = OpcUaSource(OpcUaSourceConfig.model_validate(data)).known_devices(NOW)
    assert len(rows) == 1
    row = rows[0]
    assert (row["device_id"], row["protocol"], row["name"], row["civil_code"]) == (
        "pump-north-1", "opcua", "North pump 1", "320106",
    )  # fmt: skip
    attributes = json.loads(str(row["attributes"]))
    assert attributes["endpoint"] == "opc.tcp://127.0.0.1:4840/citylake"
    assert attributes["metrics"] == ["pressure", "starts", "flow", "running", "state"]
    assert validate_row(DEVICES, row) is None


def test_metadata_is_checked() -> None:
    data = sample("modbus")
    devices = data["devices"]
    assert isinstance(devices, list)
    broken = {**data, "devices": [{**devices[0], "longitude": 118.0, "latitude": None}]}
    with pytest.raises(ValidationError, match="give both longitude and latitude"):
        ModbusSourceConfig.model_validate(broken)
    broken = {**data, "devices": [{**devices[0], "civil_code": "Gulou"}]}
    with pytest.raises(ValidationError, match="civil_code"):
        ModbusSourceConfig.model_validate(broken)
    opcua = {**sample("opcua"), "devices": {"pump-south-9": {"name": "x"}}}
    with pytest.raises(ValidationError, match="devices names pump-south-9, which no node has as device_id"):
        OpcUaSourceConfig.model_validate(opcua)
