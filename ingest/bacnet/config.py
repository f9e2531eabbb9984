"""The keys of a ``type: bacnet`` source."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.bacnet.codec import MAX_INSTANCE, parse_object_id

DEFAULT_PORT = 47808  # 0xBAC0, BACnet/IP's registered port


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise ValueError(
            f"{what} {text!r}: expected <IPv4 address>:<port>, e.g. 192.168.1.20:47808"
        ) from None
    if not 0 < number < 65536:
        raise ValueError(f"{what} {text!r}: port {number} is out of range")
    return host, number


class BacnetObject(BaseModel):
    """One object whose present-value becomes a reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = Field(description="<object-type>,<instance>, e.g. analog-input,1 or multi-state-value,2")
    metric: str = Field(min_length=1, description="readings.metric")
    unit: str | None = Field(
        default=None, description="readings.unit; default: the object's own units property (analog objects)"
    )
    cov: bool = Field(
        default=False, description="also subscribe to change-of-value notifications, between polls"
    )

    @field_validator("object")
    @classmethod
    def _object_syntax(cls, value: str) -> str:
        object_type, instance = parse_object_id(value)
        return f"{object_type},{instance}"

    @property
    def object_type(self) -> str:
        return parse_object_id(self.object)[0]


class BacnetDevice(BaseModel):
    """One BACnet device (a controller) and the objects read from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_instance: int = Field(ge=0, le=MAX_INSTANCE, description="the device object's instance number")
    address: str | None = Field(
        default=None,
        description="<IPv4>:<port> of the device; default: found by a Who-Is broadcast for its instance",
    )
    device_id: str | None = Field(
        default=None, min_length=1, description="readings.device_id; default bacnet-<device_instance>"
    )
    objects: list[BacnetObject] = Field(min_length=1, description="what to read")
    interval_s: float | None = Field(default=None, gt=0, description="overrides the source's interval_s")

    @field_validator("address")
    @classmethod
    def _address_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            _host_port(value, "address")
        return value

    @property
    def id(self) -> str:
        return self.device_id or f"bacnet-{self.device_instance}"

    @model_validator(mode="after")
    def _unique(self) -> BacnetDevice:
        for key in ("object", "metric"):
            values = [getattr(o, key) for o in self.objects]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"device {self.device_instance}: {key} {', '.join(twice)} configured twice")
        return self


class BacnetSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bacnet"] = "bacnet"
    url: str = Field(
        description="where citylake's own BACnet/IP device binds: bacnet://<IPv4>:<port> "
        f"(port {DEFAULT_PORT} unless given)"
    )
    network_prefix: int | None = Field(
        default=None,
        ge=8,
        le=32,
        description="the bound address's prefix length; needed for Who-Is broadcasts",
    )
    device_instance: int = Field(
        default=4_194_000, ge=0, le=MAX_INSTANCE, description="citylake's own device instance on the network"
    )
    devices: list[BacnetDevice] = Field(min_length=1, description="the devices to read")
    metadata: dict[str, DeviceMetadata] = Field(
        default_factory=dict,
        description="device_id -> name, device_type, district, civil_code, address, longitude, latitude",
    )
    interval_s: float = Field(default=10, gt=0, description="read every device's objects this often")
    timeout_s: float = Field(default=3, gt=0, description="wait for one answer (I-Am, ReadPropertyMultiple)")
    offline_after: int = Field(
        default=3, ge=1, description="a device is offline after this many unanswered polls in a row"
    )
    cov_lifetime_s: int = Field(
        default=300, ge=10, description="COV subscriptions last this long and are renewed at half of it"
    )

    @field_validator("url")
    @classmethod
    def _bacnet_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "bacnet":
            raise ValueError(f"expected bacnet://<IPv4>:<port>, got {value!r}")
        _host_port(f"{parts.hostname}:{parts.port or DEFAULT_PORT}", "url")
        return value

    @property
    def bind(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or DEFAULT_PORT

    @model_validator(mode="after")
    def _consistent(self) -> BacnetSourceConfig:
        ids = [d.id for d in self.devices]
        instances = [d.device_instance for d in self.devices]
        for what, values in (("device_id", ids), ("device_instance", [str(i) for i in instances])):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{what} {', '.join(twice)} configured twice")
        if self.device_instance in instances:
            raise ValueError(f"device_instance {self.device_instance} is citylake's own; pick another")
        unknown = sorted(set(self.metadata) - set(ids))
        if unknown:
            raise ValueError(f"metadata names {', '.join(unknown)}, which no device has as device_id")
        if self.network_prefix is None and any(d.address is None for d in self.devices):
            raise ValueError("a device without address is found by Who-Is broadcast: set network_prefix")
        return self
