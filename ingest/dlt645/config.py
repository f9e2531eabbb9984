"""The keys of a ``type: dlt645`` source: which meters, on which line, which DIs."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.dlt645.codec import DATA_ITEMS, DATA_ITEMS_BY_METRIC, DataItem, di_text
from citylake.ingest.meter_link import LinkEndpoint, parse_link_url

DEFAULT_DATA_ITEMS = (
    "combined_active_energy", "voltage_a", "current_a", "active_power", "power_factor", "frequency",
)  # fmt: skip
# DL/T 645 meters talk 2400 baud 8E1 unless configured otherwise.
DEFAULT_BAUDRATE = 2400


def resolve_data_item(spec: str) -> DataItem:
    """A metric name (``voltage_a``) or a DI as the standard writes it (``02 01 01 00``, ``02010100``)."""
    if spec in DATA_ITEMS_BY_METRIC:
        return DATA_ITEMS_BY_METRIC[spec]
    digits = spec.replace(" ", "")
    if len(digits) == 8:
        try:
            di = int(digits, 16)
        except ValueError:
            di = -1
        if di in DATA_ITEMS:
            return DATA_ITEMS[di]
    known = ", ".join(f"{i.metric} ({di_text(i.di)})" for i in DATA_ITEMS.values())
    raise ValueError(f"unknown data item {spec!r}; known: {known}")


def _endpoint(url: str) -> LinkEndpoint:
    return parse_link_url(url, default_baudrate=DEFAULT_BAUDRATE, default_parity="E")


class Dlt645Meter(DeviceMetadata):
    """One meter on a line; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_address: str = Field(
        pattern=r"^[0-9]{12}$", description="the 12-digit address printed on the meter (its DL/T 645 id)"
    )
    device_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="readings.device_id; default the address"
    )
    url: str | None = Field(default=None, description="this meter's line, if not the source's url")
    interval_s: float | None = Field(default=None, gt=0, description="poll interval; default the source's")
    data_items: list[str] | None = Field(
        default=None, min_length=1, max_length=64, description="DIs to read; default the source's"
    )

    @property
    def id(self) -> str:
        return self.device_id or self.meter_address

    @field_validator("data_items")
    @classmethod
    def _known_items(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for spec in value:
                resolve_data_item(spec)
        return value

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            _endpoint(value)
        return value


class Dlt645SourceConfig(SourceConfig):
    """DL/T 645-2007 meters polled through a serial server or a serial port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["dlt645"] = "dlt645"
    url: str = Field(
        description="tcp://host:port (a transparent serial server) | serial:///dev/ttyX?baudrate=2400"
    )
    interval_s: float = Field(default=60.0, gt=0, description="default poll interval per meter")
    timeout_s: float = Field(default=1.5, gt=0, le=30, description="time to wait for one reply")
    retries: int = Field(default=1, ge=0, le=5, description="extra tries of an unanswered read")
    backoff_s: float = Field(
        default=0.5, ge=0, le=60, description="wait before a reconnect; doubles each time"
    )
    max_backoff_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff")
    offline_after: int = Field(
        default=3, ge=1, le=100, description="unanswered polls in a row after which a meter is offline"
    )
    preamble: bool = Field(default=True, description="send the FE FE FE FE wake-up bytes before each request")
    data_items: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DATA_ITEMS), min_length=1, max_length=64,
        description="DIs read from every meter: metric names or DIs (02 01 01 00)",
    )  # fmt: skip
    meters: list[Dlt645Meter] = Field(min_length=1, max_length=10_000, description="the meters to poll")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        _endpoint(value)
        return value

    @field_validator("data_items")
    @classmethod
    def _known_items(cls, value: list[str]) -> list[str]:
        for spec in value:
            resolve_data_item(spec)
        return value

    @model_validator(mode="after")
    def _unique_meters(self) -> Dlt645SourceConfig:
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

    def endpoint_of(self, meter: Dlt645Meter) -> LinkEndpoint:
        return _endpoint(meter.url or self.url)

    def items_of(self, meter: Dlt645Meter) -> list[DataItem]:
        return [resolve_data_item(s) for s in (meter.data_items or self.data_items)]
