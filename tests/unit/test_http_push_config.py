"""HTTP push config, path templates and token checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.config import load_config
from citylake.ingest.http_push.adapter import HttpPushSource
from citylake.ingest.http_push.codec import PathTemplate, bearer_token, token_accepted
from citylake.ingest.http_push.config import HttpPushSourceConfig
from citylake.ingest.registry import build_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ingest" / "http_push" / "sample.yaml"
TOKEN = "0123456789abcdef-token"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return data


def error(**overrides: Any) -> str:
    data: dict[str, Any] = {
        "name": "push",
        "type": "http_push",
        "url": "http://127.0.0.1:8088",
        "tokens": [TOKEN],
    }
    data.update(overrides)
    with pytest.raises(ValidationError) as info:
        HttpPushSourceConfig.model_validate(data)
    return str(info.value)


def test_sample_validates_and_loads_through_city_yaml(tmp_path: Path) -> None:
    config = HttpPushSourceConfig.model_validate(sample())
    assert config.path == "/v1/push/{device_id}"
    assert len(config.tokens) == 2
    assert config.units["water_level"] == "m"
    city = {"site": "s1", "data_dir": str(tmp_path), "sources": [sample()]}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city, sort_keys=False))
    [built] = build_sources(load_config(path))
    assert isinstance(built, HttpPushSource)
    assert (built.host, built.port) == ("0.0.0.0", 8088)
    assert not built.is_up()


def test_listen_url() -> None:
    assert "expected http://host:port to listen on" in error(url="mqtt://127.0.0.1:1883")
    assert "give the host and port" in error(url="http://127.0.0.1")
    assert "put the request path in `path`" in error(url="http://127.0.0.1:8088/v1/push")
    assert "https:// needs tls_cert and tls_key" in error(url="https://0.0.0.0:8443")
    assert "https:// needs tls_cert and tls_key" in error(tls_cert="c.pem", tls_key="k.pem")


def test_tokens_are_required_and_long() -> None:
    assert "at least 1 item" in error(tokens=[])
    assert "token 1 is shorter than 16 characters" in error(tokens=[TOKEN, "secret"])
    assert "Field required" in error(tokens=None) or "valid list" in error(tokens=None)


def test_path_templates() -> None:
    assert "must start with /" in error(path="v1/push")
    assert "must be a whole {name}" in error(path="/v1/push/dev-{device_id}")
    assert "a placeholder is used twice" in error(path="/v1/{device_id}/{device_id}")
    template = PathTemplate("/v1/push/{device_id}")
    assert template.match("/v1/push/gauge-1") == {"device_id": "gauge-1"}
    assert template.match("/v1/push/gauge%2F2") == {"device_id": "gauge/2"}
    assert template.match("/v1/push/") is None
    assert template.match("/v1/push/a/b") is None
    assert template.match("/v2/push/a") is None
    site = PathTemplate("/v1/{district}/{device_id}/telemetry")
    assert site.match("/v1/haidian/air-1/telemetry") == {"district": "haidian", "device_id": "air-1"}
    assert PathTemplate("/v1/gateway").match("/v1/gateway") == {}


def test_bearer_tokens() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"bearer   abc  ") == b"abc"
    assert bearer_token(b"Basic abc") is None
    assert bearer_token(b"Bearer ") is None
    assert bearer_token(None) is None
    tokens = [b"first-token-0123456789", b"second-token-0123456789"]
    assert token_accepted(b"second-token-0123456789", tokens)
    assert not token_accepted(b"second-token-012345678", tokens)
    assert not token_accepted(None, tokens)
    assert not token_accepted(b"", tokens)
