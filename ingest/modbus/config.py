"""The keys of a ``type: modbus`` source: *what to read*, validated once at start.

A source is one connection default (``url``) and a list of devices; a device
is a slave id on an endpoint and a register map, given inline (``fields``) or
by naming a profile (``profile``, a YAML file under ``ingest/profiles/``).
How to read it (request planning, retries) lives in codec.py and adapter.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import AliasChoices, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.modbus.codec import BIT_TYPES, MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ
from citylake.ingest.modbus.fields import RegisterField
from citylake.ingest.modbus.profiles import load_profile

Transport = Literal["tcp", "rtu+tcp", "serial"]
Parity = Literal["N", "E", "O"]
_SERIAL_KEYS = {"baudrate", "parity", "stopbits", "bytesize"}
_PARITIES: dict[str, Parity] = {"N": "N", "E": "E", "O": "O"}


@dataclass(frozen=True)
class ModbusEndpoint:
    """Where a device is reached. Devices with equal ``key`` share one client."""

    transport: Transport
    host: str = ""
    port: int = 502
    serial_port: str = ""
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def key(self) -> str:
        """A normalised URL: ``tcp://127.0.0.1:502``, ``serial:///dev/ttyS0?9600-8N1``."""
        if self.transport == "serial":
            return f"serial://{self.serial_port}?{self.baudrate}-{self.bytesize}{self.parity}{self.stopbits}"
        return f"{self.transport}://{self.host}:{self.port}"


def parse_endpoint(url: str) -> ModbusEndpoint:
    """``tcp://host:port`` (Modbus TCP), ``rtu+tcp://host:port`` (RTU frames over
    TCP, e.g. a serial-to-Ethernet converter) or
    ``serial:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=1&bytesize=8``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "rtu+tcp"):
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}; expected {scheme}://host:port")
        if parts.query or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a {scheme}:// url is host:port only")
        try:
            port = parts.port or 502
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number 1..65535") from None
        return ModbusEndpoint("tcp" if scheme == "tcp" else "rtu+tcp", host=parts.hostname, port=port)
    if scheme == "serial":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{url!r}: expected serial:///dev/ttyX?baudrate=9600 (three slashes)")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - _SERIAL_KEYS)
        if unknown:
            raise ValueError(f"{url!r}: unknown serial option(s) {unknown}; known: {sorted(_SERIAL_KEYS)}")
        return _serial_endpoint(url, parts.path, query)
    raise ValueError(
        f"expected tcp://host:port, rtu+tcp://host:port or serial:///dev/ttyX?baudrate=9600, got {url!r}"
    )


def _serial_endpoint(url: str, path: str, query: dict[str, str]) -> ModbusEndpoint:
    try:
        baudrate = int(query.get("baudrate", "9600"))
        stopbits = int(query.get("stopbits", "1"))
        bytesize = int(query.get("bytesize", "8"))
    except ValueError:
        raise ValueError(f"{url!r}: baudrate, stopbits and bytesize must be integers") from None
    parity = _PARITIES.get(query.get("parity", "N").upper())
    if baudrate <= 0:
        raise ValueError(f"{url!r}: baudrate must be positive")
    if parity is None:
        raise ValueError(f"{url!r}: parity must be N, E or O, got {query['parity']!r}")
    if stopbits not in (1, 2) or bytesize not in (7, 8):
        raise ValueError(f"{url!r}: stopbits must be 1 or 2 and bytesize 7 or 8")
    return ModbusEndpoint(
        "serial", serial_port=path, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize
    )


class ModbusDevice(DeviceMetadata):
    """One slave: its id on the endpoint, its schedule and its register map;
    ``name``, ``device_type``, ``district``, ``civil_code``, ``address``,
    ``longitude`` and ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    device_id: str = Field(min_length=1, max_length=128, description="becomes readings.device_id")
    slave_id: int = Field(
        default=1, ge=0, le=255, validation_alias=AliasChoices("slave_id", "unit_id"),
        description="Modbus unit id (also accepted as unit_id)",
    )  # fmt: skip
    url: str | None = Field(default=None, description="this device's endpoint, if not the source's url")
    interval_s: float | None = Field(default=None, gt=0, description="poll interval; default the source's")
    timeout_s: float | None = Field(
        default=None, gt=0, le=60, description="per request; default the source's"
    )
    retries: int | None = Field(
        default=None, ge=0, le=10, description="extra tries of a request that got no answer"
    )
    backoff_s: float | None = Field(
        default=None, ge=0, le=60, description="wait before a retry; doubles each time"
    )
    fields: list[RegisterField] | None = Field(default=None, description="inline register map")
    profile: str | None = Field(
        default=None, description="register map from ingest/profiles/<profile>.yaml, or a path to a YAML file"
    )
    _profile_fields: tuple[RegisterField, ...] = PrivateAttr(default=())

    @field_validator("url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            parse_endpoint(value)
        return value

    @model_validator(mode="after")
    def _one_register_map(self) -> ModbusDevice:
        if (self.fields is None) == (self.profile is None):
            raise ValueError(f"device {self.device_id!r}: give exactly one of fields (inline) or profile")
        if self.fields is not None and not self.fields:
            raise ValueError(f"device {self.device_id!r}: fields is empty")
        if self.profile is not None:
            self._profile_fields = tuple(load_profile(self.profile).fields)
        names = [f.name for f in self.register_fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"device {self.device_id!r}: field names used twice: {', '.join(duplicates)}")
        return self

    @property
    def register_fields(self) -> tuple[RegisterField, ...]:
        """The register map, inline or from the profile."""
        return tuple(self.fields) if self.fields is not None else self._profile_fields


class ModbusSourceConfig(SourceConfig):
    """A Modbus source: devices polled over TCP, RTU-over-TCP or a serial line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["modbus"] = "modbus"
    url: str = Field(description="tcp://host:port | rtu+tcp://host:port | serial:///dev/ttyX?baudrate=9600")
    interval_s: float = Field(default=10.0, gt=0, description="default poll interval per device")
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="default time to wait for one answer")
    retries: int = Field(default=1, ge=0, le=10, description="default extra tries of an unanswered request")
    backoff_s: float = Field(
        default=0.5, ge=0, le=60, description="default wait before a retry or reconnect; doubles each time"
    )
    max_backoff_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff")
    devices: list[ModbusDevice] = Field(min_length=1, description="the slaves to poll")
    max_gap_registers: int = Field(
        default=10,
        ge=0,
        le=MAX_REGISTERS_PER_READ,
        description="merge fields at most this many addresses apart",
    )
    max_registers_per_request: int = Field(
        default=MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ, description="protocol limit 125"
    )
    max_bits_per_request: int = Field(
        default=MAX_BITS_PER_READ,
        ge=1,
        le=MAX_BITS_PER_READ,
        description="protocol limit 2000 (coils, discrete)",
    )
    one_request_per_field: bool = Field(
        default=False,
        description="workaround: no merging, for devices that refuse reads over unmapped addresses",
    )
    pause_between_requests_s: float = Field(
        default=0.0, ge=0, le=10, description="workaround: quiet time between requests on one endpoint"
    )

    @field_validator("url")
    @classmethod
    def _modbus_scheme(cls, value: str) -> str:
        parse_endpoint(value)
        return value

    @model_validator(mode="after")
    def _devices_fit(self) -> ModbusSourceConfig:
        ids = [d.device_id for d in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"device_id used twice: {', '.join(duplicates)}")
        for device in self.devices:
            for f in device.register_fields:
                limit = (
                    self.max_bits_per_request
                    if f.register_type in BIT_TYPES
                    else self.max_registers_per_request
                )
                if f.width > limit:
                    raise ValueError(
                        f"device {device.device_id!r} field {f.name!r} spans {f.width} registers, "
                        f"more than max_registers_per_request {limit}"
                    )
        return self

    def endpoint_of(self, device: ModbusDevice) -> ModbusEndpoint:
        return parse_endpoint(device.url or self.url)
