"""Modbus config: the sample validates, profiles load, bad register maps are
refused with errors that name the field and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.config import ConfigError, load_config
from citylake.ingest.modbus.adapter import ModbusSource
from citylake.ingest.modbus.config import (
    ModbusDevice,
    ModbusEndpoint,
    ModbusSourceConfig,
    parse_endpoint,
)
from citylake.ingest.modbus.fields import RegisterField
from citylake.ingest.modbus.profiles import ProfileError, available_profiles, load_profile
from citylake.ingest.registry import build_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ingest" / "modbus" / "sample.yaml"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


def source(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "pumps",
        "type": "modbus",
        "url": "tcp://127.0.0.1:502",
        "devices": [{"device_id": "p1", "fields": [{"name": "flow", "address": 0}]}],
    }
    data.update(overrides)
    return data


def field_error(**field: Any) -> str:
    with pytest.raises(ValidationError) as info:
        RegisterField.model_validate({"name": "x", "address": 0, **field})
    return str(info.value)


def test_sample_validates_with_its_profile() -> None:
    config = ModbusSourceConfig.model_validate(sample())
    assert [d.device_id for d in config.devices] == ["pump-north-1", "pump-north-2", "meter-north"]
    pump = config.devices[0]
    assert pump.profile == "pump-station"
    assert pump.fields is None
    assert "flow_rate" in [f.name for f in pump.register_fields]
    assert config.endpoint_of(config.devices[2]) == ModbusEndpoint("rtu+tcp", host="127.0.0.1", port=4001)


def test_sample_loads_through_city_yaml(tmp_path: Path) -> None:
    city = {"site": "s1", "data_dir": str(tmp_path), "sources": [sample()]}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city, sort_keys=False))
    [built] = build_sources(load_config(path))
    assert isinstance(built, ModbusSource)
    # Two devices behind one gateway share a client; the meter has its own.
    assert sorted(built.connections) == ["rtu+tcp://127.0.0.1:4001", "tcp://127.0.0.1:502"]
    targets = {t.name: t for t in built.targets()}
    assert targets["pump-north-1"].connection is targets["pump-north-2"].connection
    assert targets["pump-north-2"].interval_s == 5
    assert targets["pump-north-1"].interval_s == 10
    assert [r.describe() for r in targets["pump-north-1"].plan.requests] == [
        "holding 100..123",
        "input 0..1",
        "coil 0..0",
        "discrete 0..0",
    ]
    assert len(targets["meter-north"].plan) == 3


def test_shipped_profiles_load() -> None:
    assert {"pump-station", "power-meter"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.fields, name
        assert profile.description, name


def test_profile_by_path(tmp_path: Path) -> None:
    path = tmp_path / "meter.yaml"
    path.write_text("fields:\n  - {name: kwh, register_type: input, address: 0, data_type: FLOAT32}\n")
    device = ModbusDevice.model_validate({"device_id": "m", "profile": str(path)})
    assert [f.name for f in device.register_fields] == ["kwh"]


def test_bad_profile_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "description: broken\nfields:\n"
        "  - {name: ok, address: 0}\n"
        "  - {name: bad, address: 1, data_type: INT24}\n"
    )
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert f"profile '{path}' ({path})" in message
    assert "line 4: fields[1].data_type" in message
    assert "'INT16'" in message  # the allowed values are listed


def test_missing_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match=r"file not found \(shipped profiles: .*power-meter.*pump-station"):
        load_profile("no-such-profile")
    with pytest.raises(ProfileError, match="expected a profile name"):
        load_profile("Not A Name")


def test_profile_problem_reaches_city_yaml_with_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("fields:\n  - {name: s, address: 0, data_type: STRING}\n")
    text = (
        "site: s1\nsources:\n  - name: pumps\n    type: modbus\n    url: tcp://127.0.0.1:502\n"
        f"    devices:\n      - device_id: p1\n        profile: {broken}\n"
    )
    path = tmp_path / "city.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_sources(load_config(path))
    message = str(info.value)
    assert "line 7: sources[0].devices[0]" in message
    assert "STRING needs length" in message
    assert str(broken) in message


def test_field_errors_name_the_problem() -> None:
    assert "field 'x': STRING needs length" in field_error(data_type="STRING")
    assert "field 'x': BIT on a holding register needs bit (0..15)" in field_error(data_type="BIT")
    assert "coil values are single bits; data_type must be BIT, not INT16" in field_error(
        register_type="coil", data_type="INT16"
    )
    assert "a discrete is one bit" in field_error(register_type="discrete", bit=2)
    assert "bit is only for data_type BIT, not UINT16" in field_error(bit=2)
    assert "length is only for data_type STRING, not INT32" in field_error(data_type="INT32", length=2)
    assert "scale and offset apply to numbers, not BIT" in field_error(data_type="BIT", bit=0, scale=2)
    assert "ends at address 65536, beyond 65535" in field_error(address=65533, data_type="FLOAT64")
    assert "must be a finite number" in field_error(scale=float("nan"))
    assert "Input should be 'ABCD', 'DCBA', 'BADC' or 'CDAB'" in field_error(byte_order="ABDC")
    assert "less than or equal to 15" in field_error(data_type="BIT", bit=16)
    assert "less than or equal to 65535" in field_error(address=70000)
    assert "unit_of_measure" in field_error(unit_of_measure="V")  # unknown keys are refused
    assert "String should match pattern" in field_error(name="has space")


def test_field_defaults() -> None:
    coil = RegisterField.model_validate({"name": "on", "register_type": "coil", "address": 3})
    assert coil.data_type == "BIT"
    assert coil.width == 1
    plain = RegisterField.model_validate({"name": "v", "address": 3})
    assert (plain.register_type, plain.data_type, plain.byte_order, plain.scale) == (
        "holding",
        "UINT16",
        "ABCD",
        1,
    )
    text = RegisterField.model_validate({"name": "m", "address": 0, "data_type": "STRING", "length": 8})
    assert text.width == 8


def test_device_needs_exactly_one_register_map() -> None:
    with pytest.raises(ValidationError, match="give exactly one of fields \\(inline\\) or profile"):
        ModbusDevice.model_validate({"device_id": "p"})
    with pytest.raises(ValidationError, match="give exactly one"):
        ModbusDevice.model_validate(
            {"device_id": "p", "profile": "pump-station", "fields": [{"name": "a", "address": 0}]}
        )
    with pytest.raises(ValidationError, match="field names used twice: a"):
        ModbusDevice.model_validate(
            {"device_id": "p", "fields": [{"name": "a", "address": 0}, {"name": "a", "address": 1}]}
        )
    device = ModbusDevice.model_validate(
        {"device_id": "p", "unit_id": 7, "fields": [{"name": "a", "address": 0}]}
    )
    assert device.slave_id == 7
    with pytest.raises(ValidationError, match="less than or equal to 255"):
        ModbusDevice.model_validate(
            {"device_id": "p", "slave_id": 256, "fields": [{"name": "a", "address": 0}]}
        )


def test_source_level_checks() -> None:
    device = {"device_id": "p1", "fields": [{"name": "flow", "address": 0}]}
    with pytest.raises(ValidationError, match="device_id used twice: p1"):
        ModbusSourceConfig.model_validate(source(devices=[device, device]))
    wide = {"device_id": "p1", "fields": [{"name": "s", "address": 0, "data_type": "STRING", "length": 20}]}
    with pytest.raises(ValidationError, match="spans 20 registers, more than max_registers_per_request 10"):
        ModbusSourceConfig.model_validate(source(devices=[wide], max_registers_per_request=10))
    with pytest.raises(ValidationError, match="less than or equal to 125"):
        ModbusSourceConfig.model_validate(source(max_registers_per_request=126))
    with pytest.raises(ValidationError, match="less than or equal to 2000"):
        ModbusSourceConfig.model_validate(source(max_bits_per_request=2001))
    with pytest.raises(ValidationError, match="devices"):
        ModbusSourceConfig.model_validate(source(devices=[]))
    config = ModbusSourceConfig.model_validate(source())
    assert (config.interval_s, config.timeout_s, config.retries, config.max_gap_registers) == (10, 2, 1, 10)
    assert (config.one_request_per_field, config.pause_between_requests_s) == (False, 0)


def test_urls() -> None:
    assert parse_endpoint("tcp://10.0.0.5:5020") == ModbusEndpoint("tcp", host="10.0.0.5", port=5020)
    assert parse_endpoint("tcp://plc.local").port == 502
    assert parse_endpoint("rtu+tcp://127.0.0.1:4001").key == "rtu+tcp://127.0.0.1:4001"
    serial = parse_endpoint("serial:///dev/ttyUSB0?baudrate=19200&parity=E&stopbits=1&bytesize=8")
    assert serial == ModbusEndpoint("serial", serial_port="/dev/ttyUSB0", baudrate=19200, parity="E")
    assert serial.key == "serial:///dev/ttyUSB0?19200-8E1"
    assert parse_endpoint("serial:///dev/ttyS1").baudrate == 9600
    for url, problem in [
        ("udp://h:502", "expected tcp://host:port, rtu+tcp://host:port or serial:///dev/ttyX"),
        ("serial://dev/ttyS0", "three slashes"),
        ("serial:///dev/ttyS0?baud=9600", "unknown serial option(s) ['baud']"),
        ("serial:///dev/ttyS0?parity=X", "parity must be N, E or O"),
        ("serial:///dev/ttyS0?stopbits=3", "stopbits must be 1 or 2"),
        ("serial:///dev/ttyS0?baudrate=fast", "must be integers"),
        ("tcp://h:502/path", "host:port only"),
        ("tcp://h:99999", "port must be a number"),
    ]:
        with pytest.raises(ValueError) as info:
            parse_endpoint(url)
        assert problem in str(info.value), (url, str(info.value))
    with pytest.raises(ValidationError, match="expected tcp://host:port"):
        ModbusSourceConfig.model_validate(source(url="mqtt://h:1883"))
    bad_device = {"device_id": "p1", "url": "tcp://", "fields": [{"name": "a", "address": 0}]}
    with pytest.raises(ValidationError, match="no host"):
        ModbusSourceConfig.model_validate(source(devices=[bad_device]))


def test_devices_share_a_client_per_endpoint() -> None:
    fields = [{"name": "a", "address": 0}]
    config = ModbusSourceConfig.model_validate(
        source(
            devices=[
                {"device_id": "a", "slave_id": 1, "fields": fields, "timeout_s": 0.5},
                {"device_id": "b", "slave_id": 2, "fields": fields, "timeout_s": 3},
                {"device_id": "c", "url": "tcp://127.0.0.1:502", "fields": fields},
                {"device_id": "d", "url": "tcp://127.0.0.1:503", "fields": fields, "retries": 0},
            ]
        )
    )
    built = ModbusSource(config)
    assert sorted(built.connections) == ["tcp://127.0.0.1:502", "tcp://127.0.0.1:503"]
    # The shared client waits as long as its slowest device may need.
    assert built.connections["tcp://127.0.0.1:502"].connect_timeout_s == 3
    by_name = {t.name: t for t in built.targets()}
    assert [t.name for t in built.targets()] == ["a", "b", "c", "d"]
    assert by_name["a"].connection is by_name["c"].connection
    assert (by_name["a"].timeout_s, by_name["c"].timeout_s) == (0.5, 2)
    assert (by_name["c"].retries, by_name["d"].retries) == (1, 0)


def test_readme_documents_every_key() -> None:
    readme = (REPO / "ingest" / "modbus" / "README.md").read_text()
    for model in (ModbusSourceConfig, ModbusDevice, RegisterField):
        for key in model.model_fields:
            assert f"`{key}`" in readme, f"ingest/modbus/README.md does not document {model.__name__}.{key}"


def test_serial_without_pyserial_is_a_config_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    config = ModbusSourceConfig.model_validate(source(url="serial:///dev/ttyUSB0?baudrate=19200"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert ModbusSource(config).validate() == [
        "serial:///dev/ttyUSB0?19200-8N1: serial Modbus needs the pyserial package (pip install pyserial)"
    ]
    assert ModbusSource(ModbusSourceConfig.model_validate(source())).validate() == []
