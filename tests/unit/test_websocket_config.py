"""WebSocket source: sample, config errors, the per-connection token bucket."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.websocket.adapter import TokenBucket, WebSocketSource
from citylake.ingest.websocket.config import WebSocketSourceConfig

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef-token"


def test_sample_validates_and_builds() -> None:
    data: dict[str, Any] = yaml.safe_load((REPO / "ingest" / "websocket" / "sample.yaml").read_text())
    source = WebSocketSource(WebSocketSourceConfig.model_validate(data))
    assert source.template.match("/v1/ws/gw%2F1") == {"device_id": "gw/1"}
    assert (source.config.host, source.config.port) == ("0.0.0.0", 8765)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "http://0.0.0.0:8765"}, "expected ws://host:port"),
        ({"url": "ws://0.0.0.0:8765/v1"}, "put the handshake path in `path`"),
        ({"tokens": ["short"]}, "shorter than 16 characters"),
        ({"tokens": []}, "at least 1 item"),
        ({"url": "wss://0.0.0.0:8765"}, "wss:// needs tls_cert and tls_key"),
        ({"max_messages_per_s": 0}, "greater than 0"),
    ],
)
def test_config_errors(overrides: dict[str, Any], message: str) -> None:
    data = {"name": "ws", "type": "websocket", "url": "ws://127.0.0.1:8765", "tokens": [TOKEN], **overrides}
    with pytest.raises(ValidationError, match=message):
        WebSocketSourceConfig.model_validate(data)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.wait_s(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.wait_s(0.1) == 0.0  # one token back after 1/rate
    assert bucket.wait_s(100.0) == 0.0 and bucket.tokens == 2  # refills to the burst, no more


def test_entry_point_names_the_adapter() -> None:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "citylake.adapters"
    ]
    assert entry["websocket"] == "citylake.ingest.websocket.adapter:WebSocketSource"
