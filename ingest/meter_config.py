"""The keys every polled meter line shares (DL/T 645, CJ/T 188, M-Bus): a
line (serial server or port) of meters, each with its bus address, polled on
a schedule with retries, a reconnect backoff and an offline rule. Each
protocol's config subclasses these two and adds its own keys and defaults."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.meter_link import LinkEndpoint, parse_link_url


class MeterOnLine(DeviceMetadata):
    """One meter on a line; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Most meter lines run at 2400 baud 8E1 (DL/T 645, CJ/T 188, EN 13757-2)
    # unless the meters were set otherwise; a url's query overrides both.
    DEFAULT_BAUDRATE: ClassVar[int] = 2400
    DEFAULT_PARITY: ClassVar[Literal["N", "E", "O"]] = "E"
    # How an error message names the bus address ("meter 000000000001").
    ADDRESS_LABEL: ClassVar[str] = "meter"

    device_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="readings.device_id; default the address"
    )
    url: str | None = Field(default=None, description="this meter's line, if not the source's url")
    interval_s: float | None = Field(default=None, gt=0, description="poll interval; default the source's")

    @property
    def bus_address(self) -> Hashable:
        """The address the protocol polls the meter by (unique on its line)."""
        raise NotImplementedError

    @property
    def id(self) -> str:
        raise NotImplementedError

    @classmethod
    def endpoint(cls, url: str) -> LinkEndpoint:
        return parse_link_url(url, default_baudrate=cls.DEFAULT_BAUDRATE, default_parity=cls.DEFAULT_PARITY)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            cls.endpoint(value)
        return value


class MeterLineConfig(SourceConfig):
    """Meters polled through a serial server (tcp://) or a serial port (serial://)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    METER: ClassVar[type[MeterOnLine]] = MeterOnLine

    url: str = Field(description="tcp://host:port (a serial server) | serial:///dev/ttyX?baudrate=2400")
    interval_s: float = Field(default=300.0, gt=0, description="default poll interval per meter")
    timeout_s: float = Field(default=2.0, gt=0, le=30, description="time to wait for one reply")
    retries: int = Field(default=1, ge=0, le=5, description="extra tries of an unanswered read")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="reconnect backoff; doubles each time")
    max_backoff_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff")
    offline_after: int = Field(
        default=3, ge=1, le=100, description="unanswered polls in a row after which a meter is offline"
    )
    meters: Sequence[MeterOnLine] = Field(min_length=1, max_length=10_000, description="the meters to poll")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        cls.METER.endpoint(value)
        return value

    @model_validator(mode="after")
    def _unique_meters(self) -> Self:
        seen: set[tuple[str, Hashable]] = set()
        ids: set[str] = set()
        for meter in self.meters:
            key = (self.endpoint_of(meter).key, meter.bus_address)
            if key in seen:
                raise ValueError(f"{meter.ADDRESS_LABEL} {meter.bus_address} twice on {key[0]}")
            if meter.id in ids:
                raise ValueError(f"device_id {meter.id!r} twice")
            seen.add(key)
            ids.add(meter.id)
        return self

    def endpoint_of(self, meter: MeterOnLine) -> LinkEndpoint:
        return self.METER.endpoint(meter.url or self.url)
