"""The keys every TCP server adapter shares (HJ 212 stations, JT/T 808
terminals): where devices connect and the bounds that keep one process
standing with tens of thousands of them. Each protocol's config subclasses
this and adds its own keys; a default that differs is declared again there."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from citylake.config import SourceConfig


class TcpListenConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="where devices connect: tcp://0.0.0.0:<port>")
    max_connections: int = Field(default=20_000, ge=1, description="more connections are refused")
    idle_timeout_s: float = Field(default=600, gt=0, description="close a connection silent this long")
    max_unacked: int = Field(
        default=64, ge=1, description="messages of one connection waiting for landing; beyond, it is not read"
    )
    max_errors_per_connection: int = Field(
        default=100, ge=1, description="drop a connection after this many rejected frames in a row"
    )
    max_devices: int = Field(default=100_000, ge=1, description="devices remembered for `devices` rows")

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
