"""The keys of a ``type: nmea`` source: the talker to connect to and the device it is."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig


class NmeaSourceConfig(SourceConfig, DeviceMetadata):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["nmea"] = "nmea"
    url: str = Field(description="the talker's TCP port: tcp://192.168.1.20:10110")
    device_id: str = Field(
        min_length=1, max_length=128, description="readings.device_id: sentences carry no device identity"
    )
    max_line_bytes: int = Field(
        default=256, ge=82, le=65536, description="longer lines are rejected (NMEA 0183 allows 82 characters)"
    )
    connect_timeout_s: float = Field(default=5, gt=0, description="give up a connection attempt after this")
    idle_timeout_s: float = Field(
        default=30, gt=0, description="reconnect when the talker is silent this long"
    )
    backoff_s: float = Field(default=0.5, gt=0, description="first wait before reconnecting")
    max_backoff_s: float = Field(default=30, gt=0, description="longest wait between reconnects")

    @field_validator("url")
    @classmethod
    def _tcp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ValueError(f"expected tcp://host:port of an NMEA talker, got {value!r}")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> NmeaSourceConfig:
        if self.backoff_s > self.max_backoff_s:
            raise ValueError("backoff_s must not exceed max_backoff_s")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 10110
