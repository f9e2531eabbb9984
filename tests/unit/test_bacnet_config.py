"""BACnet config: the sample validates through the registry, mistakes are
refused naming the key, and pyproject's entry point names the adapter."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.bacnet.adapter import BacnetSource
from citylake.ingest.bacnet.config import BacnetSourceConfig

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ingest" / "bacnet" / "sample.yaml"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


def test_sample_validates_and_names_its_devices() -> None:
    config = BacnetSourceConfig.model_validate(sample())
    assert config.bind == ("192.168.10.5", 47808)
    assert [d.id for d in config.devices] == ["bldg-a-ahu-1", "bldg-a-lighting-2f"]
    assert config.devices[0].objects[0].object == "analog-input,1"
    rows = BacnetSource(config).known_devices(1_764_072_000_000)
    assert [(r["device_id"], r["protocol"], r["name"]) for r in rows] == [
        ("bldg-a-ahu-1", "bacnet", "Building A AHU 1"),
        ("bldg-a-lighting-2f", "bacnet", "Building A lighting 2F"),
    ]
    assert '"device_instance": 2001' in str(rows[1]["attributes"])


def test_entry_point_in_pyproject_names_the_adapter() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["citylake.adapters"]["bacnet"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is BacnetSource


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "udp://192.168.10.5:47808"}, "expected bacnet://"),
        ({"url": "bacnet://building-a:47808"}, "expected <IPv4 address>:<port>"),
        ({"network_prefix": None}, "set network_prefix"),
        ({"device_instance": 1001}, "is citylake's own"),
        ({"metadata": {"nobody": {"name": "x"}}}, "no device has as device_id"),
    ],
)
def test_source_mistakes_are_named(change: dict[str, Any], message: str) -> None:
    data = sample() | change
    with pytest.raises(ValidationError, match=message):
        BacnetSourceConfig.model_validate(data)


@pytest.mark.parametrize(
    ("device_change", "message"),
    [
        ({"device_instance": 4_194_303}, "less than or equal to 4194302"),
        ({"address": "192.168.10.41"}, "expected <IPv4 address>:<port>"),
        ({"objects": [{"object": "device,1", "metric": "x"}]}, "has no readable present-value"),
        ({"objects": [{"object": "analog-input", "metric": "x"}]}, "expected <object-type>,<instance>"),
        ({"objects": [{"object": "analog-input,4194303", "metric": "x"}]}, "above 4194302"),
        (
            {
                "objects": [
                    {"object": "analog-input,1", "metric": "a"},
                    {"object": "analog-input:1", "metric": "b"},
                ]
            },
            "object analog-input,1 configured twice",
        ),
        (
            {
                "objects": [
                    {"object": "analog-input,1", "metric": "a"},
                    {"object": "analog-input,2", "metric": "a"},
                ]
            },
            "metric a configured twice",
        ),
    ],
)
def test_device_mistakes_are_named(device_change: dict[str, Any], message: str) -> None:
    data = sample()
    data["devices"][1] = data["devices"][1] | device_change
    with pytest.raises(ValidationError, match=message):
        BacnetSourceConfig.model_validate(data)


def test_same_instance_twice_is_refused() -> None:
    data = sample()
    data["devices"][1]["device_instance"] = 1001
    with pytest.raises(ValidationError, match="device_instance 1001 configured twice"):
        BacnetSourceConfig.model_validate(data)
