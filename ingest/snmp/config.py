"""The keys of a ``type: snmp`` source (polling)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.snmp.auth import SnmpAuth

# Numeric dotted form only: MIB names would need MIB files at run time, and a
# config that works on one edge node must work on every other.
_OID = re.compile(r"^\.?[0-2](\.(0|[1-9][0-9]{0,9}))+$")


def check_oid(value: str) -> str:
    """``value`` without a leading dot if it is a numeric OID; ``ValueError`` otherwise."""
    if not _OID.match(value):
        raise ValueError(f"OID {value!r}: give it in numeric dotted form, e.g. 1.3.6.1.2.1.33.1.2.4.0")
    return value.lstrip(".")


class SnmpObject(BaseModel):
    """One scalar object (GET) or one table column (walked with GETBULK)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    oid: str = Field(description="numeric OID; a scalar ends in .0, a column is walked with walk: true")
    metric: str = Field(min_length=1, max_length=100, description="readings.metric (walked: metric.<index>)")
    unit: str | None = Field(default=None, description="readings.unit")
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = 0.0
    walk: bool = Field(default=False, description="walk the column under oid; one reading per row index")
    value_type: Literal["auto", "number", "text"] = Field(
        default="auto",
        description="auto: SNMP numbers are numbers, strings text; number: parse a DisplayString as a "
        "number (UPS firmwares that report '230.5'); text: keep any value as text",
    )

    @field_validator("oid")
    @classmethod
    def _numeric(cls, value: str) -> str:
        return check_oid(value)


class SnmpDevice(DeviceMetadata):
    """One agent to poll."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1, description="readings.device_id")
    url: str | None = Field(default=None, description="udp://host:port of the agent; default: the source url")
    auth: SnmpAuth | None = Field(default=None, description="overrides the source's auth")
    objects: list[SnmpObject] = Field(min_length=1, description="what to read")
    interval_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)


def parse_udp_url(value: str) -> tuple[str, int]:
    parts = urlsplit(value)
    if parts.scheme != "udp" or not parts.hostname:
        raise ValueError(f"expected udp://host:port, got {value!r}")
    return parts.hostname, parts.port or 161


class SnmpSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["snmp"] = "snmp"
    url: str = Field(description="udp://host:port of the agent (port 161 by default); devices may override")
    auth: SnmpAuth = Field(description="default credentials: {version: 2c, community} or {version: 3, usm}")
    devices: list[SnmpDevice] = Field(min_length=1, description="the agents to poll")
    interval_s: float = Field(default=30, gt=0, description="default poll interval of each device")
    timeout_s: float = Field(default=2, gt=0, description="default wait for one answer")
    retries: int = Field(default=1, ge=0, le=10, description="default extra tries after no answer")
    max_oids_per_request: int = Field(
        default=20, ge=1, le=100, description="scalars per GET; agents answer tooBig to large requests"
    )
    max_repetitions: int = Field(default=25, ge=1, le=100, description="rows per GETBULK of a walk")
    max_walk_rows: int = Field(
        default=1000, ge=1, description="stop a walk after this many rows (a switch with 10k ports)"
    )

    @field_validator("url")
    @classmethod
    def _udp(cls, value: str) -> str:
        parse_udp_url(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SnmpSourceConfig:
        seen_devices: set[str] = set()
        for device in self.devices:
            if device.device_id in seen_devices:
                raise ValueError(f"device {device.device_id} is configured twice")
            seen_devices.add(device.device_id)
            if device.url is not None:
                parse_udp_url(device.url)
            metrics: set[str] = set()
            for obj in device.objects:
                if obj.metric in metrics:
                    raise ValueError(f"device {device.device_id} metric {obj.metric} is configured twice")
                metrics.add(obj.metric)
        return self

    def endpoint_of(self, device: SnmpDevice) -> tuple[str, int]:
        return parse_udp_url(device.url or self.url)

    def auth_of(self, device: SnmpDevice) -> SnmpAuth:
        return device.auth or self.auth
