"""OPC UA config and codec: the sample validates, addressing and security
mistakes are refused naming the problem, values map to readings columns."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.config import ConfigError, load_config
from citylake.ingest.opcua.adapter import OpcUaSource
from citylake.ingest.opcua.codec import (
    UnsupportedValue,
    check_node_id,
    parse_browse_path,
    quality_of,
    reading,
    timestamp_ms,
    value_and_text,
)
from citylake.ingest.opcua.config import OpcUaSourceConfig
from citylake.ingest.registry import build_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ingest" / "opcua" / "sample.yaml"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


def source(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "plc",
        "type": "opcua",
        "url": "opc.tcp://127.0.0.1:4840/x",
        "nodes": [{"node_id": "ns=2;i=1001", "device_id": "p1", "metric": "flow"}],
    }
    data.update(overrides)
    return data


def error(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as info:
        OpcUaSourceConfig.model_validate(source(**overrides))
    return str(info.value)


def test_sample_validates() -> None:
    config = OpcUaSourceConfig.model_validate(sample())
    assert config.mode == "subscribe"
    assert [n.metric for n in config.nodes] == ["pressure", "starts", "flow", "running", "state"]
    assert config.deadband is not None and config.deadband.value == 0.05
    flow = config.nodes[2]
    assert flow.browse_path == "0:Objects/2:Pump1/2:Flow"
    assert flow.deadband is not None and flow.deadband.value == 0.5
    assert config.security_mode == "None"


def test_sample_loads_through_city_yaml(tmp_path: Path) -> None:
    city = {"site": "s1", "data_dir": str(tmp_path), "sources": [sample()]}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city, sort_keys=False))
    [built] = build_sources(load_config(path))
    assert isinstance(built, OpcUaSource)
    assert not built.is_up()


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    city = {"site": "s1", "data_dir": str(tmp_path), "sources": [source(sampling_ms=5)]}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        build_sources(load_config(path))
    assert "sources.0.sampling_ms" in str(info.value) or "sampling_ms" in str(info.value)


def test_url_must_be_opc_tcp() -> None:
    assert "expected opc.tcp://host:port/path" in error(url="tcp://127.0.0.1:4840")
    assert "expected opc.tcp://host:port/path" in error(url="http://plc:4840")


def test_node_needs_exactly_one_address() -> None:
    both = [{"node_id": "ns=2;i=1", "browse_path": "0:Objects/2:P", "device_id": "p", "metric": "m"}]
    assert "exactly one of node_id or browse_path" in error(nodes=both)
    neither = [{"device_id": "p", "metric": "m"}]
    assert "exactly one of node_id or browse_path" in error(nodes=neither)
    assert "at least 1 item" in error(nodes=[])


@pytest.mark.parametrize(
    "node_id",
    ["ns=2;s=Pump1.Pressure", "ns=2;i=1001", "i=2258", "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a"],
)
def test_node_id_forms(node_id: str) -> None:
    assert check_node_id(node_id) == node_id


@pytest.mark.parametrize("node_id", ["Pump1.Pressure", "ns=x;i=1", "ns=2;i=abc", "ns=2;q=1", ""])
def test_bad_node_ids_are_refused(node_id: str) -> None:
    nodes = [{"node_id": node_id, "device_id": "p", "metric": "m"}]
    assert "expected ns=<index>;i=<number>" in error(nodes=nodes)


def test_browse_paths() -> None:
    assert parse_browse_path("0:Objects/2:Pump1/2:Pressure") == [
        (0, "Objects"),
        (2, "Pump1"),
        (2, "Pressure"),
    ]
    assert parse_browse_path("/0:Objects/3:A b/") == [(0, "Objects"), (3, "A b")]
    with pytest.raises(ValueError, match="element 'Pump1' must be <namespace index>:<browse name>"):
        parse_browse_path("0:Objects/Pump1")
    with pytest.raises(ValueError, match="at least a start and one child"):
        parse_browse_path("0:Objects")
    nodes = [{"browse_path": "Objects.Pump1", "device_id": "p", "metric": "m"}]
    assert "must be <namespace index>:<browse name>" in error(nodes=nodes)


def test_security_needs_policy_certificate_and_key() -> None:
    message = error(security_mode="SignAndEncrypt")
    assert "security_mode SignAndEncrypt needs security_policy, certificate, private_key" in message
    assert "security_mode is None" in error(security_policy="Basic256Sha256")
    assert "Input should be 'Basic256Sha256'" in error(
        security_mode="Sign", security_policy="Basic128Rsa15", certificate="c", private_key="k"
    )
    signed = {"security_mode": "Sign", "security_policy": "Basic256Sha256", "certificate": "c.der"}
    assert "needs server_certificate" in error(**signed, private_key="k.pem")
    ok = OpcUaSourceConfig.model_validate(source(**signed, private_key="k.pem", server_certificate="s.der"))
    assert ok.security_policy == "Basic256Sha256"
    tofu = OpcUaSourceConfig.model_validate(source(**signed, private_key="k.pem", trust_on_first_use=True))
    assert tofu.server_certificate is None


def test_credentials_come_in_pairs_and_other_checks() -> None:
    assert "both username and password" in error(username="u")
    assert "reconnect_max_s must be >= reconnect_min_s" in error(reconnect_min_s=5, reconnect_max_s=1)
    twice = [
        {"node_id": "ns=2;i=1", "device_id": "p", "metric": "m"},
        {"node_id": "ns=2;i=2", "device_id": "p", "metric": "m"},
    ]
    assert "device p metric m is configured twice" in error(nodes=twice)
    assert "Input should be 'subscribe' or 'poll'" in error(mode="push")
    assert "deadband" in error(deadband={"type": "relative", "value": 1})
    assert "greater than or equal to 0" in error(deadband={"value": -1})


def test_quality_from_status_code_severity() -> None:
    assert quality_of(0) == 0  # Good
    assert quality_of(0x00A80000) == 0  # GoodOverload-style info bits stay good
    assert quality_of(0x40000000) == 1  # Uncertain
    assert quality_of(0x408F0000) == 1  # UncertainEngineeringUnitsExceeded
    assert quality_of(0x80000000) == 2  # Bad
    assert quality_of(0x80340000) == 2  # BadNodeIdUnknown
    assert quality_of(0xC0000000) == 2  # reserved severity counts as bad


def test_values_to_columns() -> None:
    assert value_and_text(3) == (3.0, None)
    assert value_and_text(2.5) == (2.5, None)
    assert value_and_text(True) == (1.0, None)
    assert value_and_text(False) == (0.0, None)
    assert value_and_text("open") == (None, "open")
    assert value_and_text(None) == (None, None)
    assert value_and_text(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (None, "2026-01-02T03:04:05+00:00")

    class LocalizedText:
        Text = "Betrieb"

    assert value_and_text(LocalizedText()) == (None, "Betrieb")
    with pytest.raises(UnsupportedValue, match="unsupported value type list"):
        value_and_text([1, 2])
    with pytest.raises(UnsupportedValue, match="not a finite number"):
        value_and_text(float("nan"))


def test_timestamps_prefer_source_then_server_then_now() -> None:
    source_ts = datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
    server_ts = datetime(2025, 11, 25, 12, 0, 1)  # naive: asyncua's UTC
    assert timestamp_ms(source_ts, server_ts, 7) == 1_764_072_000_000
    assert timestamp_ms(None, server_ts, 7) == 1_764_072_001_000
    assert timestamp_ms(datetime(1601, 1, 1), None, 7) == 7  # OPC UA's "no time"
    assert timestamp_ms(None, None, 7) == 7


def test_reading_row() -> None:
    row = reading("p1", "pressure", "bar", 4.5, 0x40000000, 1_764_072_000_000)
    assert row == {
        "device_id": "p1",
        "metric": "pressure",
        "ts": 1_764_072_000_000,
        "value": 4.5,
        "text": None,
        "unit": "bar",
        "quality": 1,
    }
