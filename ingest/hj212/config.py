"""The keys of a ``type: hj212`` source: where stations connect, and its bounds."""

from __future__ import annotations

import datetime as dt
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.hj212.codec import MAX_DATA_LENGTH


class HJ212Station(DeviceMetadata):
    """A station the config names: landed in `devices` at start."""

    mn: str = Field(pattern=r"^[0-9A-Za-z]{1,24}$", description="the station's MN code (devices.device_id)")
    password: str | None = Field(default=None, max_length=9, description="its PW; default the source's")


class HJ212Code(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1, max_length=100, description="readings.metric for the code")
    unit: str | None = Field(default=None, max_length=32, description="unit of its values")
    cou_unit: str | None = Field(default=None, max_length=32, description="unit of its -Cou amounts")


class HJ212SourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["hj212"] = "hj212"
    url: str = Field(description="where stations connect: tcp://0.0.0.0:6000")
    password: str | None = Field(
        default=None, max_length=9, description="PW every station must send; none: PW is not checked"
    )
    stations: list[HJ212Station] = Field(default_factory=list, description="stations named in advance")
    accept_unknown: bool = Field(
        default=True, description="take packets from MN codes not in `stations` (false: reject them)"
    )
    codes: dict[str, HJ212Code] = Field(
        default_factory=dict, description="pollutant code -> metric and unit, over the built-in table"
    )
    utc_offset_minutes: int = Field(
        default=480, ge=-720, le=840, description="stations' DataTime is local time: UTC+8 in China"
    )
    max_connections: int = Field(default=20_000, ge=1, description="more connections are refused")
    max_data_length: int = Field(
        default=4096, ge=64, le=MAX_DATA_LENGTH, description="longer data segments are rejected"
    )
    idle_timeout_s: float = Field(default=600, gt=0, description="close a connection silent this long")
    max_unacked: int = Field(
        default=64, ge=1, description="packets of one connection waiting for landing; beyond, it is not read"
    )
    max_errors_per_connection: int = Field(
        default=100, ge=1, description="drop a connection after this many rejected frames in a row"
    )
    max_devices: int = Field(default=100_000, ge=1, description="MN codes remembered for `devices` rows")

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

    @property
    def utc_offset(self) -> dt.timezone:
        return dt.timezone(dt.timedelta(minutes=self.utc_offset_minutes))
