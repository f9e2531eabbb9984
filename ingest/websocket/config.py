"""The keys of a ``type: websocket`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import SourceConfig


class WebSocketSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["websocket"] = "websocket"
    url: str = Field(description="where to listen: ws://0.0.0.0:8765 (wss:// with tls_cert and tls_key)")
    path: str = Field(
        default="/v1/ws/{device_id}",
        description="handshake path; {name} segments become ids, {device_id} unless messages carry one",
    )
    tokens: list[str] = Field(
        min_length=1, description="accepted bearer tokens (Authorization: Bearer <token> on the handshake)"
    )
    timestamp_field: str = Field(default="ts", description="message key holding the event time")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")
    max_message_bytes: int = Field(
        default=256 * 1024, ge=64, description="larger messages close the connection (1009) and are rejected"
    )
    max_messages_per_s: float = Field(
        default=50, gt=0, description="per connection; beyond, the connection is not read (token bucket)"
    )
    burst: int = Field(default=100, ge=1, description="messages a connection may send at once above the rate")
    max_connections: int = Field(default=10_000, ge=1, description="more handshakes get 503")
    ack_timeout_s: float = Field(default=10, gt=0, description="answer an error if not durable within this")
    tls_cert: str | None = Field(default=None, description="PEM certificate (chain) for wss://")
    tls_key: str | None = Field(default=None, description="its PEM private key")

    @field_validator("url")
    @classmethod
    def _ws_listen_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.port is None:
            raise ValueError(f"expected ws://host:port to listen on, got {value!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"put the handshake path in `path`, not in the url {value!r}")
        return value

    @field_validator("tokens")
    @classmethod
    def _strong_tokens(cls, value: list[str]) -> list[str]:
        for index, token in enumerate(value):
            if len(token) < 16:
                raise ValueError(f"token {index} is shorter than 16 characters; use a random secret")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSocketSourceConfig:
        tls = urlsplit(self.url).scheme == "wss"
        if tls != (self.tls_cert is not None and self.tls_key is not None):
            raise ValueError("wss:// needs tls_cert and tls_key, and they are only used with wss://")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "0.0.0.0"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8765
