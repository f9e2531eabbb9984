"""The keys of a ``type: hj212`` source: where stations connect, and its bounds."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from citylake.config import DeviceMetadata
from citylake.ingest.hj212.codec import MAX_DATA_LENGTH
from citylake.ingest.tcp_listen_config import TcpListenConfig


class HJ212Station(DeviceMetadata):
    """A station the config names: landed in `devices` at start."""

    mn: str = Field(pattern=r"^[0-9A-Za-z]{1,24}$", description="the station's MN code (devices.device_id)")
    password: str | None = Field(default=None, max_length=9, description="its PW; default the source's")


class HJ212Code(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1, max_length=100, description="readings.metric for the code")
    unit: str | None = Field(default=None, max_length=32, description="unit of its values")
    cou_unit: str | None = Field(default=None, max_length=32, description="unit of its -Cou amounts")


class HJ212SourceConfig(TcpListenConfig):
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
    max_data_length: int = Field(
        default=4096, ge=64, le=MAX_DATA_LENGTH, description="longer data segments are rejected"
    )
    max_devices: int = Field(default=100_000, ge=1, description="MN codes remembered for `devices` rows")

    @property
    def utc_offset(self) -> dt.timezone:
        return dt.timezone(dt.timedelta(minutes=self.utc_offset_minutes))
