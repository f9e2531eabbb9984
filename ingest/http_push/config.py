"""The keys of a ``type: http_push`` source."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import SourceConfig

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class TokenGrant(BaseModel):
    """A bearer token that may push only for some device ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(description="the bearer token (a random secret of 16+ characters)")
    devices: list[str] = Field(
        min_length=1,
        description="device ids it may push for: exact ids or shell patterns (gauge-*, plant-?/flow)",
    )


class HttpPushSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http_push"] = "http_push"
    url: str = Field(description="where to listen, http://0.0.0.0:8080 (https:// with tls_cert and tls_key)")
    path: str = Field(
        default="/v1/push/{device_id}",
        description="request path; {name} segments become ids, {device_id} unless payloads carry one",
    )
    tokens: list[str | TokenGrant] = Field(
        min_length=1,
        description="accepted bearer tokens (Authorization: Bearer <token>), e.g. one per gateway; "
        "{token, devices: [patterns]} binds one to the device ids it may push for (403 for others)",
    )
    timestamp_field: str = Field(default="ts", description="payload key holding the event time")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")
    max_body_bytes: int = Field(default=1024 * 1024, ge=64, description="larger bodies get 413 and a reject")
    ack_timeout_s: float = Field(
        default=10, gt=0, description="answer 503 if the readings are not durable within this time"
    )
    tls_cert: str | None = Field(default=None, description="PEM certificate (chain) for https://")
    tls_key: str | None = Field(default=None, description="its PEM private key")

    @field_validator("url")
    @classmethod
    def _http_listen_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"expected http://host:port to listen on, got {value!r}")
        if not parts.hostname or parts.port is None:
            raise ValueError(f"give the host and port to listen on, e.g. http://0.0.0.0:8080, got {value!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"put the request path in `path`, not in the url {value!r}")
        return value

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path {value!r} must start with /")
        names: list[str] = []
        for segment in value.split("/"):
            match = _PLACEHOLDER.fullmatch(segment)
            if match is None and ("{" in segment or "}" in segment):
                raise ValueError(f"path {value!r}: segment {segment!r} must be a whole {{name}}")
            if match is not None:
                names.append(match.group(1))
        if len(set(names)) != len(names):
            raise ValueError(f"path {value!r}: a placeholder is used twice")
        return value

    @field_validator("tokens")
    @classmethod
    def _strong_tokens(cls, value: list[str | TokenGrant]) -> list[str | TokenGrant]:
        for index, grant in enumerate(value):
            token = grant if isinstance(grant, str) else grant.token
            if len(token) < 16:
                raise ValueError(f"token {index} is shorter than 16 characters; use a random secret")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpPushSourceConfig:
        tls = urlsplit(self.url).scheme == "https"
        if tls != (self.tls_cert is not None and self.tls_key is not None):
            raise ValueError("https:// needs tls_cert and tls_key, and they are only used with https://")
        return self
