"""Kafka config: the sample, broker lists, topic names, SASL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.kafka.adapter import KafkaSource
from citylake.ingest.kafka.config import KafkaSourceConfig, bootstrap_servers

REPO = Path(__file__).resolve().parents[2]


def sample() -> dict[str, object]:
    data = yaml.safe_load((REPO / "ingest" / "kafka" / "sample.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_sample_validates_and_sets_librdkafka_up() -> None:
    source = KafkaSource(KafkaSourceConfig.model_validate(sample()))
    settings = source._settings()
    assert settings["bootstrap.servers"] == "10.60.0.5:9092,10.60.0.6:9092"
    assert settings["enable.auto.commit"] is False  # offsets only after landing
    assert settings["security.protocol"] == "SASL_PLAINTEXT" and settings["sasl.mechanism"] == "SCRAM-SHA-256"
    (device,) = source.known_devices(0)
    assert device["device_id"] == "bus-k7-001" and "change-me" not in str(device)


def test_entry_point_names_the_class() -> None:
    assert 'kafka = "citylake.ingest.kafka.adapter:KafkaSource"' in (REPO / "pyproject.toml").read_text()


def test_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://a:9092,b:9093") == "a:9092,b:9093"
    with pytest.raises(ValueError, match="host:port"):
        bootstrap_servers("kafka://a,b:9093")
    with pytest.raises(ValueError, match="kafka://"):
        bootstrap_servers("tcp://a:9092")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"topics": ["bad topic"]}, "letters, digits"),
        ({"topics": ["t", "t"]}, "twice"),
        ({"topics": []}, "at least 1"),
        ({"password": None}, "together"),
        ({"url": "kafka://"}, "expected"),
    ],
)
def test_bad_config_names_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSourceConfig.model_validate({**sample(), **change})
