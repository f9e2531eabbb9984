"""The keys of a ``type: cjt188`` source: which water, gas and heat meters, on which line."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.cjt188.codec import METER_TYPES, DiOrder
from citylake.ingest.meter_link import LinkEndpoint, parse_link_url

TYPE_CODES = {name.removesuffix("_meter"): code for code, name in METER_TYPES.items()}
MeterTypeName = Literal[
    "cold_water", "hot_water", "drinking_water", "reclaimed_water", "heat", "cooling", "gas"
]


def _endpoint(url: str) -> LinkEndpoint:
    # CJ/T 188 lines usually run at 2400 baud, 8E1 (the M-Bus converters too).
    return parse_link_url(url, default_baudrate=2400, default_parity="E")


class Cjt188Meter(DeviceMetadata):
    """One meter on a line; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_address: str = Field(
        pattern=r"^[0-9]{14}$", description="the 14-digit address on the meter (its CJ/T 188 id)"
    )
    meter_type: MeterTypeName = Field(description="cold_water | hot_water | ... | heat | cooling | gas")
    device_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="readings.device_id; default the address"
    )
    url: str | None = Field(default=None, description="this meter's line, if not the source's url")
    interval_s: float | None = Field(default=None, gt=0, description="poll interval; default the source's")

    @property
    def id(self) -> str:
        return self.device_id or self.meter_address

    @property
    def type_code(self) -> int:
        return TYPE_CODES[self.meter_type]

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            _endpoint(value)
        return value


class Cjt188SourceConfig(SourceConfig):
    """CJ/T 188 meters polled through a serial server or a serial port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["cjt188"] = "cjt188"
    url: str = Field(description="tcp://host:port (a serial server) | serial:///dev/ttyX?baudrate=2400")
    interval_s: float = Field(default=300.0, gt=0, description="default poll interval per meter")
    timeout_s: float = Field(default=2.0, gt=0, le=30, description="time to wait for one reply")
    retries: int = Field(default=1, ge=0, le=5, description="extra tries of an unanswered read")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="reconnect backoff; doubles each time")
    max_backoff_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff")
    offline_after: int = Field(
        default=3, ge=1, le=100, description="unanswered polls in a row after which a meter is offline"
    )
    preamble: bool = Field(default=True, description="send FE FE (wake-up) before each request")
    di_byte_order: DiOrder = Field(
        default="low_first",
        description="low_first sends DI 901F as 1F 90 (the standard); high_first as 90 1F",
    )
    meters: list[Cjt188Meter] = Field(min_length=1, max_length=10_000, description="the meters to poll")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        _endpoint(value)
        return value

    @model_validator(mode="after")
    def _unique_meters(self) -> Cjt188SourceConfig:
        seen: set[tuple[str, str]] = set()
        ids: set[str] = set()
        for meter in self.meters:
            key = (self.endpoint_of(meter).key, meter.meter_address)
            if key in seen:
                raise ValueError(f"meter {meter.meter_address} twice on {key[0]}")
            if meter.id in ids:
                raise ValueError(f"device_id {meter.id!r} twice")
            seen.add(key)
            ids.add(meter.id)
        return self

    def endpoint_of(self, meter: Cjt188Meter) -> LinkEndpoint:
        return _endpoint(meter.url or self.url)
