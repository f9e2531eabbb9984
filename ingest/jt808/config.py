"""The keys of a ``type: jt808`` source: where terminals connect, auth, bounds."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from citylake.config import DeviceMetadata, SourceConfig


class JT808Terminal(DeviceMetadata):
    """A terminal the config names: landed in `devices` at start."""

    phone: str = Field(pattern=r"^[0-9]{1,20}$", description="terminal phone number (devices.device_id)")
    plate: str | None = Field(default=None, max_length=32, description="licence plate")


class JT808SourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["jt808"] = "jt808"
    url: str = Field(description="where terminals connect: tcp://0.0.0.0:7611")
    auth_secret: str = Field(
        min_length=16,
        description="secret the auth codes handed out at registration are derived from (HMAC of the phone)",
    )
    require_auth: bool = Field(
        default=True, description="refuse locations and heartbeats before 0x0102 authentication"
    )
    terminals: list[JT808Terminal] = Field(default_factory=list, description="terminals named in advance")
    accept_unknown: bool = Field(
        default=True, description="register phones not in `terminals` (false: registration refused)"
    )
    max_connections: int = Field(default=20_000, ge=1, description="more connections are refused")
    max_frame_bytes: int = Field(
        default=2100, ge=64, description="longer frames (escaped, between the 7e flags) are rejected"
    )
    idle_timeout_s: float = Field(
        default=180, gt=0, description="close a connection silent this long (three missed 60-s heartbeats)"
    )
    max_unacked: int = Field(
        default=64, ge=1, description="messages of one connection waiting for landing; beyond, it is not read"
    )
    max_errors_per_connection: int = Field(
        default=100, ge=1, description="drop a connection after this many rejected frames in a row"
    )
    max_devices: int = Field(default=100_000, ge=1, description="phones remembered for `devices` rows")

    @field_validator("url")
    @classmethod
    def _tcp_listen_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ValueError(f"expected tcp://host:port to listen on, got {value!r}")
        return value

    @property
    def listen_host(self) -> str:
        return urlsplit(self.url).hostname or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return urlsplit(self.url).port or 0
