"""AMQP config and routing-key templates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.amqp.adapter import AmqpSource
from citylake.ingest.amqp.codec import RoutingKeyTemplate
from citylake.ingest.amqp.config import AmqpSourceConfig

REPO = Path(__file__).resolve().parents[2]


def sample() -> dict[str, object]:
    data = yaml.safe_load((REPO / "ingest" / "amqp" / "sample.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_sample_validates_and_hides_the_password() -> None:
    source = AmqpSource(AmqpSourceConfig.model_validate(sample()))
    (device,) = source.known_devices(0)
    assert device["device_id"] == "well-gulou-3" and device["protocol"] == "amqp"
    assert "change-me" not in str(device) and "change-me" not in source.endpoint


def test_entry_point_names_the_class() -> None:
    assert 'amqp = "citylake.ingest.amqp.adapter:AmqpSource"' in (REPO / "pyproject.toml").read_text()


def test_routing_key_template() -> None:
    template = RoutingKeyTemplate("city.{district}.{device_type}.{device_id}.telemetry")
    assert template.match("city.320106.well.w-1.telemetry") == {
        "district": "320106", "device_type": "well", "device_id": "w-1"
    }  # fmt: skip
    assert template.match("city.320106.well.w-1.status") is None
    assert template.match("city.320106.well..telemetry") is None
    assert template.match("city.320106.well.w-1.telemetry.extra") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "http://h:5672"}, "amqp://"),
        ({"queues": []}, "at least 1"),
        ({"queues": [{"queue": "q"}, {"queue": "q"}]}, "twice"),
        ({"queues": [{"queue": "q", "routing_key_template": "city.*.{device_id}"}]}, "whole"),
        ({"queues": [{"queue": "q", "routing_key_template": "a.{x}.{x}"}]}, "twice"),
        ({"prefetch": 0}, "greater than or equal"),
    ],
)
def test_bad_config_names_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AmqpSourceConfig.model_validate({**sample(), **change})
